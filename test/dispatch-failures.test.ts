import t from 'tap'
import { createServer } from 'node:net'
import { claimCalls, takeResends, type DispatchPolicy } from '../src/services/dispatch/claim.ts'
import { createProviderClient } from '../src/provider/client.ts'
import { recordDialResult } from '../src/services/dispatch/record.ts'
import { callbackPath } from './support/callbacks.ts'
import { startFakeProvider, type Answer } from './support/fake-provider.ts'
import { createHarness, registerWorker, WEBHOOK_SECRET, type Harness } from './support/harness.ts'

// What each provider answer does to a call: its status, its slot, the key of its next request,
// its backoff and lastError. The rule: only a 2xx with a call id or a refusal (4xx, or a
// connection that never got to send) moves a call on; anything that may have placed the call
// keeps it IN_PROGRESS and re-sends it under the same Idempotency-Key.

const policy: DispatchPolicy = {
  maxConcurrentCalls: 30,
  maxAttempts: 3,
  retryBaseSeconds: 10,
  retryMaxSeconds: 60,
  callTimeoutSeconds: 600,
  leaseMs: 10_000,
  reconcileAfterSeconds: 120,
}

/**
 * Sends the call's next request against `url` and records the answer: the first request comes
 * from a claim, later ones from takeResends once their backoff is made to be over. Returns the
 * call row afterwards with its job's state.
 */
async function send(h: Harness, workerId: number, url: string, callId?: string, timeoutMs = 2_000, signal?: AbortSignal) {
  if (!callId) {
    const created = await h.call('POST', '/calls', { to: '+15550000001', scriptId: 'flow', metadata: { k: 'v' } })
    callId = created.body.id as string
  }
  // Time passing: the backoff is over.
  await h.sql`UPDATE calls SET next_attempt_at = now() WHERE id = ${callId} AND status = 'IN_PROGRESS'`
  const { claimed } = await claimCalls(h.sql, h.queue, policy, workerId, 30)
  const call = claimed.find((c) => c.id === callId) ?? (await takeResends(h.sql, policy, workerId, 30)).find((c) => c.id === callId)
  if (!call) throw new Error('no request was due for the call')
  const provider = createProviderClient({ baseUrl: url, apiKey: 'prov-key', timeoutMs, publicBaseUrl: 'http://127.0.0.1:9', callbackSecret: WEBHOOK_SECRET })
  const result = await provider.dial({ callId, dial: call.dial, to: call.phone, scriptId: call.script_id, metadata: call.metadata }, signal)
  const outcome = await recordDialResult(h.sql, h.queue, policy, call, result)
  const [row] = await h.sql`
    SELECT c.*, j.state AS job_state, now() AS db_now
    FROM calls c LEFT JOIN pgboss.job j ON j.id = c.job_id WHERE c.id = ${callId}`
  return { callId, outcome: outcome.outcome, result, row: row! }
}

async function scripted(t: { teardown(fn: () => Promise<void> | void): void }, ...answers: Answer[]) {
  return startFakeProvider(t, (_req, n) => answers[Math.min(n, answers.length) - 1]!)
}

async function inFlight(h: Harness) {
  const [row] = await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM calls WHERE status = 'IN_PROGRESS'`
  return row!.n
}

/** Seconds from the database's now() to the call's next request. */
// From the transaction that scheduled it (updated_at is its now()), not from a later read, which
// a busy machine can delay.
const backoffSeconds = (row: Record<string, any>) => (row.next_attempt_at.getTime() - row.updated_at.getTime()) / 1000

t.test('202 with a callId: the request follows the contract and the call is dialed', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  const fake = await scripted(t, { status: 202, body: { callId: 'prov-1' } })
  const { callId, outcome, row } = await send(h, w, fake.url)
  t.equal(outcome, 'dialed')
  t.equal(row.status, 'IN_PROGRESS')
  t.equal(row.provider_call_id, 'prov-1')
  t.ok(row.dialed_at)
  t.equal(row.claimed_by, null, 'no request under way any more')
  t.equal(row.next_attempt_at, null)
  t.ok(row.timeout_at > row.db_now, 'waits for the final report until its timeout')
  t.ok(row.reconcile_at > row.db_now, 'and will ask the provider if the callback does not come')
  t.equal(row.job_state, 'active', 'the job stays active while the call is in flight')
  const req = fake.received[0]!
  t.equal(req.headers['idempotency-key'], `${callId}:1`)
  t.equal(req.headers.authorization, 'Bearer prov-key')
  t.match(req.headers['content-type'], /application\/json/)
  t.same(req.body, {
    to: '+15550000001',
    scriptId: 'flow',
    metadata: { k: 'v' },
    webhookUrl: `http://127.0.0.1:9${callbackPath(callId)}`,
  })
})

