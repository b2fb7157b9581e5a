import t, { type Test } from 'tap'
import type { Counter, Histogram } from 'prom-client'
import { NO_POLICY, type CallingPolicy } from '../src/domain/policy.ts'
import type { DispatcherOptions } from '../src/worker/dispatcher.ts'
import { sweep } from '../src/services/dispatch/sweeps.ts'
import { EventDelivery } from '../src/services/events/deliver.ts'
import { silentLogger } from '../src/platform/log.ts'
import { metrics } from '../src/platform/metrics.ts'
import { deliver, inFlightCall, POLICY, sendSigned, signHeaders, callbackPath } from './support/callbacks.ts'
import { startEventReceiver } from './support/event-receiver.ts'
import { type Answer, startFakeProvider, type Received } from './support/fake-provider.ts'
import { startDispatcher } from './support/dispatcher.ts'
import { insertCall, newPhone, postCall } from './support/factory.ts'
import { createHarness, registerWorker, WEBHOOK_SECRET, type Harness } from './support/harness.ts'
import { freePort, runBinary, waitFor } from './support/processes.ts'

// Every metric: make its event happen, see it move. Counters are this process's own, so each
// check is a difference taken around the event (tests in this file run one after another).

type Labels = Record<string, string>

async function count(metric: Counter<string>, labels: Labels = {}): Promise<number> {
  const { values } = await metric.get()
  return values.filter((v) => Object.entries(labels).every(([k, want]) => v.labels[k] === want)).reduce((sum, v) => sum + v.value, 0)
}

/** How many observations a histogram holds (with `labels`), and their sum. */
async function observed(metric: Histogram<string>, labels: Labels = {}): Promise<{ count: number; sum: number }> {
  const { values } = await metric.get()
  const pick = (suffix: string) =>
    values
      .filter((v) => v.metricName?.endsWith(suffix) && Object.entries(labels).every(([k, want]) => v.labels[k] === want))
      .reduce((sum, v) => sum + v.value, 0)
  return { count: pick('_count'), sum: pick('_sum') }
}

/** `read` before and after `step`. */
async function delta<T>(read: () => Promise<number>, step: () => Promise<T>): Promise<{ moved: number; result: T }> {
  const before = await read()
  const result = await step()
  return { moved: (await read()) - before, result }
}

/** Polls and sweeps often, so time-outs and look-ups come within a test's patience. */
const startWorker = (t: Test, h: Harness, providerUrl: string, options: Partial<DispatcherOptions> = {}) =>
  startDispatcher(t, h, providerUrl, { pollMs: 200, leaseMs: 5_000, reconcileAfterSeconds: 600, reconcileRatePerSecond: 50, providerTimeoutMs: 1_000, ...options })

const dialed = (h: Harness, id: string) =>
  waitFor(`call ${id} dialed`, async () => {
    const [row] = await h.sql<{ provider_call_id: string | null }[]>`SELECT provider_call_id FROM calls WHERE id = ${id}`
    return row?.provider_call_id ?? undefined
  }, 30_000)

const statusOf = async (h: Harness, id: string) => (await h.sql<{ status: string }[]>`SELECT status FROM calls WHERE id = ${id}`)[0]!.status

