import t from 'tap'
import type { DispatchPolicy } from '../src/services/dispatch/claim.ts'
import { Dispatcher } from '../src/worker/dispatcher.ts'
import { createProviderClient } from '../src/provider/client.ts'
import { Reconciler } from '../src/services/dispatch/reconcile.ts'
import { reconcileAllNow } from '../src/store/transitions.ts'
import { listen } from '../src/platform/serve.ts'
import { silentLogger, type Logger } from '../src/platform/log.ts'
import { readStatus } from '../src/store/status.ts'
import { renderBoard } from '../src/http/status-page.ts'
import { inFlightCall } from './support/callbacks.ts'
import { newPhone } from './support/factory.ts'
import { callRow, inFlightCount } from './support/inspect.ts'
import { startFakeProvider, type Answer } from './support/fake-provider.ts'
import { createHarness, startSimulator, WEBHOOK_SECRET, type Harness, registerWorker } from './support/harness.ts'
import { waitFor } from './support/processes.ts'

// A dialed call whose final callback never comes is looked up at the provider instead of
// holding its slot until CALL_TIMEOUT_SECONDS: a final answer is applied as a callback would
// be, a live one keeps the call waiting, and a provider without the endpoint leaves it to the
// timeout.

const policy: DispatchPolicy = {
  maxConcurrentCalls: 30,
  maxAttempts: 3,
  retryBaseSeconds: 1,
  retryMaxSeconds: 1,
  callTimeoutSeconds: 600,
  leaseMs: 10_000,
  reconcileAfterSeconds: 60,
}

async function reconcilerAgainst(t: { teardown(fn: () => Promise<void> | void): void }, h: Harness, answer: (path: string) => Answer) {
  const fake = await startFakeProvider(t, (req) => answer(String(req.url)))
  const provider = createProviderClient({ baseUrl: fake.url, timeoutMs: 2_000, publicBaseUrl: 'http://127.0.0.1:9', callbackSecret: WEBHOOK_SECRET })
  return { fake, reconciler: new Reconciler({ sql: h.sql, queue: h.queue, provider, policy, log: silentLogger, ratePerSecond: 50 }) }
}

/** A dialed call whose look-up is due now. */
async function dueCall(h: Harness, worker: number, providerCallId: string) {
  const call = await inFlightCall(h, worker, newPhone(), providerCallId)
  await h.sql`UPDATE calls SET reconcile_at = now() - interval '1 second' WHERE id = ${call.id}`
  return call
}

t.test('a final answer is applied like a callback, recorded with its source, and frees the slot', async (t) => {
  const h = await createHarness(t)
  const worker = await registerWorker(h)
  const call = await dueCall(h, worker, 'prov-r1')
  const { fake, reconciler } = await reconcilerAgainst(t, h, () => ({
    status: 200,
    body: { callId: 'prov-r1', status: 'COMPLETED', durationSec: 48, completedAt: '2026-01-02T03:04:05Z' },
  }))
  const inFlight = await inFlightCount(h)
  t.same(await reconciler.runOnce(), { asked: 1, final: 1, live: 0 })
  t.equal(fake.received[0]!.url, '/api/v1/calls/prov-r1', 'asked by the provider’s id')
  const row = await callRow(h, call.id)
  t.equal(row.status, 'COMPLETED')
  t.equal(row.duration_sec, 48)
  t.equal(row.ended_at?.toISOString(), '2026-01-02T03:04:05.000Z')
  t.equal(await inFlightCount(h), inFlight - 1)
  const [record] = await h.sql`SELECT source, verdict, dial, provider_status, webhook_id FROM callbacks WHERE call_id = ${call.id}`
  t.same(record, { source: 'reconcile', verdict: 'applied', dial: 1, provider_status: 'COMPLETED', webhook_id: null })
  t.same(await reconciler.runOnce(), { asked: 0, final: 0, live: 0 }, 'nothing left to ask')
})

t.test('a live answer keeps the call waiting and pushes its timeout back', async (t) => {
  const h = await createHarness(t)
  const worker = await registerWorker(h)
  const call = await dueCall(h, worker, 'prov-r2')
  await h.sql`UPDATE calls SET timeout_at = now() + interval '5 seconds' WHERE id = ${call.id}`
  const { reconciler } = await reconcilerAgainst(t, h, () => ({ status: 200, body: { callId: 'prov-r2', status: 'RINGING' } }))
  t.same(await reconciler.runOnce(), { asked: 1, final: 0, live: 1 })
  t.equal((await callRow(h, call.id)).status, 'IN_PROGRESS')
  const [left] = await h.sql<{ s: number }[]>`SELECT extract(epoch FROM timeout_at - now())::int AS s FROM calls WHERE id = ${call.id}`
  t.ok(left!.s > 590, `the provider says it is live: CALL_TIMEOUT_SECONDS from now (${left!.s} s left)`)
  const [next] = await h.sql<{ s: number }[]>`SELECT extract(epoch FROM reconcile_at - now())::int AS s FROM calls WHERE id = ${call.id}`
  t.ok(next!.s > 55 && next!.s <= 60, 'asked again RECONCILE_AFTER_SECONDS later')
})

