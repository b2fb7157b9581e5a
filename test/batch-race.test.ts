import t from 'tap'
import { listen } from '../src/platform/serve.ts'
import { createHarness, startSimulator, workerEnv } from './support/harness.ts'
import { runBinary, waitFor } from './support/processes.ts'

// Batches created while three worker processes dial, and one batch cancelled while they do,
// judged from the provider's side: every created call is placed exactly once, never two at once
// for one number nor more than the limit in all; a call the cancel reported as cancelled is
// never placed, and every other call of that batch is.

const LIMIT = 10
const PHONES = 25

t.test('batches racing three workers, and a batch cancelled under their feet', async (t) => {
  const h = await createHarness(t, { maxConcurrentCalls: LIMIT })
  const api = await listen(h.app, { host: '127.0.0.1', port: 0 })
  t.teardown(() => api.close())
  const sim = await startSimulator(t, { minDurationMs: 20, maxDurationMs: 150 })
  const env = workerEnv(h, sim.url, api.port, { MAX_CONCURRENT_CALLS: String(LIMIT) })
  const workers = [1, 2, 3].map(() => runBinary(t, 'worker', env))
  await waitFor('the workers', async () => {
    const [row] = await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM workers`
    return row!.n === 3
  }, 60_000)

  const phone = (batch: number, i: number) => `+1555500${String((batch * 7 + i) % PHONES).padStart(4, '0')}`
  const batchOf = (b: number, size: number) => ({ calls: Array.from({ length: size }, (_, i) => ({ to: phone(b, i), scriptId: `b${b}`, metadata: { b, i } })) })
  // Five batches at once, then a sixth to cancel while the workers are busy.
  const created = await Promise.all([0, 1, 2, 3, 4].map((b) => h.call('POST', '/calls/batch', batchOf(b, 100))))
  t.same(created.map((r) => r.status), [201, 201, 201, 201, 201])
  const victim = await h.call('POST', '/calls/batch', batchOf(5, 150))
  t.equal(victim.status, 201)
  await waitFor('some of the last batch to be under way', async () => {
    const [row] = await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM calls WHERE batch_id = ${victim.body.batchId} AND status <> 'PENDING'`
    return row!.n >= 5
  }, 120_000)
  const cancel = await h.call('POST', `/calls/batch/${victim.body.batchId}/cancel`)
  t.equal(cancel.status, 200)
  t.ok(cancel.body.cancelled > 0, `${cancel.body.cancelled} calls cancelled`)

  await waitFor('every call to end', async () => {
    const [row] = await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM calls WHERE status IN ('PENDING', 'IN_PROGRESS')`
    return row!.n === 0
  }, 300_000)

  const calls = await h.sql<{ id: string; status: string; batch_id: string }[]>`SELECT id, status, batch_id FROM calls`
  t.equal(calls.length, 650)
  const placed = new Map<string, number>()
  for (const d of sim.dials) if (d.providerCallId) placed.set(d.idempotencyKey.split(':')[0]!, (placed.get(d.idempotencyKey.split(':')[0]!) ?? 0) + 1)
  const cancelled = calls.filter((c) => c.status === 'CANCELLED')
  t.equal(cancelled.length, cancel.body.cancelled, 'as many cancelled as the answer said')
  t.ok(cancelled.every((c) => c.batch_id === victim.body.batchId), 'only calls of that batch')
  t.same(cancelled.filter((c) => placed.has(c.id)).map((c) => c.id), [], 'no cancelled call was placed')
  t.same(calls.filter((c) => c.status !== 'CANCELLED' && placed.get(c.id) !== 1).map((c) => [c.id, c.status, placed.get(c.id)]), [], 'every other call placed exactly once')
  t.same(calls.filter((c) => c.status !== 'CANCELLED' && c.status !== 'COMPLETED'), [])
  const stats = sim.stats()
  t.ok(stats.maxInFlight <= LIMIT, `never over ${LIMIT} at once (saw ${stats.maxInFlight})`)
  t.equal(stats.phoneOverlaps, 0, 'never two at once for one number')
  t.equal(stats.callsPlacedTwice, 0)

  for (const w of workers) w.child.kill('SIGTERM')
  t.same(await Promise.all(workers.map((w) => w.exited)), [0, 0, 0])
})
