import { randomUUID } from 'node:crypto'
import t, { type Test } from 'tap'
import { NO_POLICY, type CallingPolicy } from '../src/domain/policy.ts'
import type { CallRow } from '../src/domain/call.ts'
import { carryOutRequestedActions } from '../src/services/calls/requests.ts'
import { claimCalls } from '../src/services/dispatch/claim.ts'
import { applyLookedUpReport } from '../src/services/dispatch/reconcile.ts'
import { recordDialResult } from '../src/services/dispatch/record.ts'
import {
  applyPolicyChange,
  deleteStrandedJobs,
  expireDueCalls,
  requeueJobless,
  reviveFailedDeliveries,
  settleExhaustedCalls,
  timeOutSilentCalls,
} from '../src/services/dispatch/sweeps.ts'
import { sendDeliveryJob } from '../src/services/events/deliver.ts'
import { silentLogger } from '../src/platform/log.ts'
import { POLICY, sendSigned } from './support/callbacks.ts'
import { startFakeProvider } from './support/fake-provider.ts'
import { insertCall, newPhone, postCall } from './support/factory.ts'
import { failEachStatement, INJECTED, withFaults, type Faults } from './support/faults.ts'
import { createHarness, registerWorker, type Harness } from './support/harness.ts'
import { callRow, jobOf } from './support/inspect.ts'

// Every transaction of the service, with each of its statements failing in turn (the failure
// injected by test/support/faults.ts): after each, nothing of that transaction is left: no
// call, job, dial, event, delivery, callback row or counter change (a snapshot of every table,
// ours and pg-boss's). Then the same transaction runs whole and changes something.

interface Setup {
  h: Harness
  faults: Faults
  endpointId: string
}

/** A harness whose services run on a pool with failure injection, and an event endpoint, so every change writes events, deliveries and their jobs. */
async function setup(t: Test, options: { calling?: CallingPolicy; endpointUrl?: string } = {}): Promise<Setup> {
  let faults: Faults | undefined
  const h = await createHarness(t, { calling: options.calling, services: (sql) => (faults = withFaults(sql)).sql })
  const res = await h.call('POST', '/event-endpoints', { url: options.endpointUrl ?? 'http://127.0.0.1:9/events' })
  if (res.status !== 201) throw new Error(`POST /event-endpoints answered ${res.status}`)
  return { h, faults: faults!, endpointId: res.body.id }
}

/** A request that must succeed; its failure (a 500 for an injected fault) rejects. */
const request = (h: Harness, method: string, path: string, body?: unknown, headers?: Record<string, string>) => async () => {
  const res = await h.call(method, path, body, headers)
  if (res.status >= 300) throw Object.assign(new Error(`${method} ${path} answered ${res.status} ${res.body?.code}`), { status: res.status })
  return res
}
const answered500 = (err: unknown) => (err as { status?: number }).status === 500
const injected = (err: unknown) => (err as { code?: string }).code === INJECTED

const later = (seconds: number) => new Date(Date.now() + seconds * 1000).toISOString()

t.test('POST /calls, with an Idempotency-Key', async (t) => {
  const { h, faults } = await setup(t)
  const body = { to: newPhone(), scriptId: 'welcome', metadata: { order: 7 } }
  await failEachStatement(t, faults, h.sql, request(h, 'POST', '/calls', body, { 'idempotency-key': 'order-7' }), answered500)
  t.equal((await h.sql`SELECT 1 FROM calls WHERE idempotency_key = 'order-7'`).length, 1)
})