t.test('a provider without the endpoint (404/405/501): no more look-ups, the timeout decides', async (t) => {
  const h = await createHarness(t)
  const worker = await registerWorker(h)
  for (const status of [404, 405, 501]) {
    const call = await dueCall(h, worker, `prov-none-${status}`)
    const { reconciler } = await reconcilerAgainst(t, h, () => ({ status, body: 'nope' }))
    await reconciler.runOnce()
    const row = await callRow(h, call.id)
    t.equal(row.status, 'IN_PROGRESS', `${status}: still waiting`)
    t.equal(row.reconcile_at, null, `${status}: not asked again`)
    t.ok(row.timeout_at, `${status}: its timeout stands`)
  }
  // Said where an operator looks: the status (and its page) and the log name how many and until when.
  const status = await readStatus(h.sql, 30)
  const until = (await h.sql<{ until: Date }[]>`SELECT max(timeout_at) AS until FROM calls WHERE status = 'IN_PROGRESS'`)[0]!.until
  t.same(status.heldUntilTimeout, { calls: 3, until }, 'three calls held until the last one times out')
  t.match(renderBoard(status), /3 calls hold slots until \d\d:\d\d UTC \(CALL_TIMEOUT_SECONDS\)/)
  const lines: string[] = []
  const log = { ...silentLogger, warn: (msg: string) => void lines.push(msg), child: () => log } as unknown as Logger
  const call = await dueCall(h, worker, 'prov-none-again')
  const fake = await startFakeProvider(t, () => ({ status: 404, body: 'nope' }))
  const provider = createProviderClient({ baseUrl: fake.url, timeoutMs: 2_000, publicBaseUrl: 'http://127.0.0.1:9', callbackSecret: WEBHOOK_SECRET })
  await new Reconciler({ sql: h.sql, queue: h.queue, provider, policy, log, ratePerSecond: 50 }).runOnce()
  t.equal((await callRow(h, call.id)).reconcile_at, null)
  t.ok(lines.some((l) => /^4 calls hold slots until \d\d:\d\d UTC \(CALL_TIMEOUT_SECONDS\)/.test(l)), lines.join(' | '))
})

t.test('a failed look-up is asked again later; a 429 pauses look-ups for its Retry-After', async (t) => {
  const h = await createHarness(t)
  const worker = await registerWorker(h)
  const calls = []
  for (let i = 0; i < 8; i++) calls.push(await dueCall(h, worker, `prov-r3-${i}`))
  const { fake, reconciler } = await reconcilerAgainst(t, h, () => ({ status: 429, body: 'slow down', headers: { 'retry-after': '30' } }))
  await reconciler.runOnce()
  const asked = fake.received.length
  t.ok(asked >= 1 && asked <= 4, `after the 429 the round asks no more than the look-ups already under way (${asked} of 8)`)
  for (const call of calls) t.equal((await callRow(h, call.id)).status, 'IN_PROGRESS')
  await h.sql`UPDATE calls SET reconcile_at = now() - interval '1 second'`
  reconciler.kick(new AbortController().signal)
  await reconciler.settled()
  t.equal(fake.received.length, asked, 'and the next round waits for Retry-After')
})

t.test('a process start asks about every dialed call in flight at once', async (t) => {
  const h = await createHarness(t)
  const worker = await registerWorker(h)
  const call = await inFlightCall(h, worker, newPhone(), 'prov-r5')
  const undialed = await inFlightCall(h, worker, newPhone(), null)
  t.equal(await reconcileAllNow(h.sql), 1)
  const [row] = await h.sql<{ due: boolean }[]>`SELECT reconcile_at <= now() AS due FROM calls WHERE id = ${call.id}`
  t.equal(row!.due, true)
  t.equal((await callRow(h, undialed.id)).reconcile_at, null, 'a call with no provider id has nothing to ask')
})

t.test('every final callback lost: the worker finds out from the provider, not from a 30-minute timeout', async (t) => {
  const h = await createHarness(t, { maxConcurrentCalls: 5 })
  const api = await listen(h.app, { host: '127.0.0.1', port: 0 })
  t.teardown(() => api.close())
  const sim = await startSimulator(t, {
    minDurationMs: 50,
    maxDurationMs: 200,
    statusMix: [{ status: 'COMPLETED', weight: 3 }, { status: 'BUSY', weight: 1 }],
    rates: { lostCallback: 1 },
  })
  const dispatcher = new Dispatcher({
    sql: h.sql,
    listenUrl: h.url,
    queue: h.queue,
    provider: createProviderClient({ baseUrl: sim.url, timeoutMs: 2_000, publicBaseUrl: `http://127.0.0.1:${api.port}`, callbackSecret: WEBHOOK_SECRET }),
    options: { ...policy, maxConcurrentCalls: 5, callTimeoutSeconds: 1800, reconcileAfterSeconds: 1, pollMs: 300, shutdownTimeoutMs: 2_000, reconcileRatePerSecond: 20 },
    log: silentLogger,
  })
  await dispatcher.start()
  t.teardown(() => dispatcher.stop())
  const ids: string[] = []
  for (let i = 0; i < 20; i++) ids.push((await h.call('POST', '/calls', { to: newPhone(), scriptId: 'lost' })).body.id)
  await waitFor('every call to end', async () => {
    const [open] = await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM calls WHERE status IN ('PENDING', 'IN_PROGRESS')`
    return open!.n === 0
  }, 60_000)
  t.equal(sim.stats().callbacksLost, 20, 'the provider never called back')
  t.equal(sim.stats().maxInFlight <= 5, true)
  // The database says what the provider says happened.
  const rows = await h.sql<{ provider_call_id: string; status: string; provider_status: string }[]>`
    SELECT provider_call_id, status, provider_status FROM calls`
  const byProviderId = new Map(sim.dials.filter((d) => d.providerCallId).map((d) => [d.providerCallId!, d.status]))
  for (const row of rows) {
    t.equal(row.provider_status, byProviderId.get(row.provider_call_id), `call ${row.provider_call_id} ended as the provider says`)
    t.equal(row.status, row.provider_status === 'COMPLETED' ? 'COMPLETED' : 'FAILED')
  }
  const [sources] = await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM callbacks WHERE source = 'reconcile' AND verdict = 'applied'`
  t.equal(sources!.n, 20, 'each outcome came from a status look-up')
})
