import t from 'tap'
import { createServer } from 'node:net'
import { claimCalls, recordDialResult, type DispatchPolicy } from '../src/dispatch/outcomes.ts'
import { createProviderClient } from '../src/dispatch/provider.ts'
import { startFakeProvider, type Answer } from './support/fake-provider.ts'
import { createHarness, registerWorker, type Harness } from './support/harness.ts'

// Each provider answer leads to the right status, attempts, backoff and lastError.

const policy: DispatchPolicy = {
  maxConcurrentCalls: 30,
  maxAttempts: 3,
  retryBaseSeconds: 10,
  retryMaxSeconds: 60,
  callTimeoutSeconds: 600,
}

/** Creates a call, claims it and dials it once against `url`; returns the call row afterwards. */
async function attempt(h: Harness, workerId: number, url: string, callId?: string, timeoutMs = 2_000, signal?: AbortSignal) {
  if (!callId) {
    const created = await h.call('POST', '/calls', { to: '+15550000001', scriptId: 'flow', metadata: { k: 'v' } })
    callId = created.body.id as string
  }
  // Make a backed-off call due now, as time passing would.
  await h.sql`UPDATE pgboss.job SET start_after = now() WHERE id = (SELECT job_id FROM calls WHERE id = ${callId})`
  const { claimed } = await claimCalls(h.sql, h.queue, policy, workerId, 30)
  const call = claimed.find((c) => c.id === callId)
  if (!call) throw new Error('call was not claimed')
  const provider = createProviderClient({ baseUrl: url, apiKey: 'prov-key', timeoutMs, publicBaseUrl: 'http://127.0.0.1:9' })
  const result = await provider.dial({ callId, attempt: call.attempts, to: call.phone, scriptId: call.script_id, metadata: call.metadata }, signal)
  const before = Date.now()
  const outcome = await recordDialResult(h.sql, h.queue, policy, call, result)
  const [row] = await h.sql`SELECT c.*, j.state AS job_state, j.start_after AS job_start_after
    FROM calls c LEFT JOIN pgboss.job j ON j.id = c.job_id WHERE c.id = ${callId}`
  return { callId, outcome: outcome.outcome, row: row!, before }
}

async function scripted(t: { teardown(fn: () => Promise<void> | void): void }, ...answers: Answer[]) {
  return startFakeProvider(t, (_req, n) => answers[Math.min(n, answers.length) - 1]!)
}

t.test('202 with a callId: the request follows the contract and the call is dialed', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  const fake = await scripted(t, { status: 202, body: { callId: 'prov-1' } })
  const { callId, outcome, row } = await attempt(h, w, fake.url)
  t.equal(outcome, 'dialed')
  t.equal(row.status, 'IN_PROGRESS')
  t.equal(row.provider_call_id, 'prov-1')
  t.ok(row.dialed_at)
  t.equal(row.job_state, 'active', 'the job stays active while the call is in flight')
  const req = fake.received[0]!
  t.equal(req.headers['idempotency-key'], `${callId}:1`)
  t.equal(req.headers.authorization, 'Bearer prov-key')
  t.match(req.headers['content-type'], /application\/json/)
  t.same(req.body, {
    to: '+15550000001',
    scriptId: 'flow',
    metadata: { k: 'v' },
    webhookUrl: `http://127.0.0.1:9/callbacks/call-status?callId=${callId}`,
  })
})

