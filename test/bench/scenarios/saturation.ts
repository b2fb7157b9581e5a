import { round, summarize } from '../measure.ts'
import type { Scenario } from '../report.ts'
import { drain, phoneNumber, postBatches, providerRecord, resourcesBetween, startStack, violations } from '../stack.ts'

// 3. Saturation. The simulator holds each call CALL_MS; a backlog deeper than the run (every
// call its own phone, so only the limit holds calls back). Utilization is the completion rate
// while the backlog lasted over the ceiling limit / CALL_MS. A freed slot's empty time: with a
// backlog, the k-th applied final callback frees the slot that claim number limit + k takes, so
// the gap is that claim's started_at minus the callback's received_at (both now() of their
// transactions on the database's clock; the callback's commit comes a little after its now(),
// so this errs long).

const LIMIT = 30
const CALL_MS = 200

export const saturation: Scenario = async (ctx) => {
  const started = performance.now()
  const p = ctx.quick ? { seconds: 3, workers: 2 } : { seconds: 30, workers: 2 }
  const run = await saturate(ctx, p)
  return {
    scenario: 'saturation',
    params: { ...p, calls: run.calls, limit: LIMIT, callMs: CALL_MS, windowSeconds: run.windowSeconds, refills: run.refills.n },
    figures: [
      { measure: `calls/s with a backlog (ceiling ${run.ceiling})`, value: run.achieved, unit: 'calls/s' },
      { measure: 'utilization', value: run.utilization, unit: 'ratio', target: { op: '>=', value: 0.98 } },
      { measure: `freed slot empty (callback → next claim, ${run.refills.n} refills)`, value: run.refills.median, p99: run.refills.p99, unit: 'ms', target: { op: '<=', value: 20 }, targetOn: 'p99' },
    ],
    provider: providerRecord(run.stats),
    violations: run.violations,
    resources: run.resources,
    seconds: (performance.now() - started) / 1000,
  }
}

/** One saturated run: a backlog of calls CALL_MS long for `seconds` under LIMIT, through `workers` workers. */
export async function saturate(ctx: Parameters<Scenario>[0], p: { seconds: number; workers: number }) {
  const calls = Math.ceil((LIMIT / CALL_MS) * 1000 * p.seconds)
  const database = await ctx.database(`saturation_w${p.workers}`)
  const stack = await startStack({ url: database.url, workers: p.workers, limit: LIMIT, callMs: CALL_MS })
  try {
    ctx.log(`saturation: ${calls} calls of ${CALL_MS} ms, limit ${LIMIT}, ${p.workers} workers, about ${p.seconds} s`)
    const before = stack.usage()
    const xacts = async () => (await stack.sql<{ n: string }[]>`SELECT xact_commit + xact_rollback AS n FROM pg_stat_database WHERE datname = current_database()`)[0]!.n
    const xactsBefore = Number(await xacts())
    await postBatches(stack.base, Array.from({ length: calls }, (_, i) => phoneNumber('777', i)))
    const { lost, completed } = await drain(stack.sql, p.seconds * 4_000 + 30_000)
    // Transactions the database ran per call (every process's, the bench's own few included): the
    // cost of wake-ups that find nothing to claim shows up here.
    const transactionsPerCall = round((Number(await xacts()) - xactsBefore) / calls, 1)
    const resources = resourcesBetween(before, stack.usage(), completed)
    const sql = stack.sql
    // The backlog is deep from one call length after the first claim to the last claim.
    const [w] = await sql<{ from: Date; to: Date }[]>`
      SELECT min(started_at) + make_interval(secs => ${CALL_MS / 1000}) AS from, max(started_at) AS to FROM calls`
    const [c] = await sql<{ ended: number }[]>`
      SELECT count(*)::int AS ended FROM calls WHERE ended_at >= ${w!.from} AND ended_at < ${w!.to}`
    const windowSeconds = (w!.to.getTime() - w!.from.getTime()) / 1000
    const achieved = c!.ended / windowSeconds
    const ceiling = LIMIT / (CALL_MS / 1000)
    const claims = (await sql<{ t: Date }[]>`SELECT started_at AS t FROM calls ORDER BY started_at`).map((r) => r.t.getTime())
    const releases = (await sql<{ t: Date }[]>`SELECT received_at AS t FROM callbacks WHERE verdict = 'applied' ORDER BY received_at`).map((r) => r.t.getTime())
    const gaps: number[] = []
    for (let k = 0; k < releases.length && LIMIT + k < claims.length; k++) gaps.push(Math.max(0, claims[LIMIT + k]! - releases[k]!))
    const g = summarize(gaps)
    const stats = stack.sim.stats()
    const broken = violations(stats, LIMIT)
    if (lost) broken.push(`${lost} of ${calls} calls did not complete`)
    if (stats.accepted !== calls) broken.push(`provider placed ${stats.accepted} calls for ${calls} created`)
    return { calls, ceiling, achieved, transactionsPerCall, utilization: round(achieved / ceiling, 3), windowSeconds: round(windowSeconds), refills: g, stats, violations: broken, resources }
  } finally {
    await stack.stop()
    await database.drop()
  }
}
