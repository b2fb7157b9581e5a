import { randomUUID } from 'node:crypto'
import postgres from 'postgres'
import { BASELINE_QUEUE, startBareBoss } from '../baseline.ts'
import { closedLoop, round, sleep } from '../measure.ts'
import type { Scenario, ScenarioResult } from '../report.ts'
import { drain, phoneNumber, postCall, providerRecord, resourcesBetween, startStack, violations } from '../stack.ts'

// 2. Flow. A provider with zero latency: thousands of calls over many phones, POSTed by 16
// clients while the workers drain them, from the first call created to the last final callback
// (the database's clock). Against the same shape done by pg-boss alone: 16 clients send jobs
// while as many consumer loops as we have workers fetch at most `limit` at a time between them
// and complete each job. Also where 5. Resources is measured: peak RSS of each process and CPU
// seconds per completed call (CPU counted from the start of the load, not from start-up).

const CLIENTS = 16
const LIMIT = 30

export const flow: Scenario = async (ctx) => {
  const started = performance.now()
  const p = ctx.quick ? { calls: 300, phones: 100, workers: 2 } : { calls: 5000, phones: 1000, workers: 2 }
  const database = await ctx.database('flow')
  const stack = await startStack({ url: database.url, workers: p.workers, limit: LIMIT, callMs: 0 })
  let result: Omit<ScenarioResult, 'figures' | 'seconds'>
  let ours: { rate: number; completed: number }
  try {
    ctx.log(`flow: ${p.calls} calls over ${p.phones} phones through ${p.workers} workers`)
    const before = stack.usage()
    await closedLoop(p.calls, CLIENTS, (i) => postCall(stack.base, phoneNumber('666', i % p.phones)))
    const { lost, completed } = await drain(stack.sql, ctx.quick ? 60_000 : 300_000)
    const [span] = await stack.sql<{ seconds: number }[]>`SELECT extract(epoch FROM max(ended_at) - min(created_at))::float8 AS seconds FROM calls`
    ours = { rate: completed / span!.seconds, completed }
    const after = stack.usage()
    const resources = resourcesBetween(before, after, completed)
    const stats = stack.sim.stats()
    const broken = violations(stats, LIMIT)
    if (lost) broken.push(`${lost} of ${p.calls} calls did not complete`)
    if (stats.accepted !== p.calls) broken.push(`provider placed ${stats.accepted} calls for ${p.calls} created`)
    result = { scenario: 'flow', params: { ...p, clients: CLIENTS, limit: LIMIT }, provider: providerRecord(stats), violations: broken, resources }
  } finally {
    await stack.stop()
  }

  try {
    ctx.log(`flow: the same ${p.calls} jobs through bare pg-boss send, fetch, complete`)
    const boss = await startBareBoss(database.url, 10)
    const sql = postgres(database.url, { max: 1, onnotice: () => {} })
    try {
      let done = 0
      const consume = async () => {
        while (done < p.calls) {
          const jobs = await boss.fetch(BASELINE_QUEUE, { batchSize: Math.floor(LIMIT / p.workers) })
          if (jobs.length === 0) {
            await sleep(5)
            continue
          }
          await Promise.all(jobs.map((j) => boss.complete(BASELINE_QUEUE, j.id)))
          done += jobs.length
        }
      }
      const consumers = Array.from({ length: p.workers }, consume)
      await closedLoop(p.calls, CLIENTS, async () => void (await boss.send(BASELINE_QUEUE, { callId: randomUUID() })))
      await Promise.all(consumers)
      const [span] = await sql<{ seconds: number; completed: number }[]>`
        SELECT extract(epoch FROM max(completed_on) - min(created_on))::float8 AS seconds, count(*)::int AS completed
        FROM pgboss.job WHERE name = ${BASELINE_QUEUE} AND state = 'completed'`
      const bareRate = span!.completed / span!.seconds
      return {
        ...result,
        figures: [
          { measure: `create → final callback, ${p.calls} calls`, value: ours.rate, unit: 'calls/s' },
          { measure: 'bare pg-boss send → fetch → complete', value: bareRate, unit: 'jobs/s' },
          { measure: 'flow ÷ bare pg-boss', value: round(ours.rate / bareRate), unit: 'ratio', target: { op: '>=', value: 0.5 } },
        ],
        seconds: (performance.now() - started) / 1000,
      }
    } finally {
      await sql.end()
      await boss.stop({ graceful: false, close: true })
    }
  } finally {
    await database.drop()
  }
}
