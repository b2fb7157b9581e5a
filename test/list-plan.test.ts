import t from 'tap'
import postgres from 'postgres'
import { listCalls } from '../src/store/calls.ts'
import { createTestDatabase } from './support/db.ts'

// GET /calls must stay fast at any depth on millions of rows. Timing is for benchmarks; here
// we check the shape of the plan Postgres picks for the very queries listCalls sends, on enough
// rows that a sequential scan and sort would be the cheaper plan if the indexes did not fit.

t.test('list queries walk an index in order: no sequential scan, no sort', async (t) => {
  const db = await createTestDatabase(t)
  await db.sql`
    INSERT INTO calls (phone, script_id, status, attempts, dial, dial_requests, started_at, ended_at, last_error, created_at)
    SELECT '+1555' || lpad((g % 100000)::text, 7, '0'), 'bulk',
           s.status, CASE WHEN s.status = 'PENDING' THEN 0 ELSE 1 END, CASE WHEN s.status = 'PENDING' THEN 0 ELSE 1 END,
           CASE WHEN s.status = 'PENDING' THEN 0 ELSE 1 END,
           CASE WHEN s.status = 'PENDING' THEN NULL ELSE now() END,
           CASE WHEN s.status IN ('PENDING', 'IN_PROGRESS') THEN NULL ELSE now() END,
           CASE WHEN s.status = 'FAILED' THEN 'x' END,
           now() - make_interval(secs => g)
    FROM generate_series(1, 200000) g
    CROSS JOIN LATERAL (SELECT (ARRAY['PENDING','COMPLETED','FAILED','EXPIRED'])[1 + g % 4]::call_status AS status) s`
  await db.sql`ANALYZE calls`

  const captured: Array<{ query: string; params: unknown[] }> = []
  const spy = postgres(db.url, { max: 1, onnotice: () => {}, debug: (_c, query, params) => captured.push({ query, params: params as unknown[] }) })
  t.teardown(() => spy.end())
  const [deep] = await db.sql<{ id: string }[]>`SELECT id FROM calls ORDER BY created_at DESC, id DESC OFFSET 150000 LIMIT 1`

  const cases = [
    { name: 'first page', q: { limit: 21 } },
    { name: 'deep page', q: { limit: 21, after: deep!.id } },
    { name: 'first page by status', q: { limit: 21, status: 'FAILED' as const } },
    { name: 'deep page by status', q: { limit: 21, status: 'FAILED' as const, after: deep!.id } },
  ]
  for (const c of cases) {
    captured.length = 0
    const { rows } = await listCalls(spy, c.q)
    t.equal(rows.length, 21, `${c.name}: a full page`)
    const list = captured.find((x) => /ORDER BY created_at DESC, id DESC/.test(x.query))!
    const plan = (await db.sql.unsafe(`EXPLAIN ${list.query}`, list.params as never[])).map((r) => r['QUERY PLAN']).join('\n')
    t.notMatch(plan, /Seq Scan on calls/, `${c.name}: no sequential scan`)
    t.notMatch(plan, /Sort/, `${c.name}: no sort`)
    t.match(plan, /Index (Only )?Scan( Backward)? using calls_(status_)?created_idx/, `${c.name}: walks the list index`)
  }
})
