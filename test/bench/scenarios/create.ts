import { randomUUID } from 'node:crypto'
import postgres from 'postgres'
import { BASELINE_QUEUE, startBareBoss } from '../baseline.ts'
import { closedLoop, round, summarize } from '../measure.ts'
import type { Figure, Scenario } from '../report.ts'
import { phoneNumber, postCall, providerRecord, startStack, violations } from '../stack.ts'

// 1. Create. POST /calls at several client concurrencies against a bare pg-boss send loop at
// the same concurrency, each pair back to back; POST /calls/batch against one multi-row INSERT
// of the same rows into the same calls table (same indexes, constraints, triggers), the two
// alternating batch by batch. The API runs with no workers, so nothing else uses the database.

const API_POOL_MAX = 8 // the API's own pool under DATABASE_CONNECTIONS' default (10, less 2 for pg-boss): the baseline gets no more

export const create: Scenario = async (ctx) => {
  const started = performance.now()
  const p = ctx.quick
    ? { concurrencies: [1, 16], requests: 150, batches: 3, batchSize: 200 }
    : { concurrencies: [1, 8, 32], requests: 2000, batches: 10, batchSize: 1000 }
  const database = await ctx.database('create')
  const stack = await startStack({ url: database.url, workers: 0, limit: 30, callMs: 0 })
  const sql = postgres(database.url, { max: 2, onnotice: () => {} })
  const figures: Figure[] = []
  let seq = 0
  const phone = () => phoneNumber('212', seq++)
  try {
    for (const c of p.concurrencies) {
      ctx.log(`create: ${p.requests} POST /calls and ${p.requests} pg-boss sends at concurrency ${c}`)
      const clients = `${c} client${c === 1 ? '' : 's'}`
      const boss = await startBareBoss(database.url, Math.min(c, API_POOL_MAX))
      try {
        // A warm-up of each path, not measured.
        await closedLoop(Math.min(20, p.requests), c, () => postCall(stack.base, phone()))
        await closedLoop(Math.min(20, p.requests), c, async () => void (await boss.send(BASELINE_QUEUE, { callId: randomUUID() })))
        const api = await closedLoop(p.requests, c, () => postCall(stack.base, phone()))
        const bare = await closedLoop(p.requests, c, async () => {
          if (!(await boss.send(BASELINE_QUEUE, { callId: randomUUID() }))) throw new Error('pg-boss refused a send')
        })
        const apiRate = (p.requests / api.wallMs) * 1000
        const bareRate = (p.requests / bare.wallMs) * 1000
        const a = summarize(api.latencies)
        const b = summarize(bare.latencies)
        figures.push(
          { measure: `POST /calls, ${clients}`, value: apiRate, unit: 'req/s' },
          { measure: `POST /calls latency, ${clients}`, value: a.median, p99: a.p99, unit: 'ms' },
          { measure: `bare pg-boss send, ${clients}`, value: bareRate, unit: 'sends/s' },
          { measure: `bare pg-boss send latency, ${clients}`, value: b.median, p99: b.p99, unit: 'ms' },
          { measure: `POST /calls ÷ bare send, ${clients}`, value: round(apiRate / bareRate), unit: 'ratio', target: { op: '>=', value: 0.7 } },
        )
      } finally {
        await boss.stop({ graceful: false, close: true })
      }
    }

    ctx.log(`create: ${p.batches} batches of ${p.batchSize}, POST /calls/batch and a bare INSERT alternating`)
    const batchBody = () => JSON.stringify({ calls: Array.from({ length: p.batchSize }, () => ({ to: phone(), scriptId: 'bench', metadata: { source: 'bench' } })) })
    const postBatch = async (body: string) => {
      const res = await fetch(`${stack.base}/calls/batch`, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
      const answer = (await res.json()) as { created?: number }
      if (res.status !== 201 || answer.created !== p.batchSize) throw new Error(`POST /calls/batch answered ${res.status}, created ${answer.created}`)
    }
    // The same rows the batch makes, minus what only the service knows (jobs, time zones looked up, events).
    const bareInsert = async () => {
      const rows = Array.from({ length: p.batchSize }, () => ({ id: randomUUID(), phone: phone() }))
      await sql`
        INSERT INTO calls (id, phone, script_id, metadata, expires_at, time_zones)
        SELECT r.id, r.phone, 'bench', '{"source":"bench"}', now() + interval '1 day', '{America/New_York}'
        FROM jsonb_to_recordset(${sql.json(rows)}) AS r(id uuid, phone text)`
    }
    await postBatch(batchBody())
    await bareInsert()
    const apiMs: number[] = []
    const bareMs: number[] = []
    for (let i = 0; i < p.batches; i++) {
      const body = batchBody()
      let t0 = performance.now()
      await postBatch(body)
      apiMs.push(performance.now() - t0)
      t0 = performance.now()
      await bareInsert()
      bareMs.push(performance.now() - t0)
    }
    const rowsPerSecond = (ms: number[]) => (p.batchSize * ms.length * 1000) / ms.reduce((x, y) => x + y, 0)
    const a = summarize(apiMs)
    figures.push(
      { measure: `POST /calls/batch of ${p.batchSize}`, value: rowsPerSecond(apiMs), unit: 'rows/s' },
      { measure: `POST /calls/batch of ${p.batchSize}, request time`, value: a.median, p99: a.p99, unit: 'ms' },
      { measure: `bare multi-row INSERT of ${p.batchSize}`, value: rowsPerSecond(bareMs), unit: 'rows/s' },
      { measure: 'batch ÷ bare INSERT', value: round(rowsPerSecond(apiMs) / rowsPerSecond(bareMs)), unit: 'ratio', target: { op: '>=', value: 0.5 } },
    )
    const stats = stack.sim.stats()
    return {
      scenario: 'create',
      params: { ...p, apiPoolMax: API_POOL_MAX, baselinePoolMax: 'min(clients, 10)' },
      figures,
      provider: providerRecord(stats),
      violations: violations(stats, 30),
      seconds: (performance.now() - started) / 1000,
    }
  } finally {
    await sql.end()
    await stack.stop()
    await database.drop()
  }
}