t.test('5xx: unknown outcome; the call keeps its slot and is re-sent under the same key after a backoff', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  const fake = await scripted(t, { status: 502, body: { error: 'bad gateway' } }, { status: 202, body: { callId: 'prov-2' } })
  const first = await send(h, w, fake.url)
  t.equal(first.result.kind, 'unknown')
  t.equal(first.outcome, 'resend')
  t.equal(first.row.status, 'IN_PROGRESS', 'still in flight: the provider may have placed it')
  t.equal(first.row.attempts, 1)
  t.ok(first.row.outcome_unknown_at, 'marked as possibly placed')
  t.match(first.row.last_error, /502.*bad gateway/)
  const delay = backoffSeconds(first.row)
  t.ok(delay >= 5 && delay <= 10.5, `first backoff within [base/2, base] on the database's clock (was ${delay} s)`)
  t.equal(first.row.job_state, 'active', 'its job stays active, so its phone stays blocked')
  t.equal(await inFlight(h), 1, 'the slot is still held')
  t.equal(toResourceNextAttempt(await h.call('GET', `/calls/${first.callId}`)), first.row.next_attempt_at.toISOString(), 'clients see when the next request goes out')

  const second = await send(h, w, fake.url, first.callId)
  t.equal(second.outcome, 'dialed')
  t.equal(second.row.attempts, 2, 'every request counts as an attempt')
  t.equal(second.row.dial, 1, 'but it is still the same provider call')
  t.same(fake.received.map((r) => r.headers['idempotency-key']), [`${first.callId}:1`, `${first.callId}:1`], 'the same key both times')
  t.same(fake.received[0]!.body, fake.received[1]!.body, 'and the same body')
})

const toResourceNextAttempt = (res: { body: { nextAttemptAt: string | null } }) => res.body.nextAttemptAt

t.test('timeout after sending: unknown outcome, re-sent under the same key', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  const fake = await scripted(t, { status: 202, body: { callId: 'late' }, delayMs: 3_000 }, { status: 202, body: { callId: 'late' } })
  const first = await send(h, w, fake.url, undefined, 300)
  t.equal(first.outcome, 'resend')
  t.equal(first.row.status, 'IN_PROGRESS')
  t.match(first.row.last_error, /no answer within 300 ms/)
  t.ok(first.row.outcome_unknown_at)
  const second = await send(h, w, fake.url, first.callId, 2_000)
  t.equal(second.outcome, 'dialed')
  t.equal(second.row.provider_call_id, 'late', 'the provider answered the repeat with the call it had placed')
})

t.test('timeout with the worker\'s shutdown signal attached: still a timeout', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  const fake = await scripted(t, { status: 504, body: 'too late', delayMs: 5_000 })
  const { row } = await send(h, w, fake.url, undefined, 300, new AbortController().signal)
  t.equal(row.status, 'IN_PROGRESS')
  t.match(row.last_error, /no answer within 300 ms/)
})

t.test('a connection dropped after sending: unknown outcome', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  const server = createServer((socket) => socket.once('data', () => socket.destroy()))
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.teardown(() => server.close())
  const { result, row } = await send(h, w, `http://127.0.0.1:${(server.address() as { port: number }).port}`)
  t.equal(result.kind, 'unknown')
  t.equal(row.status, 'IN_PROGRESS')
  t.ok(row.outcome_unknown_at)
})

t.test('connection refused: not placed, re-sent later, and FAILED once no attempts are left', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  // A port that was free a moment ago and has nobody listening now.
  const probe = createServer()
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r))
  const port = (probe.address() as { port: number }).port
  await new Promise<void>((r) => probe.close(() => r()))
  const url = `http://127.0.0.1:${port}`
  const first = await send(h, w, url)
  t.equal(first.result.kind, 'not_placed')
  t.equal(first.outcome, 'resend')
  t.equal(first.row.status, 'IN_PROGRESS')
  t.equal(first.row.outcome_unknown_at, null, 'the provider cannot have seen it')
  t.match(first.row.last_error, /unreachable.*ECONNREFUSED/)
  await send(h, w, url, first.callId)
  const third = await send(h, w, url, first.callId)
  t.equal(third.outcome, 'failed', 'never placed: the slot can go')
  t.equal(third.row.status, 'FAILED')
  t.equal(third.row.attempts, 3)
  t.match(third.row.last_error, /ECONNREFUSED.*no attempts left/)
  t.equal(third.row.job_state, 'completed')
  t.equal(await inFlight(h), 0)
})

