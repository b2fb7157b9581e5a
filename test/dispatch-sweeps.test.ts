import t from 'tap'
import { claimCalls, takeResends, type DispatchPolicy } from '../src/services/dispatch/claim.ts'
import { recordDialResult } from '../src/services/dispatch/record.ts'
import { sweep } from '../src/services/dispatch/sweeps.ts'
import { createHarness, registerWorker, type Harness } from './support/harness.ts'

// The safety sweeps: expiry, timeouts, calls out of requests, failed jobs, and PENDING calls
// that lost their job. None of them depends on a process staying alive.

const policy: DispatchPolicy = {
  maxConcurrentCalls: 30,
  maxAttempts: 3,
  retryBaseSeconds: 1,
  retryMaxSeconds: 1,
  callTimeoutSeconds: 3600,
  leaseMs: 10_000,
  reconcileAfterSeconds: 120,
}

async function create(h: Harness, to: string): Promise<string> {
  const res = await h.call('POST', '/calls', { to, scriptId: 'sweep' })
  return res.body.id
}

const row = async (h: Harness, id: string) =>
  (await h.sql`SELECT c.*, j.state AS job_state FROM calls c LEFT JOIN pgboss.job j ON j.id = c.job_id WHERE c.id = ${id}`)[0]!

const sweepNow = (h: Harness) => sweep(h.sql, h.queue, policy, {})

t.test('a PENDING call past its expiry is EXPIRED by the sweep, its job removed, never dialed', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  const expired = await create(h, '+15554000001')
  const fresh = await create(h, '+15554000002')
  await h.sql`UPDATE calls SET expires_at = now() - interval '1 second' WHERE id = ${expired}`
  const result = await sweepNow(h)
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

t.test('POST with expiresAt: the call expires at that time; without, CALL_TTL_SECONDS from now on the database clock', async (t) => {
  const h = await createHarness(t)
  const at = new Date(Date.now() + 60_000).toISOString()
  const res = await h.call('POST', '/calls', { to: '+15554000004', scriptId: 's', expiresAt: at })
  t.equal(res.status, 201)
  t.equal(res.body.expiresAt, at)
  const plain = await h.call('POST', '/calls', { to: '+15554000014', scriptId: 's' })
  const [ttl] = await h.sql<{ s: number }[]>`SELECT extract(epoch FROM expires_at - created_at)::int AS s FROM calls WHERE id = ${plain.body.id}`
  t.equal(ttl!.s, 86_400)
})

t.test('a dialed call with no final report by its timeout is FAILED and frees its slot and phone', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  const id = await create(h, '+15554000005')
  const { claimed } = await claimCalls(h.sql, h.queue, policy, w, 30)
  await recordDialResult(h.sql, h.queue, policy, claimed[0]!, { kind: 'accepted', providerCallId: 'p-5' })
  t.equal((await sweepNow(h)).timedOut, 0, 'not before the timeout')
  await h.sql`UPDATE calls SET timeout_at = now() - interval '1 second' WHERE id = ${id}`
  t.equal((await sweepNow(h)).timedOut, 1)
  const r = await row(h, id)
  t.equal(r.status, 'FAILED')
  t.equal(r.provider_status, null, 'FAILED on our timeout, not on the provider’s report: a later callback may correct it')
  t.match(r.last_error, /no final report from the provider within 3600 seconds/)
  t.equal(r.job_state, 'completed')
  const next = await create(h, '+15554000005')
  const again = await claimCalls(h.sql, h.queue, policy, w, 30)
  t.same(again.claimed.map((c) => c.id), [next], 'the phone and the slot are free again')
})

t.test('a call held with an unknown outcome times out with a reason that says so', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  const id = await create(h, '+15554000010')
  let [call] = (await claimCalls(h.sql, h.queue, { ...policy, maxAttempts: 1 }, w, 30)).claimed
  const held = await recordDialResult(h.sql, h.queue, { ...policy, maxAttempts: 1 }, call!, { kind: 'unknown', error: 'provider answered 502: bad gateway' })
  t.equal(held.outcome, 'held')
  await h.sql`UPDATE calls SET timeout_at = now() - interval '1 second' WHERE id = ${id}`
  t.equal((await sweepNow(h)).timedOut, 1)
  const r = await row(h, id)
  t.equal(r.status, 'FAILED')
  t.match(r.last_error, /outcome unknown.*502: bad gateway/)
})

