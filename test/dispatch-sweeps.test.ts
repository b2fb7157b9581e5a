import t from 'tap'
import { claimCalls, recordDialResult, sweep, type DispatchPolicy } from '../src/dispatch/outcomes.ts'
import { WORKER_LOCK_CLASS } from '../src/db/locks.ts'
import { createHarness, registerWorker, type Harness } from './support/harness.ts'

// The safety sweeps: expiry, the no-callback timeout, and adoption of a dead worker's calls.

const policy: DispatchPolicy = {
  maxConcurrentCalls: 30,
  maxAttempts: 3,
  retryBaseSeconds: 1,
  retryMaxSeconds: 1,
  callTimeoutSeconds: 3600,
}

async function create(h: Harness, to: string): Promise<string> {
  const res = await h.call('POST', '/calls', { to, scriptId: 'sweep' })
  return res.body.id
}

const row = async (h: Harness, id: string) =>
  (await h.sql`SELECT c.*, j.state AS job_state FROM calls c LEFT JOIN pgboss.job j ON j.id = c.job_id WHERE c.id = ${id}`)[0]!

t.test('a PENDING call past its expiry is EXPIRED by the sweep, its job removed, never dialed', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  const expired = await create(h, '+15554000001')
  const fresh = await create(h, '+15554000002')
  await h.sql`UPDATE calls SET expires_at = now() - interval '1 second' WHERE id = ${expired}`
  const result = await sweep(h.sql, h.queue, policy, w)
  t.equal(result.expired, 1)
  const r = await row(h, expired)
  t.equal(r.status, 'EXPIRED')
  t.ok(r.ended_at)
  t.equal(r.job_state, null, 'its job is gone')
  t.equal((await row(h, fresh)).status, 'PENDING', 'a call within its TTL is untouched')
  const { claimed } = await claimCalls(h.sql, h.queue, policy, w, 30)
  t.same(claimed.map((c) => c.id), [fresh], 'only the live call is claimed')
})

t.test('an expired call met by a claim before the sweep is expired there, not dialed', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  const id = await create(h, '+15554000003')
  await h.sql`UPDATE calls SET expires_at = now() - interval '1 second' WHERE id = ${id}`
  const { claimed } = await claimCalls(h.sql, h.queue, policy, w, 30)
  t.equal(claimed.length, 0)
  const r = await row(h, id)
  t.equal(r.status, 'EXPIRED')
  t.equal(r.attempts, 0)
})

t.test('POST with expiresAt: the call expires at that time', async (t) => {
  const h = await createHarness(t)
  const at = new Date(Date.now() + 60_000).toISOString()
  const res = await h.call('POST', '/calls', { to: '+15554000004', scriptId: 's', expiresAt: at })
  t.equal(res.status, 201)
  t.equal(res.body.expiresAt, at)
})

t.test('a dialed call with no callback within CALL_TIMEOUT_SECONDS is FAILED and frees its slot', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  const id = await create(h, '+15554000005')
  const { claimed } = await claimCalls(h.sql, h.queue, policy, w, 30)
  await recordDialResult(h.sql, h.queue, policy, claimed[0]!, { kind: 'accepted', providerCallId: 'p-5' })
  t.equal((await sweep(h.sql, h.queue, policy, w)).timedOut, 0, 'not before the timeout')
  await h.sql`UPDATE calls SET dialed_at = now() - interval '2 hours', started_at = now() - interval '2 hours' WHERE id = ${id}`
  t.equal((await sweep(h.sql, h.queue, policy, w)).timedOut, 1)
  const r = await row(h, id)
  t.equal(r.status, 'FAILED')
  t.match(r.last_error, /no final callback from the provider within 3600 seconds/)
  t.equal(r.job_state, 'completed')
  const next = await create(h, '+15554000005')
  const again = await claimCalls(h.sql, h.queue, policy, w, 30)
  t.same(again.claimed.map((c) => c.id), [next], 'the phone and the slot are free again')
})

t.test('calls of a dead worker are adopted, calls of a live worker are not', async (t) => {
  const h = await createHarness(t)
  const dead = await registerWorker(h)
  const alive = await registerWorker(h)
  const heir = await registerWorker(h)
  // A live worker holds its liveness lock on a connection of its own.
  const aliveConn = await h.sql.reserve()
  t.teardown(() => aliveConn.release())
  await aliveConn`SELECT pg_advisory_lock(${WORKER_LOCK_CLASS}, ${alive})`

  const a = await create(h, '+15554000006')
  await claimCalls(h.sql, h.queue, policy, dead, 30)
  const b = await create(h, '+15554000007')
  await claimCalls(h.sql, h.queue, policy, alive, 30)
  const c = await create(h, '+15554000008')
  const { claimed } = await claimCalls(h.sql, h.queue, policy, dead, 30)
  await recordDialResult(h.sql, h.queue, policy, claimed[0]!, { kind: 'accepted', providerCallId: 'p-8' })

  const { adopted } = await sweep(h.sql, h.queue, policy, heir)
  t.same(adopted.map((r) => r.id), [a], 'only the dead worker’s undialed call')
  const r = await row(h, a)
  t.equal(r.status, 'IN_PROGRESS', 'it keeps its slot and blocks its phone')
  t.equal(r.claimed_by, heir)
  t.equal(r.attempts, 1, 'same attempt, so the same Idempotency-Key')
  t.equal((await row(h, b)).claimed_by, alive)
  t.equal((await row(h, c)).claimed_by, dead, 'a call the provider accepted just waits for its callback')
})

t.test('a job pg-boss failed (all workers down past its expiry) stops blocking its phone once its call has ended', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  const first = await create(h, '+15554000009')
  await claimCalls(h.sql, h.queue, policy, w, 30)
  const second = await create(h, '+15554000009')
  // What pg-boss's maintenance does to an active job past expireInSeconds, with retryLimit 0.
  await h.sql`UPDATE pgboss.job SET state = 'failed', completed_on = now() WHERE id = (SELECT job_id FROM calls WHERE id = ${first})`
  t.equal((await sweep(h.sql, h.queue, policy, w)).unblocked, 0, 'not while its call is still in flight')
  await h.sql`UPDATE calls SET dialed_at = now() - interval '2 hours', provider_call_id = 'p-9' WHERE id = ${first}`
  const swept = await sweep(h.sql, h.queue, policy, w)
  t.equal(swept.timedOut, 1, 'the call times out')
  t.equal(swept.unblocked, 1, 'and its failed job is removed')
  const { claimed } = await claimCalls(h.sql, h.queue, policy, w, 30)
  t.same(claimed.map((c) => c.id), [second], 'the phone is free for its next call')
})