t.test('MAX_ATTEMPTS reached after an unknown outcome: held until its final report or the timeout, not FAILED', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  const fake = await scripted(t, { status: 500, body: 'boom' }, { status: 429, body: 'slow down' }, { status: 500, body: 'boom' })
  const first = await send(h, w, fake.url)
  const second = await send(h, w, fake.url, first.callId)
  t.equal(second.row.status, 'IN_PROGRESS')
  t.equal(second.row.attempts, 2)
  const secondDelay = backoffSeconds(second.row)
  t.ok(secondDelay >= 10 && secondDelay <= 20.5, `the backoff doubles (was ${secondDelay} s)`)
  const third = await send(h, w, fake.url, first.callId)
  t.equal(third.outcome, 'held')
  t.equal(third.row.status, 'IN_PROGRESS', 'the provider may be ringing: slot and phone stay held')
  t.equal(third.row.next_attempt_at, null, 'no request left to send')
  const hold = (third.row.timeout_at.getTime() - third.row.db_now.getTime()) / 1000
  t.ok(hold > 590 && hold <= 600, `held for CALL_TIMEOUT_SECONDS (${hold} s)`)
  t.match(third.row.last_error, /500.*no attempts left/)
  t.equal(third.row.job_state, 'active')
  t.same(fake.received.map((r) => r.headers['idempotency-key']), [1, 2, 3].map(() => `${first.callId}:1`), 'one key throughout')
  t.same(await takeResends(h.sql, policy, w, 30), [], 'and nothing is sent again')
})

t.test('429 honours Retry-After when it is longer than the backoff, and keeps the key', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  const fake = await scripted(t, { status: 429, body: 'slow down', headers: { 'retry-after': '120' } })
  const { row, result } = await send(h, w, fake.url)
  t.same(result, { kind: 'not_placed', retry: true, error: 'provider answered 429: slow down', retryAfterMs: 120_000 })
  t.equal(row.status, 'IN_PROGRESS')
  t.equal(row.outcome_unknown_at, null)
  t.ok(backoffSeconds(row) >= 119.9, 'not before Retry-After')
})

for (const status of [408, 409, 425]) {
  t.test(`${status}: refused for now, sent again under the same key`, async (t) => {
    const h = await createHarness(t)
    const w = await registerWorker(h)
    const fake = await scripted(t, { status, body: { error: 'not now' } })
    const { outcome, row, result } = await send(h, w, fake.url)
    t.equal(result.kind, 'not_placed')
    t.equal(outcome, 'resend')
    t.equal(row.status, 'IN_PROGRESS')
  })
}

t.test('any other 4xx: not placed, FAILED at once, lastError names the status and the body', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  const fake = await scripted(t, { status: 422, body: { error: 'number is on the do-not-call list' } })
  const { outcome, row } = await send(h, w, fake.url)
  t.equal(outcome, 'failed')
  t.equal(row.status, 'FAILED')
  t.equal(row.attempts, 1)
  t.match(row.last_error, /422.*do-not-call/)
  t.equal(row.job_state, 'completed')
  t.equal(await inFlight(h), 0)
})

t.test('a refusal after an unanswered request of the same dial still ends it: the provider answers for the key', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  const fake = await scripted(t, { status: 503, body: 'down' }, { status: 400, body: { error: 'invalid number' } })
  const first = await send(h, w, fake.url)
  t.ok(first.row.outcome_unknown_at)
  const second = await send(h, w, fake.url, first.callId)
  t.equal(second.outcome, 'failed')
  t.match(second.row.last_error, /400.*invalid number/)
})

t.test('2xx without a callId: placed, perhaps, but unnamed; re-sent under the same key', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  const fake = await scripted(t, { status: 202, body: { id: 'wrong-field' } })
  const { row, result } = await send(h, w, fake.url)
  t.equal(result.kind, 'unknown')
  t.equal(row.status, 'IN_PROGRESS')
  t.match(row.last_error, /202 without a callId/)
})

t.test('a late answer to a request another worker has replaced changes nothing', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  const heir = await registerWorker(h)
  await h.call('POST', '/calls', { to: '+15550000009', scriptId: 'flow' })
  const [mine] = (await claimCalls(h.sql, h.queue, policy, w, 30)).claimed
  // Its lease lapses (the worker hung); another worker takes the next request.
  await h.sql`UPDATE calls SET next_attempt_at = now() - interval '1 second' WHERE id = ${mine!.id}`
  const [theirs] = await takeResends(h.sql, policy, heir, 30)
  t.equal(theirs!.id, mine!.id)
  t.equal(theirs!.lapsed, true, 'the lapsed request counts as unanswered')
  t.equal(theirs!.attempts, 2)
  t.ok(theirs!.outcome_unknown_at)
  const late = await recordDialResult(h.sql, h.queue, policy, mine!, { kind: 'not_placed', retry: false, error: 'provider answered 400' })
  t.equal(late.outcome, 'stale', "the hung worker's refusal is not the latest report")
  const [row] = await h.sql`SELECT status, claimed_by FROM calls WHERE id = ${mine!.id}`
  t.same(row, { status: 'IN_PROGRESS', claimed_by: heir })
  // An acceptance is the provider call itself, whichever request carried it.
  const accepted = await recordDialResult(h.sql, h.queue, policy, mine!, { kind: 'accepted', providerCallId: 'prov-late' })
  t.equal(accepted.outcome, 'dialed')
})
