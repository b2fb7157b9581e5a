import fc from 'fast-check'
import t from 'tap'
import { foldStatusCounts } from '../src/store/calls.ts'
import type { Sql } from '../src/store/sql.ts'
import { insertCall } from './support/factory.ts'
import { createHarness } from './support/harness.ts'

// Calls by status come from counters that statement triggers keep (sql/006), not from a scan of
// the calls table. Checked against count(*) GROUP BY status after random operations, after many
// concurrent writers (some of them rolled back) and folds, and shown not to read calls at all.

const STATUSES = ['PENDING', 'IN_PROGRESS', 'COMPLETED', 'FAILED', 'EXPIRED', 'SUPPRESSED', 'CANCELLED'] as const

async function both(sql: Sql) {
  const counted = await sql<{ status: string; n: number }[]>`SELECT status, count(*)::int AS n FROM calls GROUP BY status ORDER BY status`
  const kept = await sql<{ status: string; n: number }[]>`SELECT status, calls::int AS n FROM call_counts WHERE calls <> 0 ORDER BY status`
  return { counted: counted.map((r) => `${r.status}=${r.n}`), kept: kept.map((r) => `${r.status}=${r.n}`) }
}

/** A status change the constraints allow, straight in SQL (the app's own paths are tested elsewhere). */
const endAs = (status: string) => `UPDATE calls SET status = '${status}', ended_at = now(), last_error = 'test', claimed_by = NULL, next_attempt_at = NULL, waiting_for = NULL`

t.test('random operations: the counters agree with the table after each one', async (t) => {
  const h = await createHarness(t)
  const op = fc.oneof(
    fc.record({ kind: fc.constant('insert' as const), status: fc.constantFrom('PENDING', 'IN_PROGRESS', 'COMPLETED', 'FAILED', 'EXPIRED' as const), n: fc.integer({ min: 1, max: 3 }) }),
    fc.record({ kind: fc.constant('batch' as const), n: fc.integer({ min: 1, max: 20 }) }),
    fc.record({ kind: fc.constant('end' as const), status: fc.constantFrom('FAILED', 'EXPIRED', 'SUPPRESSED', 'CANCELLED') }),
    fc.record({ kind: fc.constant('cancel' as const) }),
    fc.record({ kind: fc.constant('delete' as const) }),
    fc.record({ kind: fc.constant('noop' as const) }),
    fc.record({ kind: fc.constant('fold' as const) }),
  )
  await fc.assert(
    fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 12 }), async (ops) => {
      for (const o of ops) {
        switch (o.kind) {
          case 'insert':
            for (let i = 0; i < o.n; i++) await insertCall(h, { status: o.status })
            break
          case 'batch':
            await h.call('POST', '/calls/batch', { calls: Array.from({ length: o.n }, (_, i) => ({ to: `+1555700${String(i).padStart(4, '0')}`, scriptId: 'x' })) })
            break
          case 'end':
            // Several rows in one statement, of mixed statuses.
            await h.sql.unsafe(`${endAs(o.status)} WHERE id IN (SELECT id FROM calls WHERE status = 'PENDING' LIMIT 3)`)
            break
          case 'cancel': {
            const [row] = await h.sql<{ id: string }[]>`SELECT id FROM calls WHERE status = 'PENDING' LIMIT 1`
            if (row) await h.call('POST', `/calls/${row.id}/cancel`)
            break
          }
          case 'delete':
            await h.sql`DELETE FROM call_dials WHERE call_id IN (SELECT id FROM calls WHERE status = 'EXPIRED' AND batch_id IS NULL LIMIT 2)`
            await h.sql`DELETE FROM events WHERE call_id IN (SELECT id FROM calls WHERE status = 'EXPIRED' AND batch_id IS NULL LIMIT 2)`
            await h.sql`DELETE FROM calls WHERE id IN (SELECT id FROM calls WHERE status = 'EXPIRED' AND batch_id IS NULL LIMIT 2)`
            break
          case 'noop':
            await h.sql`UPDATE calls SET updated_at = now() WHERE status = 'PENDING'`
            break
          case 'fold':
            await foldStatusCounts(h.sql)
            break
        }
        const { counted, kept } = await both(h.sql)
        if (JSON.stringify(counted) !== JSON.stringify(kept)) throw new Error(`after ${JSON.stringify(o)}: table ${counted}, counters ${kept}`)
      }
    }),
    { numRuns: 25 },
  )
  t.pass('the counters agreed with the table after every operation')
  await h.sql`TRUNCATE calls CASCADE`
  t.same(await both(h.sql), { counted: [], kept: [] }, 'TRUNCATE resets them')
})

t.test('40 concurrent writers, some rolled back, and folds meanwhile: still exact', async (t) => {
  const h = await createHarness(t)
  for (let i = 0; i < 200; i++) await insertCall(h)
  const writer = async (w: number) => {
    for (let round = 0; round < 10; round++) {
      await h.sql
        .begin(async (tx) => {
          const status = STATUSES[2 + ((w + round) % 5)]!
          await tx.unsafe(`${endAs(status)} WHERE id IN (SELECT id FROM calls WHERE status = 'PENDING' ORDER BY random() LIMIT 2 FOR UPDATE SKIP LOCKED)`)
          await tx`INSERT INTO calls (id, job_id, phone, script_id, metadata, expires_at) VALUES (gen_random_uuid(), gen_random_uuid(), ${`+1555800${String(w).padStart(4, '0')}`}, 'x', '{}', now() + interval '1 day')`
          if ((w + round) % 4 === 0) throw new Error('roll back')
        })
        .catch((err: Error) => {
          if (err.message !== 'roll back') throw err
        })
      if (round % 3 === 0) await foldStatusCounts(h.sql)
    }
  }
  await Promise.all(Array.from({ length: 40 }, (_, w) => writer(w)))
  const { counted, kept } = await both(h.sql)
  t.same(kept, counted, 'the counters match count(*) GROUP BY status')
  t.ok(counted.length > 3, `several statuses (${counted.join(', ')})`)
  const folded = await foldStatusCounts(h.sql)
  t.ok(folded >= 0)
  t.same((await both(h.sql)).kept, counted, 'and after a last fold')
  const [left] = await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM call_status_changes`
  t.equal(left!.n, 0, 'a fold leaves no change behind')
})

t.test('reading the counts never reads the calls table', async (t) => {
  const h = await createHarness(t)
  await h.sql`
    INSERT INTO calls (id, job_id, phone, script_id, metadata, expires_at)
    SELECT gen_random_uuid(), gen_random_uuid(), '+1555' || lpad(i::text, 7, '0'), 'x', '{}', now() + interval '1 day'
    FROM generate_series(1, 20000) i`
  await foldStatusCounts(h.sql)
  const plan = (await h.sql.unsafe('EXPLAIN SELECT * FROM call_counts')).map((r) => (r as unknown as { 'QUERY PLAN': string })['QUERY PLAN']).join('\n')
  t.notMatch(plan, /\bon calls\b/, 'the plan has no scan of calls')
  t.match(plan, /call_status_counts/)
  const metrics = await h.call('GET', '/metrics')
  t.equal(metrics.body.calls.PENDING, 20_000)
})
