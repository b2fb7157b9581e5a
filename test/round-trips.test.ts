import t from 'tap'
import dc from 'node:diagnostics_channel'
import type { CallRow } from '../src/domain/call.ts'
import { claimCalls } from '../src/services/dispatch/claim.ts'
import { recordDialResult } from '../src/services/dispatch/record.ts'
import { POLICY, sendSigned } from './support/callbacks.ts'
import { addEventSink, createHarness, registerWorker, type Harness } from './support/harness.ts'
import { newPhone, postCall } from './support/factory.ts'

// Round trips to PostgreSQL on the hot paths (docs/performance.md). Every statement of a
// transaction is awaited before the next is made (src/store/sql.ts, Tx), so each statement sent,
// BEGIN and COMMIT included, is a round trip of its own. They are counted as postgres.js
// publishes them on its `postgres:query` tracing channel, for the test's own database only.

function countStatements(database: string) {
  const counter = { statements: [] as string[] }
  const onStart = (message: unknown) => {
    const x = message as { database?: string; query?: string }
    if (x.database === database) counter.statements.push((x.query ?? '').trim().split(/\s+/).slice(0, 3).join(' '))
  }
  dc.subscribe('tracing:postgres:query:start', onStart)
  return { counter, restore: () => void dc.unsubscribe('tracing:postgres:query:start', onStart) }
}

t.test('POST /calls for a number with no calling rules: five round trips in its transaction, and one read after', async (t) => {
  const h = await createHarness(t)
  const { counter, restore } = countStatements(h.name)
  t.teardown(restore)
  t.equal((await h.call('POST', '/calls', { to: newPhone(), scriptId: 's' })).status, 201)
  counter.statements = []
  const res = await h.call('POST', '/calls', { to: newPhone(), scriptId: 's' })
  t.equal(res.status, 201)
  t.equal(counter.statements.length, 6, `BEGIN; the do-not-call list and the clock; the job; the call, which wakes the workers; COMMIT; then what holds it back, for its waitingFor (${counter.statements.join(' | ')})`)
  t.match(counter.statements[0], /^begin/i)
  t.match(counter.statements[4], /^commit/i)
  t.match(counter.statements[5], /^select s.paused/i, 'after the commit: paused, the free slots, its number in flight')
  const [row] = await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM calls WHERE id = ${res.body.id} AND job_id IS NOT NULL`
  t.equal(row!.n, 1, 'committed, with its job')
})

/**
 * The statements of an accepted dial, then of the completed callback that ends the call, each
 * counted on warm connections (one of each first), with each one's statements.
 */
async function dialAndCallback(t: Parameters<typeof createHarness>[0], h: Harness) {
  const worker = await registerWorker(h)
  const warm = await dialedCall(h, worker)
  await sendSigned(h, warm.id, { callId: warm.provider_call_id, status: 'COMPLETED' })
  const call = await claimed(h, worker)
  const { counter, restore } = countStatements(h.name)
  t.teardown(restore)
  await recordDialResult(h.sql, h.queue, POLICY, call, { kind: 'accepted', providerCallId: 'p-counted' })
  const accepted = counter.statements
  counter.statements = []
  const res = await sendSigned(h, call.id, { callId: 'p-counted', status: 'COMPLETED', durationSec: 30 })
  return { call, accepted, completed: counter.statements, status: res.status }
}

t.test('an accepted dial and the completed callback that ends the call, with no event endpoint: five and twelve', async (t) => {
  const h = await createHarness(t)
  const { accepted, completed, status } = await dialAndCallback(t, h)
  t.equal(accepted.length, 5, `accepted: BEGIN; the call; its dial; the event targets (none: no event is written); COMMIT (${accepted.join(' | ')})`)
  t.equal(status, 200)
  t.equal(completed.length, 12, `completed: a delivery seen before?; BEGIN; the claim lock; the call; seen before, under its lock; the update; its dial; the callback kept; the job completed; the workers woken; the event targets (none: no event is written); COMMIT (${completed.join(' | ')})`)
})

t.test('the same with an event endpoint: nine and sixteen, the events written in the same transactions', async (t) => {
  const h = await createHarness(t)
  await addEventSink(h)
  const { call, accepted, completed, status } = await dialAndCallback(t, h)
  t.equal(status, 200)
  // Over the counts without an endpoint: its dials, read for the body; the event with its delivery; the delivery job; the delivery loops woken.
  t.same([accepted.length, completed.length], [9, 16], `accepted and completed, each with its event (${[...accepted, '||', ...completed].join(' | ')})`)
  t.equal((await h.sql`SELECT count(*)::int AS n FROM events WHERE call_id = ${call.id}`)[0]!.n, 2, 'call.dialed and call.completed written')
})

async function claimed(h: Harness, worker: number): Promise<CallRow> {
  const { id } = await postCall(h, { to: newPhone() })
  const { claimed } = await claimCalls(h.sql, h.queue, POLICY, worker, 30)
  return claimed.find((c) => c.id === id)!
}

async function dialedCall(h: Harness, worker: number): Promise<CallRow> {
  const call = await claimed(h, worker)
  return (await recordDialResult(h.sql, h.queue, POLICY, call, { kind: 'accepted', providerCallId: `p-${call.id}` })).call!
}