t.test('a call from creation to its end: claims, provider requests, waits, durations, lag, slot refill, callbacks', async (t) => {
  const h = await createHarness(t, { maxConcurrentCalls: 1 })
  const fake = await startFakeProvider(t, (_req, n) => ({ status: 202, body: { callId: `prov-${n}` } }))
  const before = {
    claims: await count(metrics.claims),
    accepted: await count(metrics.providerRequests, { outcome: 'accepted' }),
    latency: (await observed(metrics.providerLatency, { outcome: 'accepted' })).count,
    queueWait: (await observed(metrics.queueWait)).count,
    refill: (await observed(metrics.slotRefill)).count,
  }
  await startWorker(t, h, fake.url, { maxConcurrentCalls: 1 })
  const first = await postCall(h, { to: newPhone() })
  const second = await postCall(h, { to: newPhone() })
  const providerId = await dialed(h, first.id)
  t.equal(await count(metrics.claims), before.claims + 1, 'one claim')
  t.equal(await count(metrics.providerRequests, { outcome: 'accepted' }), before.accepted + 1, 'one accepted request')
  t.equal((await observed(metrics.providerLatency, { outcome: 'accepted' })).count, before.latency + 1, 'its latency observed')
  t.equal((await observed(metrics.queueWait)).count, before.queueWait + 1, 'its queue wait observed')
  t.equal(await statusOf(h, second.id), 'PENDING', 'the second waits: the only slot is taken')

  const cb = {
    applied: await count(metrics.callbacks, { source: 'webhook', verdict: 'applied' }),
    duplicate: await count(metrics.callbacks, { source: 'webhook', verdict: 'duplicate' }),
    duration: await observed(metrics.callDuration),
    lag: (await observed(metrics.callbackLag)).count,
  }
  const completedAt = new Date(Date.now() - 1_500).toISOString()
  const report = { callId: providerId, status: 'COMPLETED', durationSec: 42, completedAt }
  t.equal((await sendSigned(h, first.id, report, { id: 'msg_metrics_1' })).body.verdict, 'applied')
  t.equal(await count(metrics.callbacks, { source: 'webhook', verdict: 'applied' }), cb.applied + 1, 'an applied callback')
  const duration = await observed(metrics.callDuration)
  t.equal(duration.count, cb.duration.count + 1, 'its duration observed')
  t.equal(duration.sum - cb.duration.sum, 42, 'in seconds, as reported')
  t.equal((await observed(metrics.callbackLag)).count, cb.lag + 1, 'its lag observed')
  t.equal((await sendSigned(h, first.id, report, { id: 'msg_metrics_1' })).body.verdict, 'duplicate')
  t.equal(await count(metrics.callbacks, { source: 'webhook', verdict: 'duplicate' }), cb.duplicate + 1, 'a duplicate counted as one')

  // The callback freed the slot; the waiting call is claimed into it.
  await dialed(h, second.id)
  t.equal((await observed(metrics.slotRefill)).count, before.refill + 1, 'the freed slot refilled, and timed')
  t.equal(await count(metrics.claims), before.claims + 2)
  t.equal(fake.received.length, 2)
})

t.test('refused callbacks are counted by reason and change nothing', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  const call = await inFlightCall(h, w, newPhone(), 'prov-x')
  const body = JSON.stringify({ callId: 'prov-x', status: 'COMPLETED' })
  const { moved } = await delta(
    () => count(metrics.callbacksRefused, { reason: 'invalid_signature' }),
    () => deliver(h, body, signHeaders(body, { secret: 'whsec_' + Buffer.from('another secret, 32 bytes long..!').toString('base64') }), callbackPath(call.id)),
  )
  t.equal(moved, 1)
  t.equal(await statusOf(h, call.id), 'IN_PROGRESS')
})

t.test('provider answers by outcome: refused, not placed (and retried), unknown', async (t) => {
  const h = await createHarness(t)
  const answers: Record<string, (n: number) => Answer> = {
    refused: () => ({ status: 400, body: { error: 'bad number' } }),
    transient: (n) => (n === 1 ? { status: 429, body: {}, headers: { 'retry-after': '0' } } : { status: 202, body: { callId: 'prov-t' } }),
    unknown: () => ({ status: 500, body: {} }),
  }
  const phones = { refused: newPhone(), transient: newPhone(), unknown: newPhone() }
  const seen: Record<string, number> = {}
  const fake = await startFakeProvider(t, (req: Received) => {
    const kind = Object.entries(phones).find(([, p]) => p === req.body.to)![0]
    seen[kind] = (seen[kind] ?? 0) + 1
    return answers[kind]!(seen[kind]!)
  })
  const read = async () => ({
    refused: await count(metrics.providerRequests, { outcome: 'refused' }),
    notPlaced: await count(metrics.providerRequests, { outcome: 'not_placed' }),
    unknown: await count(metrics.providerRequests, { outcome: 'unknown' }),
    requestRetries: await count(metrics.retries, { kind: 'request' }),
    refusedLatency: (await observed(metrics.providerLatency, { outcome: 'refused' })).count,
  })
  const before = await read()
  await startWorker(t, h, fake.url)
  const refused = await postCall(h, { to: phones.refused })
  const transient = await postCall(h, { to: phones.transient })
  await postCall(h, { to: phones.unknown })
  await waitFor('the refused call to fail', async () => (await statusOf(h, refused.id)) === 'FAILED', 30_000)
  await dialed(h, transient.id)
  await waitFor('the unknown answer', async () => (await count(metrics.providerRequests, { outcome: 'unknown' })) > before.unknown, 30_000)
  const after = await read()
  t.equal(after.refused - before.refused, 1, 'a 400 is a refusal')
  t.equal(after.refusedLatency - before.refusedLatency, 1, 'with its latency')
  t.equal(after.notPlaced - before.notPlaced, 1, 'a 429 is not placed')
  t.ok(after.requestRetries - before.requestRetries >= 1, 'and re-sent after backoff')
  t.ok(after.unknown - before.unknown >= 1, 'a 500 is an unknown outcome')
  t.ok(fake.received.length >= 4)
})

