import t from 'tap'
import { ANALYZE_LOCK } from '../src/store/locks.ts'
import { analyzeStale } from '../src/store/statistics.ts'
import { INJECTED, withFaults } from './support/faults.ts'
import { createHarness } from './support/harness.ts'
import { newPhone } from './support/factory.ts'

// A batch of thousands of calls right after start-up leaves the planner's statistics saying
// the queue is empty; pg-boss's fetch then ran as nested loops over every pair of jobs (8 s a
// claim at 20,000 jobs). The workers' sweep analyzes what changed a lot since it was last
// analyzed, as autovacuum would, when autovacuum has not (the test server runs without it).

t.test('after a large batch, the sweep analyzes the job and call tables once, and the fetch is planned on real numbers', async (t) => {
  const h = await createHarness(t)
  await analyzeStale(h.sql) // whatever the template left
  for (let b = 0; b < 3; b++) {
    const res = await h.call('POST', '/calls/batch', { calls: Array.from({ length: 1000 }, () => ({ to: newPhone(), scriptId: 'stats' })) })
    t.equal(res.status, 201)
  }
  const before = await h.sql<{ rows: number }[]>`SELECT reltuples::int AS rows FROM pg_class WHERE oid = 'pgboss.job_common'::regclass`
  t.ok(before[0]!.rows < 3000, `the planner thinks the queue holds ${before[0]!.rows} jobs`)
  // Statistics are reported to the server asynchronously; give them a moment.
  await h.sql`SELECT pg_stat_force_next_flush()`.catch(() => undefined)
  let analyzed: string[] = []
  for (let i = 0; i < 50 && analyzed.length === 0; i++) {
    analyzed = await analyzeStale(h.sql)
    if (!analyzed.length) await new Promise((r) => setTimeout(r, 100))
  }
  t.ok(analyzed.includes('pgboss.job_common'), `analyzed: ${analyzed.join(', ')}`)
  t.ok(analyzed.includes('public.calls'))
  const after = await h.sql<{ rows: number }[]>`SELECT reltuples::int AS rows FROM pg_class WHERE oid = 'pgboss.job_common'::regclass`
  t.ok(after[0]!.rows >= 2900, `now it knows: ${after[0]!.rows}`)
  t.same(await analyzeStale(h.sql), [], 'and not again until much more changes')
})

t.test('failure injection: a statement of the refresh failing fails it whole and leaves its lock free', async (t) => {
  const h = await createHarness(t)
  await analyzeStale(h.sql)
  const res = await h.call('POST', '/calls/batch', { calls: Array.from({ length: 1000 }, () => ({ to: newPhone(), scriptId: 'stats' })) })
  t.equal(res.status, 201)
  await h.sql`SELECT pg_stat_force_next_flush()`
  const faults = withFaults(h.sql)
  const lockHeld = async () => (await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND objid = ${ANALYZE_LOCK}`)[0]!.n > 0
  // Each statement in turn: the try-lock, the look for stale tables, then each ANALYZE.
  let at = 1
  for (; ; at++) {
    faults.arm(at)
    const failure = await analyzeStale(faults.sql).then(() => undefined, (err: unknown) => err)
    if (!faults.fired) {
      t.equal(failure, undefined, `with no statement failing (${faults.made} made), it runs whole`)
      break
    }
    t.equal((failure as { code?: string } | undefined)?.code, INJECTED, `statement ${at} failing fails the refresh`)
    t.notOk(await lockHeld(), `and leaves the lock free (statement ${at})`)
    if (at > 10) break
  }
  t.ok(at >= 3, `it was made to fail at its try-lock, its look and an ANALYZE (${at - 1} statements)`)
  faults.arm(0)
  t.same(await analyzeStale(h.sql), [], 'nothing stale once it has run whole')
})