t.test('POST /calls under calling rules: a window, caps, notBefore', async (t) => {
  const calling: CallingPolicy = { ...NO_POLICY, window: { days: ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'], start: '00:00', end: '23:59', timezone: 'UTC' }, caps: { perDay: 3, perWeek: 5 } }
  const { h, faults } = await setup(t, { calling })
  await failEachStatement(t, faults, h.sql, request(h, 'POST', '/calls', { to: newPhone(), scriptId: 's', notBefore: later(3600) }), answered500)
})

t.test('POST /calls/batch: created, replayed within the batch, refused, invalid', async (t) => {
  const { h, faults } = await setup(t)
  const listed = newPhone()
  await h.call('PUT', `/suppressions/${encodeURIComponent(listed)}`, {})
  const body = {
    calls: [
      { to: newPhone(), scriptId: 's', idempotencyKey: 'item-1' },
      { to: newPhone(), scriptId: 's' },
      { to: newPhone(), scriptId: 's', idempotencyKey: 'item-1' },
      { to: listed, scriptId: 's' },
      { to: 'not a phone', scriptId: 's' },
    ],
  }
  await failEachStatement(t, faults, h.sql, request(h, 'POST', '/calls/batch', body, { 'idempotency-key': 'batch-1' }), answered500)
})

t.test('POST /calls/batch with no item that becomes a call: the batch completes as it is made', async (t) => {
  const { h, faults } = await setup(t)
  const listed = newPhone()
  await h.call('PUT', `/suppressions/${encodeURIComponent(listed)}`, {})
  await failEachStatement(t, faults, h.sql, request(h, 'POST', '/calls/batch', { calls: [{ to: listed, scriptId: 's' }] }), answered500)
  t.equal((await h.sql`SELECT 1 FROM events WHERE type = 'batch.completed'`).length, 1)
})

t.test('PATCH /calls/:id: a new number and a new notBefore (a new job)', async (t) => {
  const { h, faults } = await setup(t)
  const call = await postCall(h, { to: newPhone() })
  await failEachStatement(t, faults, h.sql, request(h, 'PATCH', `/calls/${call.id}`, { to: newPhone(), notBefore: later(600), metadata: { v: 2 } }), answered500)
})

t.test('POST /calls/:id/cancel of the last open call of a batch', async (t) => {
  const { h, faults } = await setup(t)
  const batch = await h.call('POST', '/calls/batch', { calls: [{ to: newPhone(), scriptId: 's' }] })
  const callId = batch.body.items[0].call.id as string
  await failEachStatement(t, faults, h.sql, request(h, 'POST', `/calls/${callId}/cancel`), answered500)
  t.same((await h.sql<{ type: string }[]>`SELECT type FROM events ORDER BY seq`).map((e) => e.type), ['call.cancelled', 'batch.completed'])
})

t.test('POST /calls/batch/:id/cancel', async (t) => {
  const { h, faults } = await setup(t)
  const batch = await h.call('POST', '/calls/batch', { calls: [{ to: newPhone(), scriptId: 's' }, { to: newPhone(), scriptId: 's' }] })
  await failEachStatement(t, faults, h.sql, request(h, 'POST', `/calls/batch/${batch.body.batchId}/cancel`), answered500)
})

t.test('POST /calls/:id/retry of a call the provider refused (its job completed)', async (t) => {
  const { h, faults } = await setup(t)
  const call = await claimedCall(h, await registerWorker(h))
  await recordDialResult(h.sql, h.queue, POLICY, call, { kind: 'not_placed', retry: false, error: 'no such script' })
  t.equal(await jobStateOf(h, call.id), 'completed')
  await failEachStatement(t, faults, h.sql, request(h, 'POST', `/calls/${call.id}/retry`), answered500)
})

t.test('a claim: calls dialed, one on the do-not-call list, one aged out, one whose job is stale', async (t) => {
  const { h, faults } = await setup(t)
  const worker = await registerWorker(h)
  await postCall(h, { to: newPhone() })
  await postCall(h, { to: newPhone() })
  const listed = await postCall(h, { to: newPhone() })
  await h.sql`INSERT INTO suppressions (phone) VALUES (${listed.payload.to})`
  const aged = await postCall(h, { to: newPhone() })
  await h.sql`UPDATE calls SET expires_at = now() - interval '1 second' WHERE id = ${aged.id}`
  const stale = await insertCall(h, { status: 'COMPLETED' })
  await h.queue.boss.send('calls', { callId: stale.id }, { singletonKey: stale.phone })
  await failEachStatement(t, faults, h.sql, () => claimCalls(faults.sql, h.queue, POLICY, worker, 30), injected)
  const [counts] = await h.sql<{ in_flight: number; suppressed: number; expired: number }[]>`
    SELECT count(*) FILTER (WHERE status = 'IN_PROGRESS')::int AS in_flight, count(*) FILTER (WHERE status = 'SUPPRESSED')::int AS suppressed,
           count(*) FILTER (WHERE status = 'EXPIRED')::int AS expired FROM calls`
  t.same(counts, { in_flight: 2, suppressed: 1, expired: 1 }, 'each went its way once the claim ran whole')
})

t.test('a claim under a calling window that is closed: the calls are rescheduled', async (t) => {
  const calling: CallingPolicy = { ...NO_POLICY, window: { days: ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'], start: '00:00', end: '00:01', timezone: 'Pacific/Kiritimati' } }
  const { h, faults } = await setup(t)
  const worker = await registerWorker(h)
  // Made without the window (the harness has none), so the claim is the first to apply it.
  await postCall(h, { to: newPhone() })
  await postCall(h, { to: newPhone() })
  await failEachStatement(t, faults, h.sql, () => claimCalls(faults.sql, h.queue, { ...POLICY, calling }, worker, 30), injected)
  const rows = await h.sql<{ waiting_for: string }[]>`SELECT waiting_for FROM calls`
  t.same(rows.map((r) => r.waiting_for), ['calling_window', 'calling_window'])
})

const jobStateOf = async (h: Harness, callId: string) => (await jobOf(h.sql, callId))?.state

/** A call claimed by a worker (IN_PROGRESS, its request under way), as the claim returned it. */
async function claimedCall(h: Harness, worker: number): Promise<CallRow> {
  const { id } = await postCall(h, { to: newPhone() })
  const { claimed } = await claimCalls(h.sql, h.queue, POLICY, worker, 30)
  return claimed.find((c) => c.id === id)!
}

t.test('recording a dial’s answer: accepted, refused, unanswered, and the last request unanswered', async (t) => {
  const { h, faults } = await setup(t)
  const worker = await registerWorker(h)
  const record = (call: CallRow, result: Parameters<typeof recordDialResult>[4], policy = POLICY) => () => recordDialResult(faults.sql, h.queue, policy, call, result)
  // Every call claimed first: the subtests run one after the other once this body is done.
  const accepted = await claimedCall(h, worker)
  const refused = await claimedCall(h, worker)
  const unanswered = await claimedCall(h, worker)
  const last = await claimedCall(h, worker)
  t.test('accepted', async (t) => void (await failEachStatement(t, faults, h.sql, record(accepted, { kind: 'accepted', providerCallId: `p-${randomUUID()}` }), injected)))
  t.test('refused for good', async (t) => void (await failEachStatement(t, faults, h.sql, record(refused, { kind: 'not_placed', retry: false, error: 'no such script' }), injected)))
  t.test('unanswered: re-sent later', async (t) => void (await failEachStatement(t, faults, h.sql, record(unanswered, { kind: 'unknown', error: 'timed out' }), injected)))
  t.test('the last request unanswered: held', async (t) => {
    await failEachStatement(t, faults, h.sql, record(last, { kind: 'unknown', error: 'timed out' }, { ...POLICY, maxAttempts: 1 }), injected)
    t.ok((await callRow(h, last.id)).timeout_at, 'held until its timeout')
  })
})

/** An in-flight call accepted by the provider. */
async function dialedCall(h: Harness, worker: number): Promise<CallRow> {
  const call = await claimedCall(h, worker)
  const { call: dialed } = await recordDialResult(h.sql, h.queue, POLICY, call, { kind: 'accepted', providerCallId: `p-${randomUUID()}` })
  return dialed!
}

t.test('a provider callback: COMPLETED', async (t) => {
  const { h, faults } = await setup(t)
  const call = await dialedCall(h, await registerWorker(h))
  const deliver = async () => {
    const res = await sendSigned(h, call.id, { callId: call.provider_call_id, status: 'COMPLETED', durationSec: 42 }, { id: 'msg_callback_1' })
    if (res.status >= 300) throw Object.assign(new Error(`callback answered ${res.status}`), { status: res.status })
  }
  await failEachStatement(t, faults, h.sql, deliver, answered500)
  t.equal((await callRow(h, call.id)).status, 'COMPLETED')
})

t.test('a provider callback that corrects a call we had declared FAILED', async (t) => {
  const { h, faults } = await setup(t)
  const call = await dialedCall(h, await registerWorker(h))
  await h.sql`UPDATE calls SET timeout_at = now() - interval '1 second' WHERE id = ${call.id}`
  await timeOutSilentCalls(h.sql, h.queue, POLICY)
  const deliver = async () => {
    const res = await sendSigned(h, call.id, { callId: call.provider_call_id, status: 'COMPLETED' })
    if (res.status >= 300) throw Object.assign(new Error(`callback answered ${res.status}`), { status: res.status })
  }
  await failEachStatement(t, faults, h.sql, deliver, answered500)
  t.equal((await callRow(h, call.id)).status, 'COMPLETED')
})

t.test('a provider callback BUSY under an outcome retry policy: a new dial is scheduled', async (t) => {
  const calling: CallingPolicy = { ...NO_POLICY, retries: { BUSY: { limit: 1, delaySeconds: 600 } } }
  const { h, faults } = await setup(t, { calling })
  const call = await dialedCall(h, await registerWorker(h))
  const deliver = async () => {
    const res = await sendSigned(h, call.id, { callId: call.provider_call_id, status: 'BUSY' }, { id: 'msg_busy_1' })
    if (res.status >= 300) throw Object.assign(new Error(`callback answered ${res.status}`), { status: res.status })
  }
  await failEachStatement(t, faults, h.sql, deliver, answered500)
  const row = await callRow(h, call.id)
  t.same([row.status, row.waiting_for], ['PENDING', 'retry'])
})

t.test('a status look-up’s final answer', async (t) => {
  const { h, faults } = await setup(t)
  const call = await dialedCall(h, await registerWorker(h))
  const answer = { kind: 'final' as const, status: 'NO_ANSWER' as const, providerCallId: call.provider_call_id!, durationSec: null, completedAt: new Date() }
  await failEachStatement(t, faults, h.sql, () => applyLookedUpReport(faults.sql, h.queue, call, answer, undefined), injected)
  t.equal((await callRow(h, call.id)).status, 'FAILED')
})

t.test('the sweeps', async (t) => {
  const { h, faults } = await setup(t)
  const worker = await registerWorker(h)

  t.test('calls past their expiry', async (t) => {
    const call = await postCall(h, { to: newPhone() })
    await h.sql`UPDATE calls SET expires_at = now() - interval '1 second' WHERE id = ${call.id}`
    await failEachStatement(t, faults, h.sql, () => expireDueCalls(faults.sql, h.queue), injected)
  })
  t.test('calls in flight past their timeout', async (t) => {
    const call = await dialedCall(h, worker)
    await h.sql`UPDATE calls SET timeout_at = now() - interval '1 second' WHERE id = ${call.id}`
    await failEachStatement(t, faults, h.sql, () => timeOutSilentCalls(faults.sql, h.queue, POLICY), injected)
  })
  t.test('calls out of requests', async (t) => {
    const refused = await claimedCall(h, worker)
    await recordDialResult(h.sql, h.queue, POLICY, refused, { kind: 'not_placed', retry: true, error: 'busy, try later' })
    await h.sql`UPDATE calls SET dial_requests = 3, attempts = 3, next_attempt_at = now() - interval '1 second' WHERE id = ${refused.id}`
    await failEachStatement(t, faults, h.sql, () => settleExhaustedCalls(faults.sql, h.queue, POLICY), injected)
  })
  t.test('failed jobs left behind by their calls', async (t) => {
    const call = await insertCall(h, { status: 'COMPLETED' })
    const jobId = await h.queue.boss.send('calls', { callId: call.id }, { singletonKey: call.phone })
    await h.sql`UPDATE pgboss.job SET state = 'failed' WHERE id = ${jobId}`
    await failEachStatement(t, faults, h.sql, () => deleteStrandedJobs(faults.sql, h.queue), injected)
  })
  t.test('delivery jobs pg-boss failed, handed on to fresh ones', async (t) => {
    const call = await postCall(h, { to: newPhone() })
    await h.call('POST', `/calls/${call.id}/cancel`)
    await h.sql`UPDATE pgboss.job SET state = 'failed', completed_on = now() WHERE name = 'event-deliveries' AND data->>'callId' = ${call.id}`
    await failEachStatement(t, faults, h.sql, () => reviveFailedDeliveries(faults.sql, h.queue), injected)
    const jobs = await h.sql<{ state: string }[]>`SELECT state FROM pgboss.job WHERE name = 'event-deliveries' AND data->>'callId' = ${call.id}`
    t.same(jobs.map((j) => j.state), ['created'], 'the failed job gone, a fresh one waiting')
  })
  t.test('waiting calls without a job', async (t) => {
    const call = await postCall(h, { to: newPhone() })
    await h.sql`DELETE FROM pgboss.job WHERE id = ${(await jobOf(h.sql, call.id))!.id}`
    await failEachStatement(t, faults, h.sql, () => requeueJobless(faults.sql, h.queue, {}), injected)
  })
  t.test('a new calling policy: waiting calls are due again, and the policy recorded', async (t) => {
    await h.sql`UPDATE dispatch_settings SET policy_hash = 'an older policy'`
    const call = await postCall(h, { to: newPhone() })
    await h.sql`UPDATE calls SET waiting_for = 'cap', next_attempt_at = now() + interval '1 day' WHERE id = ${call.id}`
    await failEachStatement(t, faults, h.sql, () => applyPolicyChange(faults.sql, h.queue, NO_POLICY), injected)
    t.equal((await callRow(h, call.id)).waiting_for, null, 'no rule holds it now')
  })
})

t.test('the do-not-call list: adding a number ends its waiting calls; an import', async (t) => {
  const { h, faults } = await setup(t)
  const phone = newPhone()
  await postCall(h, { to: phone })
  await postCall(h, { to: phone, scriptId: 'other' })
  await failEachStatement(t, faults, h.sql, request(h, 'PUT', `/suppressions/${encodeURIComponent(phone)}`, { reason: 'asked' }), answered500)
  const other = newPhone()
  await postCall(h, { to: other })
  await failEachStatement(t, faults, h.sql, request(h, 'POST', '/suppressions/import', { entries: [{ phone: other }, { phone: newPhone(), reason: 'list' }] }), answered500)
})

t.test('event endpoints and events: replay, rotate, remove; dispatch settings', async (t) => {
  const { h, faults, endpointId } = await setup(t)
  const call = await postCall(h, { to: newPhone() })
  await h.call('POST', `/calls/${call.id}/cancel`)
  const [event] = await h.sql<{ id: string }[]>`SELECT id FROM events`
  t.test('replay', async (t) => void (await failEachStatement(t, faults, h.sql, request(h, 'POST', `/events/${event!.id}/replay`), answered500)))
  t.test('rotate the secret', async (t) => void (await failEachStatement(t, faults, h.sql, request(h, 'POST', `/event-endpoints/${endpointId}/rotate-secret`), answered500)))
  t.test('remove the endpoint', async (t) => void (await failEachStatement(t, faults, h.sql, request(h, 'DELETE', `/event-endpoints/${endpointId}`), answered500)))
  t.test('dispatch settings', async (t) => void (await failEachStatement(t, faults, h.sql, request(h, 'PUT', '/dispatch/settings', { maxConcurrentCalls: 5 }), answered500)))
})

t.test('event deliveries: fetched, delivered, retried, given up', async (t) => {
  // A receiver that answers as the test says (the signatures are not its concern here).
  let status = 204
  const receiver = await startFakeProvider(t, () => ({ status }))
  const { h, faults } = await setup(t, { endpointUrl: `${receiver.url}/events` })
  const options = { timeoutMs: 5_000, perEndpoint: 4, allowInsecureUrls: true }
  const deps = { sql: faults.sql, deliveries: h.queue.deliveries, options, log: silentLogger }
  const cancelled = async () => {
    const call = await postCall(h, { to: newPhone() })
    await h.call('POST', `/calls/${call.id}/cancel`)
  }
  await cancelled()
  let [job] = await h.queue.deliveries.fetch(h.sql, 1, 4)
  t.ok(job, 'a delivery job to send')

  t.test('delivered', async (t) => {
    status = 204
    await failEachStatement(t, faults, h.sql, () => sendDeliveryJob(deps, job!), injected)
    t.equal((await h.sql`SELECT 1 FROM event_deliveries WHERE status = 'delivered'`).length, 1)
  })
  t.test('fetched', async (t) => {
    await cancelled()
    await failEachStatement(t, faults, h.sql, async () => ([job] = await h.queue.deliveries.fetch(faults.sql, 1, 4)), injected)
  })
  t.test('refused by the receiver: retried later', async (t) => {
    status = 503
    await failEachStatement(t, faults, h.sql, () => sendDeliveryJob(deps, job!), injected)
    t.equal((await h.sql`SELECT 1 FROM pgboss.job WHERE id = ${job!.jobId} AND state = 'retry'`).length, 1)
  })
  t.test('refused, the job out of retries but not its event: the scope goes on in a new job, after the backoff', async (t) => {
    await cancelled()
    const [fetched] = await h.queue.deliveries.fetch(h.sql, 1, 4)
    // As fetched on its last retry.
    await h.sql`UPDATE pgboss.job SET retry_count = retry_limit WHERE id = ${fetched!.jobId}`
    const spent = { ...fetched!, retryCount: fetched!.retryLimit }
    await failEachStatement(t, faults, h.sql, () => sendDeliveryJob(deps, spent), injected)
    const jobs = await h.sql<{ id: string; state: string; later: boolean }[]>`
      SELECT id, state, start_after > now() AS later FROM pgboss.job WHERE name = 'event-deliveries' AND data->>'callId' = ${spent.callId}`
    t.same(jobs.map((j) => [j.id === spent.jobId, j.state, j.later]).sort(), [[false, 'created', true], [true, 'completed', false]])
    const [row] = await h.sql<{ status: string; attempts: number; next_attempt_at: Date | null }[]>`
      SELECT d.status, d.attempts, d.next_attempt_at FROM event_deliveries d JOIN events e ON e.id = d.event_id WHERE e.call_id = ${spent.callId}`
    t.match(row, { status: 'pending', attempts: 1 })
    t.ok(row!.next_attempt_at, 'with when it is tried next')
  })
  t.test('refused with no retries left: given up, the scope goes on in a new job', async (t) => {
    await cancelled()
    const [last] = await h.queue.deliveries.fetch(h.sql, 1, 4)
    // The retry limit counts the event's own tries: this one has had all but its last.
    await h.sql`UPDATE event_deliveries SET attempts = ${last!.retryLimit} WHERE status = 'pending' AND event_id IN (SELECT id FROM events WHERE call_id = ${last!.callId})`
    await failEachStatement(t, faults, h.sql, () => sendDeliveryJob(deps, last!), injected)
    t.equal((await h.sql`SELECT 1 FROM event_deliveries WHERE status = 'failed'`).length, 1)
  })
})

t.test('requests filed from SQL: carried out, or refused, and written down in the same transaction', async (t) => {
  const { h, faults } = await setup(t)
  const deps = { queue: h.queue, calling: NO_POLICY }
  const refused = await claimedCall(h, await registerWorker(h))
  await recordDialResult(h.sql, h.queue, POLICY, refused, { kind: 'not_placed', retry: false, error: 'no such script' })
  await h.sql`SELECT request_retry(${refused.id})`
  t.test('a retry, done', async (t) => {
    await failEachStatement(t, faults, h.sql, () => carryOutRequestedActions(faults.sql, deps, 1), injected)
    t.same((await h.sql`SELECT outcome FROM call_actions`).map((r) => r.outcome), ['done'])
  })
  t.test('a retry of a call that completed, refused', async (t) => {
    const completed = await insertCall(h, { status: 'COMPLETED' })
    await h.sql`SELECT request_retry(${completed.id})`
    await failEachStatement(t, faults, h.sql, () => carryOutRequestedActions(faults.sql, deps, 1), injected)
    t.same((await h.sql`SELECT outcome FROM call_actions ORDER BY id`).map((r) => r.outcome), ['done', 'refused'])
  })
})