t.test('an outcome retry is counted when BUSY sends a call back for a new dial', async (t) => {
  const calling: CallingPolicy = { ...NO_POLICY, retries: { BUSY: { limit: 1, delaySeconds: 600 } } }
  const h = await createHarness(t, { calling })
  const w = await registerWorker(h)
  const call = await inFlightCall(h, w, newPhone(), 'prov-busy')
  const { moved, result } = await delta(
    () => count(metrics.retries, { kind: 'outcome' }),
    () => sendSigned(h, call.id, { callId: 'prov-busy', status: 'BUSY' }),
  )
  t.same(result.body, { verdict: 'applied', callId: call.id, status: 'PENDING' })
  t.equal(moved, 1)
})

t.test('reconciliations by result, and a report learnt by a look-up', async (t) => {
  const h = await createHarness(t)
  const fake = await startFakeProvider(t, (req) =>
    req.method === 'POST'
      ? { status: 202, body: { callId: 'prov-r' } }
      : { status: 200, body: { callId: 'prov-r', status: 'COMPLETED', durationSec: 5, completedAt: new Date().toISOString() } },
  )
  const before = {
    final: await count(metrics.reconciliations, { result: 'final' }),
    report: await count(metrics.callbacks, { source: 'reconcile', verdict: 'applied' }),
  }
  await startWorker(t, h, fake.url, { reconcileAfterSeconds: 1 })
  const call = await postCall(h, { to: newPhone() })
  await waitFor('the look-up to end the call', async () => (await statusOf(h, call.id)) === 'COMPLETED', 60_000)
  t.equal(await count(metrics.reconciliations, { result: 'final' }), before.final + 1)
  t.equal(await count(metrics.callbacks, { source: 'reconcile', verdict: 'applied' }), before.report + 1)
})

t.test('a call with no final report times out, and the look-ups that could not help are counted', async (t) => {
  const h = await createHarness(t)
  const fake = await startFakeProvider(t, (req) => (req.method === 'POST' ? { status: 202, body: { callId: 'prov-silent' } } : { status: 404, body: {} }))
  const before = {
    timedOut: await count(metrics.timedOut),
    unsupported: await count(metrics.reconciliations, { result: 'unsupported' }),
  }
  await startWorker(t, h, fake.url, { reconcileAfterSeconds: 1, callTimeoutSeconds: 2 })
  const call = await postCall(h, { to: newPhone() })
  await waitFor('the time-out', async () => (await statusOf(h, call.id)) === 'FAILED', 60_000)
  t.equal(await count(metrics.timedOut), before.timedOut + 1)
  t.ok((await count(metrics.reconciliations, { result: 'unsupported' })) > before.unsupported, 'the look-up answered 404: unsupported')
})

t.test('calls ended before a dial: cancelled, suppressed, expired', async (t) => {
  const h = await createHarness(t)
  const one = await postCall(h, { to: newPhone() })
  t.equal((await delta(() => count(metrics.cancelled), () => h.call('POST', `/calls/${one.id}/cancel`))).moved, 1, 'a cancel')

  const batch = await h.call('POST', '/calls/batch', { calls: [{ to: newPhone(), scriptId: 's' }, { to: newPhone(), scriptId: 's' }] })
  t.equal(batch.status, 201)
  const cancelled = await delta(() => count(metrics.cancelled), () => h.call('POST', `/calls/batch/${batch.body.batchId}/cancel`))
  t.equal(cancelled.moved, 2, "a batch's two")

  const phone = newPhone()
  const waiting = await postCall(h, { to: phone })
  const suppressed = await delta(() => count(metrics.suppressed), () => h.call('PUT', `/suppressions/${encodeURIComponent(phone)}`, { reason: 'asked' }))
  t.equal(suppressed.moved, 1, 'a waiting call to a number put on the list')
  t.equal(await statusOf(h, waiting.id), 'SUPPRESSED')

  const stale = await insertCall(h, { createdAt: new Date(Date.now() - 3_600_000) })
  await h.sql`UPDATE calls SET expires_at = now() - interval '1 second' WHERE id = ${stale.id}`
  const expired = await delta(() => count(metrics.expired), () => sweep(h.sql, h.queue, POLICY, {}))
  t.equal(expired.moved, 1, 'a call past its expiry')
  t.equal(await statusOf(h, stale.id), 'EXPIRED')
})

