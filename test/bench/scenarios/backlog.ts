import type postgres from 'postgres'
import { closedLoop, round, summarize, type Summary } from '../measure.ts'
import type { Figure, Scenario } from '../report.ts'
import { drain, phoneNumber, postCall, providerRecord, resourcesBetween, startStack, violations } from '../stack.ts'

// 4. Backlog. The same reads and the same claim with a small and a large calls table (10
// thousand and a million; 10 and 50 thousand with --quick), grown in place on one database:
//   - claim latency: a call POSTed to an idle worker, from its created_at to its started_at;
//   - GET /calls?status=PENDING&limit=100, the first page and a full page 90% of the way down;
//   - GET /metrics.
// The rows are written by SQL (as counts.bench.ts does), most of them final: 88% COMPLETED, 8%
// FAILED, 2% EXPIRED, 2% PENDING, each with the columns its CHECK constraints require (see
// test/support/factory.ts), and each with the pg-boss job it would have: completed for a final
// call, waiting a day ahead for a pending one (so no worker dials it). What the fill does not
// write: dial records, callbacks and events of the final calls.

const LIMIT = 30
const CHUNK = 100_000

async function fill(sql: postgres.Sql, from: number, to: number) {
  for (let lo = from; lo < to; lo += CHUNK) {
    const hi = Math.min(to, lo + CHUNK) - 1
    await sql.begin(async (tx) => {
      await tx`
        INSERT INTO calls (id, phone, script_id, metadata, status, attempts, dial, dial_requests, started_at, dialed_at, ended_at,
                           provider_call_id, provider_status, last_error, expires_at, time_zones, job_id, created_at, updated_at)
        SELECT gen_random_uuid(), '+1555' || lpad(g::text, 7, '0'), 'backlog', '{}', s.status,
               s.tried, s.tried, s.tried,
               CASE WHEN s.tried = 1 THEN t.created + interval '1 second' END,
               CASE WHEN s.tried = 1 THEN t.created + interval '2 seconds' END,
               CASE WHEN s.status <> 'PENDING' THEN t.created + interval '1 minute' END,
               CASE WHEN s.tried = 1 THEN 'prov-' || g END,
               CASE s.status WHEN 'COMPLETED' THEN 'COMPLETED' WHEN 'FAILED' THEN 'BUSY' END,
               CASE s.status WHEN 'FAILED' THEN 'provider reported BUSY' WHEN 'EXPIRED' THEN 'expired before it could be dialed' END,
               now() + interval '2 days', '{America/New_York}', gen_random_uuid(), t.created, t.created
        FROM generate_series(${lo}::int, ${hi}::int) g,
             LATERAL (SELECT CASE WHEN g % 50 = 0 THEN 'PENDING' WHEN g % 50 <= 4 THEN 'FAILED' WHEN g % 50 = 5 THEN 'EXPIRED' ELSE 'COMPLETED' END::call_status AS status) s0,
             LATERAL (SELECT s0.status, CASE WHEN s0.status IN ('COMPLETED', 'FAILED') THEN 1 ELSE 0 END AS tried) s,
             LATERAL (SELECT now() - interval '30 days' + g * interval '1 second' AS created) t`
      await tx`
        INSERT INTO pgboss.job (id, name, data, state, singleton_key, policy, retry_limit, expire_seconds, deletion_seconds,
                                start_after, created_on, started_on, completed_on, keep_until)
        SELECT c.job_id, q.name, jsonb_build_object('callId', c.id),
               CASE WHEN c.status = 'PENDING' THEN 'created' ELSE 'completed' END::pgboss.job_state,
               c.phone, q.policy, q.retry_limit, q.expire_seconds, q.deletion_seconds,
               CASE WHEN c.status = 'PENDING' THEN now() + interval '1 day' ELSE c.created_at END,
               c.created_at, c.started_at, c.ended_at, now() + interval '14 days'
        FROM calls c, pgboss.queue q
        WHERE q.name = 'calls' AND c.script_id = 'backlog'
          AND c.phone BETWEEN ${phoneNumber('555', lo)} AND ${phoneNumber('555', hi)}`
    })
  }
  await sql`VACUUM ANALYZE calls`
  await sql`VACUUM ANALYZE pgboss.job`
}

