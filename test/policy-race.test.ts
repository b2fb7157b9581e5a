import t from 'tap'
import { listen } from '../src/platform/serve.ts'
import { createHarness, startSimulator, workerEnv, type Harness } from './support/harness.ts'
import { runBinary, waitFor } from './support/processes.ts'

// Four worker processes race the run-time controls, judged from the provider's side: after a
// pause is answered no new dial starts; a number suppressed meanwhile is never dialed again;
// after the limit is lowered no call is placed while that many are live.

const CALLS = 240
const PHONES = 40
const LIMIT = 12

/**
 * Resolves once every one of `count` running workers has swept twice from now (workers.
 * last_seen_at, on the database's clock): a worker sweeps at the top of its loop and claims right
 * after, so by its second sweep it has claimed at least once since this was called.
 */
async function everyWorkerLoops(h: Harness, count: number): Promise<void> {
  let since = (await h.sql<{ at: string }[]>`SELECT clock_timestamp()::text AS at`)[0]!.at
  for (const sweep of ['first', 'second']) {
    since = await waitFor(`every worker's ${sweep} sweep`, async () => {
      const [row] = await h.sql<{ n: number; latest: string }[]>`
        SELECT count(*)::int AS n, max(last_seen_at)::text AS latest FROM workers WHERE stopped_at IS NULL AND last_seen_at > ${since}::timestamptz`
      return row!.n === count && row!.latest
    }, 60_000)
  }
}

t.test('4 workers racing a pause, a freshly suppressed number and a lowered limit', async (t) => {
  const h = await createHarness(t, { maxConcurrentCalls: LIMIT })
  const api = await listen(h.app, { host: '127.0.0.1', port: 0 })
  t.teardown(() => api.close())
  const sim = await startSimulator(t, { minDurationMs: 100, maxDurationMs: 400 })
  const env = workerEnv(h, sim.url, api.port, { MAX_CONCURRENT_CALLS: String(LIMIT) })
  const workers = [1, 2, 3, 4].map(() => runBinary(t, 'worker', env))
  const phone = (i: number) => `+1555300${String(i % PHONES).padStart(4, '0')}`
  for (let i = 0; i < CALLS; i++) t.equal((await h.call('POST', '/calls', { to: phone(i), scriptId: 'race' })).status, 201)
  await waitFor('calls under way', async () => sim.stats().accepted >= 40, 60_000)

  // 1. Pause: once answered, no claim starts a dial.
  t.equal((await h.call('POST', '/dispatch/pause')).body.paused, true)
  // Compared in SQL: updated_at has microseconds, a JS Date only milliseconds.
  const [paused] = await h.sql<{ at: string }[]>`SELECT updated_at::text AS at FROM dispatch_settings`
  await everyWorkerLoops(h, workers.length)
  const [late] = await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM call_dials WHERE started_at > ${paused!.at}::timestamptz`
  t.equal(late!.n, 0, 'no dial started after the pause was answered, though every worker claimed since')

  // 2. While paused, a number with waiting calls goes on the do-not-call list.
  const [target] = await h.sql<{ phone: string }[]>`
    SELECT phone FROM calls WHERE status = 'PENDING' GROUP BY phone ORDER BY count(*) DESC LIMIT 1`
  const listed = await h.call('PUT', `/suppressions/${encodeURIComponent(target!.phone)}`, { reason: 'race' })
  t.ok(listed.body.callsSuppressed > 0, `${listed.body.callsSuppressed} waiting calls to it ended`)
  await everyWorkerLoops(h, workers.length)

  // 3. Resume with a lower limit.
  const lowered = await h.call('PUT', '/dispatch/settings', { maxConcurrentCalls: 3 })
  t.equal(lowered.body.maxConcurrentCalls, 3)
  const [lowered2] = await h.sql<{ at: Date }[]>`SELECT updated_at AS at FROM dispatch_settings`
  const loweredAt = lowered2!.at
  await h.call('POST', '/dispatch/resume')
  const [resumed] = await h.sql<{ at: string }[]>`SELECT updated_at::text AS at FROM dispatch_settings`

  await waitFor('every call to end', async () => {
    const [row] = await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM calls WHERE status IN ('PENDING', 'IN_PROGRESS')`
    return row!.n === 0
  }, 240_000)

  const dials = await h.sql<{ call_id: string; dial: number; phone: string; started_at: Date; while_paused: boolean }[]>`
    SELECT call_id, dial, phone, started_at, started_at > ${paused!.at}::timestamptz AND started_at < ${resumed!.at}::timestamptz AS while_paused
    FROM call_dials`
  const startedAt = new Map(dials.map((d) => [`${d.call_id}:${d.dial}`, d]))
  const placed = sim.dials.filter((d) => d.providerCallId)
  t.same(placed.filter((d) => startedAt.get(d.idempotencyKey)!.while_paused).map((d) => d.idempotencyKey), [], 'the provider placed nothing claimed while paused')
  const afterLimit = placed.filter((d) => startedAt.get(d.idempotencyKey)!.started_at.getTime() > loweredAt.getTime())
  // How many went before the pause depends on the machine's load; a quarter of them is plenty.
  t.ok(afterLimit.length >= CALLS / 4, `${afterLimit.length} calls placed under the lower limit`)
  t.same(afterLimit.filter((d) => d.liveAtPlacement! > 3).map((d) => d.liveAtPlacement), [], 'none while 3 were live')
  const listedAt = new Date(listed.body.createdAt as string)
  const toTarget = placed.filter((d) => d.to === target!.phone)
  t.same(toTarget.filter((d) => startedAt.get(d.idempotencyKey)!.started_at.getTime() >= listedAt.getTime()), [], 'the listed number was not dialed after it was listed')
  const statuses = await h.sql<{ status: string; n: number }[]>`SELECT status, count(*)::int AS n FROM calls WHERE phone = ${target!.phone} GROUP BY status`
  t.ok(statuses.some((s) => s.status === 'SUPPRESSED'), `its waiting calls ended SUPPRESSED (${JSON.stringify(statuses)})`)
  const stats = sim.stats()
  t.ok(stats.maxInFlight <= LIMIT, `never over ${LIMIT} (saw ${stats.maxInFlight})`)
  t.equal(stats.phoneOverlaps, 0)
  t.equal(stats.callsPlacedTwice, 0)

  for (const w of workers) w.child.kill('SIGTERM')
  t.same(await Promise.all(workers.map((w) => w.exited)), [0, 0, 0, 0])
})