t.test('event deliveries by result: delivered, failed (retried), given up', async (t) => {
  const h = await createHarness(t, { deliveryRetry: { limit: 1, baseSeconds: 1, maxSeconds: 1 } })
  const good = await startEventReceiver(t)
  const bad = await startEventReceiver(t, { verdict: () => 'fail' })
  for (const receiver of [good, bad]) {
    const res = await h.call('POST', '/event-endpoints', { url: receiver.url, eventTypes: ['call.cancelled'] })
    receiver.secrets = [res.body.secret]
  }
  const read = async () => ({
    delivered: await count(metrics.eventDeliveries, { result: 'delivered' }),
    failed: await count(metrics.eventDeliveries, { result: 'failed' }),
    givenUp: await count(metrics.eventDeliveries, { result: 'given_up' }),
  })
  const before = await read()
  const delivery = new EventDelivery({
    sql: h.sql,
    deliveries: h.queue.deliveries,
    listenUrl: h.url,
    options: { timeoutMs: 2_000, perEndpoint: 4, allowInsecureUrls: true, pollMs: 100 },
    log: silentLogger,
  })
  await delivery.start()
  t.teardown(() => delivery.stop())
  const call = await postCall(h, { to: newPhone() })
  await h.call('POST', `/calls/${call.id}/cancel`)
  const after = await waitFor('both endpoints settled', async () => {
    const now = await read()
    return now.delivered > before.delivered && now.givenUp > before.givenUp ? now : undefined
  }, 60_000)
  t.equal(after.delivered - before.delivered, 1, 'delivered once to the endpoint that answers 2xx')
  t.equal(after.failed - before.failed, 1, 'the failing one: one failed attempt retried')
  t.equal(after.givenUp - before.givenUp, 1, 'then given up after its one retry')
})

t.test('the gauges follow the database: in flight, free slots, the limit, paused', async (t) => {
  const h = await createHarness(t, { maxConcurrentCalls: 3 })
  const w = await registerWorker(h)
  await inFlightCall(h, w, newPhone(), 'prov-g')
  const scrape = async () => (await h.call('GET', '/metrics?format=prometheus')).body as string
  let text = await scrape()
  t.match(text, /^orchestrator_calls_in_flight 1$/m)
  t.match(text, /^orchestrator_free_slots 2$/m)
  t.match(text, /^orchestrator_max_concurrent_calls 3$/m)
  t.match(text, /^orchestrator_dispatch_paused 0$/m)
  t.equal((await h.call('POST', '/dispatch/pause')).status, 200)
  text = await scrape()
  t.match(text, /^orchestrator_dispatch_paused 1$/m)
  t.match(text, /^orchestrator_free_slots 0$/m, 'no slot is free while paused')
  // And this process's own counters and histograms, in Prometheus's naming.
  t.match(text, /^# TYPE orchestrator_claims_total counter$/m)
  t.match(text, /^# TYPE orchestrator_provider_request_duration_seconds histogram$/m)
  t.match(text, /^orchestrator_process_resident_memory_bytes \d+/m)
})

t.test('a worker process serves its own metrics and a health check on METRICS_PORT', async (t) => {
  const h = await createHarness(t)
  const fake = await startFakeProvider(t, () => ({ status: 202, body: { callId: 'prov-w' } }))
  const port = await freePort()
  const worker = runBinary(t, 'worker', {
    DATABASE_URL: h.url,
    DATABASE_CONNECTIONS: '8',
    HOST: '127.0.0.1',
    METRICS_PORT: String(port),
    PROVIDER_BASE_URL: fake.url,
    WEBHOOK_SECRET,
  })
  const base = `http://127.0.0.1:${port}`
  await waitFor('the worker metrics port', async () => (await fetch(`${base}/healthz`).catch(() => undefined))?.ok, 60_000)
  const claims = async () => Number(/^orchestrator_claims_total (\d+)$/m.exec(await (await fetch(`${base}/metrics`)).text())?.[1])
  t.equal(await claims(), 0, 'nothing claimed yet')
  const created = await postCall(h, { to: newPhone() })
  await waitFor('the worker to claim it', async () => (await claims()) === 1, 60_000)
  await waitFor('the dial to reach the provider', async () => fake.received.length === 1, 60_000)
  t.equal(fake.received[0]!.body.to, created.payload.to)
  const res = await fetch(`${base}/metrics`)
  t.match(res.headers.get('content-type'), /^text\/plain; version=0\.0\.4/)
  t.equal((await fetch(`${base}/nothing`)).status, 404)
  worker.child.kill('SIGTERM')
  t.equal(await worker.exited, 0, 'stops cleanly, metrics server and all')
})