async function timedGets(url: string, count: number): Promise<Summary> {
  const get = async () => {
    const res = await fetch(url)
    await res.arrayBuffer()
    if (!res.ok) throw new Error(`GET ${url} answered ${res.status}`)
  }
  await closedLoop(5, 1, get)
  return summarize((await closedLoop(count, 1, get)).latencies)
}

export const backlog: Scenario = async (ctx) => {
  const started = performance.now()
  const p = ctx.quick ? { sizes: [10_000, 50_000], claims: 40, reads: 50, workers: 2 } : { sizes: [10_000, 1_000_000], claims: 200, reads: 200, workers: 2 }
  const database = await ctx.database('backlog')
  const stack = await startStack({ url: database.url, workers: p.workers, limit: LIMIT, callMs: 0 })
  const sql = stack.sql
  const before = stack.usage()
  let rows = 0
  let posted = 0
  const measured: Array<Record<'claim' | 'first' | 'deep' | 'metrics', Summary>> = []
  try {
    for (const size of p.sizes) {
      ctx.log(`backlog: filling the calls table to ${size} rows`)
      await fill(sql, rows, size)
      rows = size
      ctx.log(`backlog: ${p.claims} claims and ${p.reads} of each read at ${size} rows`)
      // A few claims first, not measured: the first after a fill pays for cold caches and plans.
      await closedLoop(8, 4, () => postCall(stack.base, phoneNumber('888', posted++)))
      await drain(sql, 60_000)
      const since = new Date()
      await closedLoop(p.claims, 4, () => postCall(stack.base, phoneNumber('888', posted++)))
      await drain(sql, 60_000)
      const claim = summarize(
        (await sql<{ ms: number }[]>`
          SELECT extract(epoch FROM started_at - created_at)::float8 * 1000 AS ms FROM calls
          WHERE script_id = 'bench' AND created_at >= ${since}`).map((r) => r.ms),
      )
      const [deep] = await sql<{ id: string }[]>`
        SELECT id FROM calls WHERE status = 'PENDING' ORDER BY created_at DESC, id DESC
        OFFSET (SELECT least(count(*) * 9 / 10, count(*) - 101) FROM calls WHERE status = 'PENDING') LIMIT 1`
      const list = `${stack.base}/calls?status=PENDING&limit=100`
      measured.push({
        claim,
        first: await timedGets(list, p.reads),
        deep: await timedGets(`${list}&cursor=${Buffer.from(deep!.id).toString('base64url')}`, p.reads),
        metrics: await timedGets(`${stack.base}/metrics`, p.reads),
      })
    }
    const label = (n: number) => (n >= 1_000_000 ? `${n / 1_000_000}M` : `${n / 1000}k`)
    const [small, large] = p.sizes.map(label) as [string, string]
    const names = { claim: 'claim latency (created → started)', first: 'GET /calls?status=PENDING, first page', deep: 'GET /calls?status=PENDING, page 90% down', metrics: 'GET /metrics' }
    const figures: Figure[] = []
    for (const key of ['claim', 'first', 'deep', 'metrics'] as const) {
      const [a, b] = [measured[0]![key], measured[1]![key]]
      figures.push(
        { measure: `${names[key]}, ${small} rows`, value: a.median, p99: a.p99, unit: 'ms' },
        { measure: `${names[key]}, ${large} rows`, value: b.median, p99: b.p99, unit: 'ms', ...(key === 'metrics' ? { target: { op: '<=', value: 50 }, targetOn: 'p99' as const } : {}) },
        { measure: `${names[key]}, ${large} ÷ ${small} (medians)`, value: round(b.median / a.median), unit: 'ratio', target: { op: '<=', value: 1.5 } },
      )
    }
    const stats = stack.sim.stats()
    const broken = violations(stats, LIMIT)
    const { lost } = await drain(sql, 1)
    if (lost) broken.push(`${lost} of ${posted} calls did not complete`)
    if (stats.accepted !== posted) broken.push(`provider placed ${stats.accepted} calls for ${posted} created (the backlog's pending calls must wait)`)
    // Peak memory with the large table (the reads above); the CPU is the whole scenario's, the fill included, so not per call.
    const resources = resourcesBetween(before, stack.usage())
    return { scenario: 'backlog', params: p, figures, provider: providerRecord(stats), violations: broken, resources, seconds: (performance.now() - started) / 1000 }
  } finally {
    await stack.stop()
    await database.drop()
  }
}
