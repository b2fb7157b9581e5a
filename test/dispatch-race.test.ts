import t from 'tap'
import { listen } from '../src/platform/serve.ts'
import { createHarness, startSimulator, workerEnv } from './support/harness.ts'
import { runBinary, waitFor } from './support/processes.ts'

// Four worker processes, hundreds of calls over a few dozen phones, a provider that fails
// now and then: from the provider's side (the ground truth) the limits always hold.

const CALLS = 400
const PHONES = 40
const LIMIT = 12

t.test('4 workers: never over the limit, never two per phone, never a call placed twice', async (t) => {
  const h = await createHarness(t, { maxConcurrentCalls: LIMIT })
  const api = await listen(h.app, { host: '127.0.0.1', port: 0 })
  t.teardown(() => api.close())
  const sim = await startSimulator(t, {
    minDurationMs: 20,
    maxDurationMs: 120,
    statusMix: [{ status: 'COMPLETED', weight: 9 }, { status: 'NO_ANSWER', weight: 1 }],
    rates: { serverError: 0.1, timeout: 0.02, rateLimited: 0.05, duplicateCallback: 0.1, earlyCallback: 0.1, lateCallback: 0.05 },
  })

  const env = workerEnv(h, sim.url, api.port, {
    MAX_CONCURRENT_CALLS: String(LIMIT),
    MAX_ATTEMPTS: '3',
    RETRY_BASE_SECONDS: '1',
    RETRY_MAX_SECONDS: '2',
    PROVIDER_TIMEOUT_MS: '1000',
    // A request the simulator hangs on has an unknown outcome: its call is held this long.
    CALL_TIMEOUT_SECONDS: '5',
  })
  const workers = [1, 2, 3, 4].map(() => runBinary(t, 'worker', env))

  const created = await Promise.all(
    Array.from({ length: CALLS }, (_, i) =>
      h.call('POST', '/calls', { to: `+1555000${String(i % PHONES).padStart(4, '0')}`, scriptId: 'race' }),
    ),
  )
  t.ok(created.every((r) => r.status === 201), 'every call created')

  await waitFor('every call to end', async () => {
    const [row] = await h.sql<{ open: number }[]>`
      SELECT count(*)::int AS open FROM calls WHERE status IN ('PENDING', 'IN_PROGRESS')`
    return row!.open === 0
  }, 240_000)

  const stats = sim.stats()
  t.ok(stats.maxInFlight <= LIMIT, `provider saw at most ${LIMIT} calls at once (saw ${stats.maxInFlight})`)
  t.ok(stats.maxInFlight > 1, 'calls did run in parallel')
  t.equal(stats.maxInFlightPerPhone, 1, 'provider never saw two calls at once for one phone')
  t.equal(stats.phoneOverlaps, 0, 'no call placed while its phone had one live')
  t.equal(stats.keysAcceptedTwice, 0, 'no idempotency key became two calls')
  t.equal(stats.callsPlacedTwice, 0, 'no call request became two provider calls')

  const rows = await h.sql<{ status: string; attempts: number; provider_call_id: string | null; n: number }[]>`
    SELECT status, count(*)::int AS n, max(attempts) AS attempts, min(provider_call_id) AS provider_call_id
    FROM calls GROUP BY status`
  const total = rows.reduce((sum, r) => sum + r.n, 0)
  t.equal(total, CALLS)
  t.ok(rows.every((r) => r.attempts <= 3), 'no call went past MAX_ATTEMPTS')
  const [noId] = await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM calls WHERE status = 'COMPLETED' AND provider_call_id IS NULL`
  t.equal(noId!.n, 0, 'every completed call has its provider id')
  const [openJobs] = await h.sql<{ n: number }[]>`
    SELECT count(*)::int AS n FROM pgboss.job WHERE name = 'calls' AND state IN ('created', 'retry', 'active', 'failed')`
  t.equal(openJobs!.n, 0, 'every job is settled')

  for (const w of workers) w.child.kill('SIGTERM')
  const codes = await Promise.all(workers.map((w) => w.exited))
  t.same(codes, [0, 0, 0, 0], 'workers stop cleanly on SIGTERM')
})
