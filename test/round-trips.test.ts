import t from 'tap'
import dc from 'node:diagnostics_channel'
import { createHarness } from './support/harness.ts'
import { newPhone } from './support/factory.ts'

// Round trips to PostgreSQL on the hot paths (README "Performance"). Every statement of a
// transaction is awaited before the next is made (src/db/sql.ts, Tx), so each statement sent,
// BEGIN and COMMIT included, is a round trip of its own. They are counted as postgres.js
// publishes them on its `postgres:query` tracing channel, for the test's own database only.

function countStatements(database: string) {
  const counter = { statements: [] as string[] }
  const onStart = (message: unknown) => {
    const x = message as { database?: string; query?: string }
    if (x.database === database) counter.statements.push((x.query ?? '').trim().split(/\s+/).slice(0, 3).join(' '))
  }
  dc.subscribe('tracing:postgres:query:start', onStart)
  return { counter, restore: () => dc.unsubscribe('tracing:postgres:query:start', onStart) }
}

t.test('POST /calls for a number with no calling rules: five round trips', async (t) => {
  const h = await createHarness(t)
  const { counter, restore } = countStatements(h.name)
  t.teardown(restore)
  t.equal((await h.call('POST', '/calls', { to: newPhone(), scriptId: 's' })).status, 201)
  counter.statements = []
  const res = await h.call('POST', '/calls', { to: newPhone(), scriptId: 's' })
  t.equal(res.status, 201)
  t.equal(counter.statements.length, 5, `BEGIN; the do-not-call list and the clock; the job; the call, which wakes the workers; COMMIT (${counter.statements.join(' | ')})`)
  t.match(counter.statements[0], /^begin/i)
  t.match(counter.statements.at(-1), /^commit/i)
  const [row] = await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM calls WHERE id = ${res.body.id} AND job_id IS NOT NULL`
  t.equal(row!.n, 1, 'committed, with its job')
})
