import { round } from '../measure.ts'
import type { Figure, Scenario } from '../report.ts'
import { drain, phoneNumber, postBatches, providerRecord, resourcesBetween, startStack, violations } from '../stack.ts'

// 6. Large limits. MAX_CONCURRENT_CALLS of 1,000 with 4 workers: 20,000 calls over 5,000 phones
// (four each), each held 5 s by the provider, so the limit binds and every phone's calls queue
// behind each other. Every rule must hold as the provider sees it, and claims must stay cheap:
// the mean claim (the workers' orchestrator_claim_duration_seconds) at a limit of 1,000
// against the same at 30 (3,000 calls of 200 ms over 1,000 phones), and the claim time per
// call claimed, since one claim at 1,000 fills several slots. --quick: a tenth.

interface Run {
  limit: number
  calls: number
  phones: number
  callMs: number
}

export const large: Scenario = async (ctx) => {
  const started = performance.now()
  const scale = ctx.quick ? 0.1 : 1
  const small: Run = { limit: 30, calls: Math.round(3_000 * scale), phones: Math.round(1_000 * scale), callMs: 200 }
  const big: Run = { limit: 1_000, calls: Math.round(20_000 * scale), phones: Math.round(5_000 * scale), callMs: 5_000 }
  const results = []
  for (const run of [small, big]) {
    const database = await ctx.database(`large_${run.limit}`)
    const stack = await startStack({ url: database.url, workers: 4, limit: run.limit, callMs: run.callMs, metrics: true })
    try {
      ctx.log(`large: ${run.calls} calls over ${run.phones} phones, ${run.callMs} ms each, limit ${run.limit}, 4 workers`)
      const before = stack.usage()
      const t0 = performance.now()
      await postBatches(stack.base, Array.from({ length: run.calls }, (_, i) => phoneNumber('778', i % run.phones)))
      const { lost, completed } = await drain(stack.sql, 600_000)
      const seconds = (performance.now() - t0) / 1000
      const claims = await stack.claimSeconds()
      const stats = stack.sim.stats()
      const broken = violations(stats, run.limit)
      if (lost) broken.push(`${lost} of ${run.calls} calls did not complete`)
      if (stats.accepted !== run.calls) broken.push(`provider placed ${stats.accepted} calls for ${run.calls} created`)
      results.push({ run, seconds, claims, stats, broken, resources: resourcesBetween(before, stack.usage(), completed) })
    } finally {
      await stack.stop()
      await database.drop()
    }
  }
  const [a, b] = results as [(typeof results)[0], (typeof results)[0]]
  const meanMs = (r: typeof a) => (r.claims.count ? (r.claims.sum / r.claims.count) * 1000 : 0)
  const figures: Figure[] = [
    { measure: `calls/s, limit 1,000 (${b.run.calls} calls of ${b.run.callMs} ms)`, value: round(b.run.calls / b.seconds, 1), unit: 'calls/s' },
    { measure: 'most calls live at the provider, limit 1,000', value: b.stats.maxInFlight, unit: 'calls' },
    { measure: `mean claim, limit 30 (${a.claims.count} claims)`, value: round(meanMs(a), 2), unit: 'ms' },
    { measure: `mean claim, limit 1,000 (${b.claims.count} claims)`, value: round(meanMs(b), 2), unit: 'ms' },
    { measure: 'mean claim: limit 1,000 ÷ limit 30', value: round(meanMs(b) / Math.max(0.001, meanMs(a)), 2), unit: 'ratio', target: { op: '<=', value: 2 } },
    { measure: 'claim time per call, limit 30', value: round((a.claims.sum * 1000) / a.run.calls, 2), unit: 'ms' },
    { measure: 'claim time per call, limit 1,000', value: round((b.claims.sum * 1000) / b.run.calls, 2), unit: 'ms' },
    // A claim at 1,000 fills several slots at once: what a call costs to claim, against the same at 30.
    { measure: 'claim time per call: limit 1,000 ÷ limit 30', value: round(b.claims.sum / b.run.calls / Math.max(1e-6, a.claims.sum / a.run.calls), 2), unit: 'ratio', target: { op: '<=', value: 2 } },
  ]
  return {
    scenario: 'large',
    params: { small, big, workers: 4 },
    figures,
    provider: providerRecord(b.stats),
    violations: [...a.broken.map((v) => `limit 30: ${v}`), ...b.broken.map((v) => `limit 1,000: ${v}`)],
    resources: b.resources,
    seconds: (performance.now() - started) / 1000,
  }
}