t.test('5xx: back to PENDING with backoff, the slot freed, a job due at the next attempt', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  const fake = await scripted(t, { status: 503, body: { error: 'down for maintenance' } })
  const { outcome, row, before } = await attempt(h, w, fake.url)
  t.equal(outcome, 'retry')
  t.equal(row.status, 'PENDING')
  t.equal(row.attempts, 1)
  t.match(row.last_error, /503.*down for maintenance/)
  const delay = row.next_attempt_at.getTime() - before
  t.ok(delay >= 4_000 && delay <= 10_500, `first backoff within [base/2, base] (was ${delay} ms)`)
  t.equal(row.job_state, 'created')
  t.equal(row.job_start_after.getTime(), row.next_attempt_at.getTime(), 'the job is due exactly when the call says')
  const [inFlight] = await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM calls WHERE status = 'IN_PROGRESS'`
  t.equal(inFlight!.n, 0)
})

t.test('retryable failures until MAX_ATTEMPTS: FAILED, job settled', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  const fake = await scripted(t, { status: 500, body: 'boom' })
  const first = await attempt(h, w, fake.url)
  const second = await attempt(h, w, fake.url, first.callId)
  t.equal(second.row.status, 'PENDING')
  t.equal(second.row.attempts, 2)
  const secondDelay = second.row.next_attempt_at.getTime() - second.before
  t.ok(secondDelay >= 9_000 && secondDelay <= 20_500, `second backoff doubles (was ${secondDelay} ms)`)
  const third = await attempt(h, w, fake.url, first.callId)
  t.equal(third.outcome, 'failed')
  t.equal(third.row.status, 'FAILED')
  t.equal(third.row.attempts, 3)
  t.match(third.row.last_error, /500.*no attempts left/)
  t.ok(third.row.ended_at)
  t.equal(third.row.job_state, 'completed', 'a FAILED call leaves no failed job to block its phone')
  t.same(fake.received.map((r) => r.headers['idempotency-key']), [1, 2, 3].map((n) => `${first.callId}:${n}`))
})

t.test('429 honours Retry-After when it is longer than the backoff', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  const fake = await scripted(t, { status: 429, body: 'slow down', headers: { 'retry-after': '120' } })
  const { row, before } = await attempt(h, w, fake.url)
  t.equal(row.status, 'PENDING')
  t.match(row.last_error, /429/)
  t.ok(row.next_attempt_at.getTime() - before >= 119_000, 'not before Retry-After')
})

t.test('timeout: retryable, with a clear lastError', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  const fake = await scripted(t, { status: 202, body: { callId: 'late' }, delayMs: 3_000 })
  const { row } = await attempt(h, w, fake.url, undefined, 300)
  t.equal(row.status, 'PENDING')
  t.match(row.last_error, /no answer within 300 ms/)
})

t.test('timeout with the worker\'s shutdown signal attached: still a timeout', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  const fake = await scripted(t, { status: 504, body: 'too late', delayMs: 5_000 })
  const { row } = await attempt(h, w, fake.url, undefined, 300, new AbortController().signal)
  t.equal(row.status, 'PENDING')
  t.match(row.last_error, /no answer within 300 ms/)
})

t.test('connection refused: retryable', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  // A port that was free a moment ago and has nobody listening now.
  const probe = createServer()
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r))
  const port = (probe.address() as { port: number }).port
  await new Promise<void>((r) => probe.close(() => r()))
  const { row } = await attempt(h, w, `http://127.0.0.1:${port}`)
  t.equal(row.status, 'PENDING')
  t.match(row.last_error, /unreachable.*ECONNREFUSED/)
})

t.test('4xx: FAILED at once, lastError names the status and the body', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  const fake = await scripted(t, { status: 422, body: { error: 'number is on the do-not-call list' } })
  const { outcome, row } = await attempt(h, w, fake.url)
  t.equal(outcome, 'failed')
  t.equal(row.status, 'FAILED')
  t.equal(row.attempts, 1)
  t.match(row.last_error, /422.*do-not-call/)
  t.equal(row.job_state, 'completed')
})

t.test('2xx without a callId: FAILED at once', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  const fake = await scripted(t, { status: 202, body: { id: 'wrong-field' } })
  const { row } = await attempt(h, w, fake.url)
  t.equal(row.status, 'FAILED')
  t.match(row.last_error, /202 without a callId/)
})
