import { round } from '../measure.ts'
import type { Figure, Scenario } from '../report.ts'
import { providerRecord } from '../stack.ts'
import { saturate } from './saturation.ts'

// 5. Workers. The saturation run (a backlog of 200 ms calls under a limit of 30) with 1, 2, 4
// and 8 workers: more workers must not do less. Every freed slot used to wake every worker,
// and each took the claim lock in turn to find the slot gone: with more workers, less
// utilization and a longer refill. Targets: utilization with 8 workers at least that with 2,
// and the refill p99 with 8 within 1.25 times that with 2. Transactions per call show what
// wake-ups that find nothing cost the database.

const SWEEP = [1, 2, 4, 8]

export const workers: Scenario = async (ctx) => {
  const started = performance.now()
  const seconds = ctx.quick ? 3 : 15
  const runs: Array<{ workers: number } & Awaited<ReturnType<typeof saturate>>> = []
  for (const n of SWEEP) runs.push({ workers: n, ...(await saturate(ctx, { seconds, workers: n })) })
  const at = (n: number) => runs.find((r) => r.workers === n)!
  const figures: Figure[] = runs.flatMap((r) => [
    { measure: `utilization, ${r.workers} worker${r.workers === 1 ? '' : 's'}`, value: r.utilization, unit: 'ratio' },
    { measure: `freed slot empty, ${r.workers} worker${r.workers === 1 ? '' : 's'} (${r.refills.n} refills)`, value: r.refills.median, p99: r.refills.p99, unit: 'ms' },
    { measure: `database transactions per call, ${r.workers} worker${r.workers === 1 ? '' : 's'}`, value: r.transactionsPerCall, unit: 'count' },
  ])
  figures.push(
    { measure: 'utilization: 8 workers ÷ 2 workers', value: round(at(8).utilization / at(2).utilization, 3), unit: 'ratio', target: { op: '>=', value: 1 } },
    { measure: 'refill p99: 8 workers ÷ 2 workers', value: round(at(8).refills.p99 / Math.max(1, at(2).refills.p99), 3), unit: 'ratio', target: { op: '<=', value: 1.25 } },
  )
  return {
    scenario: 'workers',
    params: { seconds, sweep: SWEEP, limit: 30, callMs: 200 },
    figures,
    provider: providerRecord(at(8).stats),
    violations: runs.flatMap((r) => r.violations.map((v) => `${r.workers} workers: ${v}`)),
    resources: at(8).resources,
    seconds: (performance.now() - started) / 1000,
  }
}