t.test('a request whose worker went silent: another worker re-sends it under the same key once its lease lapses', async (t) => {
  const h = await createHarness(t)
  const silent = await registerWorker(h)
  const heir = await registerWorker(h)
  const id = await create(h, '+15554000006')
  await claimCalls(h.sql, h.queue, policy, silent, 30)
  t.same(await takeResends(h.sql, policy, heir, 30), [], 'not while the lease runs')
  await h.sql`UPDATE calls SET next_attempt_at = now() - interval '1 second' WHERE id = ${id}`
  const [taken] = await takeResends(h.sql, policy, heir, 30)
  t.equal(taken?.id, id)
  t.equal(taken!.dial, 1, 'same dial, so the same Idempotency-Key')
  t.equal(taken!.claimed_by, heir)
  const r = await row(h, id)
  t.equal(r.status, 'IN_PROGRESS', 'it kept its slot and its phone throughout')
})

t.test('the last request lapsed: held until the timeout; every request refused: FAILED, never placed', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  const one = { ...policy, maxAttempts: 1 }
  const lapsed = await create(h, '+15554000011')
  const refused = await create(h, '+15554000012')
  const claimed = (await claimCalls(h.sql, h.queue, one, w, 30)).claimed
  const refusedCall = claimed.find((c) => c.id === refused)!
  // A refusal with no attempts left fails the call outright.
  const r1 = await recordDialResult(h.sql, h.queue, one, refusedCall, { kind: 'not_placed', retry: true, error: 'provider answered 429: slow down' })
  t.equal(r1.outcome, 'failed')
  await h.sql`UPDATE calls SET next_attempt_at = now() - interval '1 second' WHERE id = ${lapsed}`
  const swept = await sweep(h.sql, h.queue, one, {})
  t.equal(swept.held, 1)
  const held = await row(h, lapsed)
  t.equal(held.status, 'IN_PROGRESS')
  t.equal(held.claimed_by, null)
  t.equal(held.next_attempt_at, null)
  t.ok(held.outcome_unknown_at && held.timeout_at, 'held until its timeout: the lapsed request may have placed it')
  t.equal((await row(h, refused)).status, 'FAILED')
})

t.test('a job pg-boss failed (all workers down past its expiry) stops blocking its phone once its call has ended', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  const first = await create(h, '+15554000009')
  const [call] = (await claimCalls(h.sql, h.queue, policy, w, 30)).claimed
  await recordDialResult(h.sql, h.queue, policy, call!, { kind: 'accepted', providerCallId: 'p-9' })
  const second = await create(h, '+15554000009')
  // What pg-boss's maintenance does to an active job past expireInSeconds, with retryLimit 0.
  await h.sql`UPDATE pgboss.job SET state = 'failed', completed_on = now() WHERE id = (SELECT job_id FROM calls WHERE id = ${first})`
  t.equal((await sweepNow(h)).unblocked, 0, 'not while its call is still in flight')
  await h.sql`UPDATE calls SET timeout_at = now() - interval '1 second' WHERE id = ${first}`
  const swept = await sweepNow(h)
  t.equal(swept.timedOut, 1, 'the call times out')
  t.equal(swept.unblocked, 1, 'and its failed job is removed')
  const { claimed } = await claimCalls(h.sql, h.queue, policy, w, 30)
  t.same(claimed.map((c) => c.id), [second], 'the phone is free for its next call')
})

t.test('a PENDING call whose job is gone gets a new one and is dialed', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  const lost = await create(h, '+15554000013')
  const kept = await create(h, '+15554000015')
  const { job_id: lostJob } = await row(h, lost)
  // What pg-boss's retention did to queued jobs before waits were bounded below it.
  await h.sql`DELETE FROM pgboss.job WHERE id = ${lostJob}`
  const swept = await sweepNow(h)
  t.equal(swept.requeued, 1)
  const r = await row(h, lost)
  t.not(r.job_id, lostJob)
  t.equal(r.job_state, 'created')
  const keptJob = (await row(h, kept)).job_id
  t.equal((await sweepNow(h)).requeued, 0, 'a call with a waiting job is left alone')
  t.equal((await row(h, kept)).job_id, keptJob)
  const { claimed } = await claimCalls(h.sql, h.queue, policy, w, 30)
  t.same(claimed.map((c) => c.id).sort(), [lost, kept].sort(), 'both are dialed')
})

t.test('the jobless-call walk covers every PENDING call, a batch per sweep', async (t) => {
  const h = await createHarness(t)
  // 1,100 PENDING calls (more than one batch of 500), every job deleted.
  await h.sql`
    INSERT INTO calls (phone, script_id) SELECT '+1555' || lpad(i::text, 7, '0'), 'walk' FROM generate_series(1, 1100) AS i`
  const cursor: { pending?: string | undefined } = {}
  let requeued = 0
  for (let i = 0; i < 3; i++) requeued += (await sweep(h.sql, h.queue, policy, cursor)).requeued
  t.equal(requeued, 1100, 'three sweeps of 500 reach all 1,100')
  const [left] = await h.sql<{ n: number }[]>`
    SELECT count(*)::int AS n FROM calls c LEFT JOIN pgboss.job j ON j.id = c.job_id WHERE j.id IS NULL`
  t.equal(left!.n, 0)
})
