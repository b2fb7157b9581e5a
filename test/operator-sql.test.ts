import { randomUUID } from 'node:crypto'
import t from 'tap'
import { toResource, type CallRow } from '../src/calls/model.ts'
import { batchResource, type BatchRow } from '../src/db/batches.ts'
import { dialsOf } from '../src/db/dials.ts'
import type { Sql } from '../src/db/sql.ts'
import { startFakeProvider } from './support/fake-provider.ts'
import { insertCall, newPhone, postCall } from './support/factory.ts'
import { raceCancelAgainstClaim } from './support/cancel-race.ts'
import { createHarness, registerWorker, type Harness } from './support/harness.ts'
import { callRow, callSnapshot, jobOf } from './support/inspect.ts'
import { waitFor } from './support/processes.ts'
import { startDispatcher } from './support/dispatcher.ts'

// sql/008_operator_views.sql: the views operators read, and retry_call/cancel_call, which must
// do what the service does (job, events, batch completion, locks), checked against the service.

/** The error a statement raised, or undefined. */
async function raised(q: Promise<unknown>): Promise<{ code: string; message: string; hint: string } | undefined> {
  try {
    await q
    return undefined
  } catch (err) {
    const e = err as { code: string; message: string; hint: string }
    return { code: e.code, message: e.message, hint: e.hint }
  }
}

async function eventsOf(sql: Sql, callId: string) {
  return sql<Array<{ id: string; type: string; payload: { type: string; timestamp: string; data: any } }>>`
    SELECT id, type, payload FROM events WHERE call_id = ${callId} ORDER BY seq`
}

/** The pg-boss columns that say how a job behaves: what the API's jobs and the functions' must share. */
async function jobShape(sql: Sql, jobId: string) {
  const [job] = await sql<Record<string, unknown>[]>`
    SELECT name, state, priority, policy, retry_limit, retry_delay, retry_backoff, retry_delay_max, expire_seconds,
           deletion_seconds, keep_until - start_after AS retention, group_tier, dead_letter, heartbeat_seconds,
           blocked, blocking, pending_dependencies, singleton_on, jsonb_object_keys_sorted
    FROM pgboss.job, LATERAL (SELECT array_agg(k ORDER BY k) AS jsonb_object_keys_sorted FROM jsonb_object_keys(data) k) keys
    WHERE id = ${jobId}`
  return job
}

const endpoint = async (h: Harness) => {
  const res = await h.call('POST', '/event-endpoints', { url: 'http://127.0.0.1:9/events' })
  if (res.status !== 201) throw new Error(`POST /event-endpoints answered ${res.status}: ${JSON.stringify(res.body)}`)
  return res.body.id as string
}

t.test('calls_in_flight: each call in flight, its state, its worker and how long', async (t) => {
  const h = await createHarness(t)
  const worker = await registerWorker(h)
  const dialed = await insertCall(h, { status: 'IN_PROGRESS' })
  const sending = await insertCall(h, { status: 'IN_PROGRESS', dialed: false })
  await insertCall(h, { status: 'PENDING' })
  await insertCall(h, { status: 'COMPLETED' })
  const rows = await h.sql.begin(async (tx) => {
    // now() is the transaction's start: the seconds are exact inside it.
    await tx`UPDATE calls SET started_at = now() - interval '90 seconds' WHERE id = ${dialed.id}`
    await tx`UPDATE calls SET started_at = now() - interval '5 seconds', claimed_by = ${worker} WHERE id = ${sending.id}`
    return tx`SELECT call_id, phone, dial, seconds_in_flight, state, provider_call_id, worker_id, worker,
                     started_at = now() - interval '90 seconds' OR started_at = now() - interval '5 seconds' AS started_ok
              FROM calls_in_flight ORDER BY seconds_in_flight DESC`
  })
  t.same(rows, [
    { call_id: dialed.id, phone: dialed.phone, dial: 1, seconds_in_flight: 90, state: 'dialed: waiting for the final word', provider_call_id: dialed.provider_call_id, worker_id: null, worker: null, started_ok: true },
    { call_id: sending.id, phone: sending.phone, dial: 1, seconds_in_flight: 5, state: 'request under way', provider_call_id: null, worker_id: worker, worker: 'test:1', started_ok: true },
  ])
})

t.test('calls_failed_last_hour: failed and expired in the last hour, with why', async (t) => {
  const h = await createHarness(t)
  const failed = await insertCall(h, { status: 'FAILED' })
  const expired = await insertCall(h, { status: 'EXPIRED' })
  const old = await insertCall(h, { status: 'FAILED' })
  await insertCall(h, { status: 'COMPLETED' })
  await insertCall(h, { status: 'PENDING' })
  await h.sql`UPDATE calls SET ended_at = now() - interval '2 hours' WHERE id = ${old.id}`
  await h.sql`UPDATE calls SET ended_at = now() - interval '10 minutes' WHERE id = ${expired.id}`
  await h.sql`INSERT INTO call_dials (call_id, dial, phone, outcome, error, ended_at) VALUES (${failed.id}, 1, ${failed.phone}, 'BUSY', 'provider reported BUSY', now())`
  const rows = await h.sql`
    SELECT call_id, phone, status, reason, provider_status, requests, dials, last_dial_outcome, batch_id
    FROM calls_failed_last_hour ORDER BY ended_at DESC`
  t.same(rows, [
    { call_id: failed.id, phone: failed.phone, status: 'FAILED', reason: 'provider reported BUSY', provider_status: 'BUSY', requests: 1, dials: 1, last_dial_outcome: 'BUSY', batch_id: null },
    { call_id: expired.id, phone: expired.phone, status: 'EXPIRED', reason: 'expired before it could be dialed', provider_status: null, requests: 0, dials: 0, last_dial_outcome: null, batch_id: null },
  ])
})

t.test('phone_backlog: numbers with waiting calls, and what holds them', async (t) => {
  const h = await createHarness(t)
  const busy = newPhone()
  const quiet = newPhone()
  const first = await insertCall(h, { phone: busy, createdAt: new Date(Date.now() - 600_000) })
  const second = await insertCall(h, { phone: busy })
  await insertCall(h, { phone: quiet, status: 'IN_PROGRESS' })
  await insertCall(h, { phone: quiet })
  await insertCall(h, { status: 'COMPLETED' })
  await h.sql`INSERT INTO suppressions (phone) VALUES (${quiet})`
  const rows = await h.sql.begin(async (tx) => {
    await tx`UPDATE calls SET next_attempt_at = now() + interval '1 hour', waiting_for = 'retry' WHERE id IN (${first.id}, ${second.id})`
    await tx`UPDATE calls SET next_attempt_at = now() + interval '5 minutes', waiting_for = 'calling_window' WHERE id = ${second.id}`
    return tx`
      SELECT phone, pending_calls, oldest_waiting_since = ${first.created_at} AS oldest_ok,
             next_eligible_at - now() AS eligible_in, waiting_for, call_in_flight, suppressed
      FROM phone_backlog ORDER BY pending_calls DESC`
  })
  t.same(rows, [
    { phone: busy, pending_calls: 2, oldest_ok: true, eligible_in: '00:05:00', waiting_for: ['calling_window', 'retry'], call_in_flight: false, suppressed: false },
    { phone: quiet, pending_calls: 1, oldest_ok: false, eligible_in: '00:00:00', waiting_for: null, call_in_flight: true, suppressed: true },
  ])
})

t.test('call_attempts: dials per call and their outcomes in order', async (t) => {
  const h = await createHarness(t)
  const retried = await insertCall(h, { status: 'COMPLETED' })
  const waiting = await insertCall(h)
  await h.sql`UPDATE calls SET dial = 3, attempts = 4, dial_requests = 1 WHERE id = ${retried.id}`
  await h.sql`
    INSERT INTO call_dials (call_id, dial, phone, started_at, requests, outcome, ended_at) VALUES
      (${retried.id}, 1, ${retried.phone}, '2026-01-01T10:00:00Z', 2, 'BUSY', '2026-01-01T10:01:00Z'),
      (${retried.id}, 2, ${retried.phone}, '2026-01-01T11:00:00Z', 1, 'NO_ANSWER', '2026-01-01T11:01:00Z'),
      (${retried.id}, 3, ${retried.phone}, '2026-01-01T12:00:00Z', 1, NULL, NULL)`
  const rows = await h.sql`SELECT call_id, phone, status, dials, requests, first_dial_at, last_dial_at, outcomes FROM call_attempts ORDER BY dials DESC`
  t.same(rows, [
    { call_id: retried.id, phone: retried.phone, status: 'COMPLETED', dials: 3, requests: 4, first_dial_at: new Date('2026-01-01T10:00:00Z'), last_dial_at: new Date('2026-01-01T12:00:00Z'), outcomes: 'BUSY, NO_ANSWER, in flight' },
    { call_id: waiting.id, phone: waiting.phone, status: 'PENDING', dials: 0, requests: 0, first_dial_at: null, last_dial_at: null, outcomes: null },
  ])
})

t.test('callback_verdicts_by_hour: counts per hour, source and verdict', async (t) => {
  const h = await createHarness(t)
  await h.sql`
    INSERT INTO callbacks (received_at, source, verdict) VALUES
      ('2026-01-01T10:05:00Z', 'webhook', 'applied'), ('2026-01-01T10:55:00Z', 'webhook', 'applied'),
      ('2026-01-01T10:30:00Z', 'webhook', 'duplicate'), ('2026-01-01T11:00:00Z', 'webhook', 'applied'),
      ('2026-01-01T11:10:00Z', 'reconcile', 'applied'), ('2026-01-01T11:20:00Z', 'webhook', 'rejected')`
  const rows = await h.sql`SELECT hour, source, verdict, callbacks FROM callback_verdicts_by_hour ORDER BY hour, source, verdict`
  const at = (iso: string) => new Date(iso)
  t.same(rows, [
    { hour: at('2026-01-01T10:00:00Z'), source: 'webhook', verdict: 'applied', callbacks: 2 },
    { hour: at('2026-01-01T10:00:00Z'), source: 'webhook', verdict: 'duplicate', callbacks: 1 },
    { hour: at('2026-01-01T11:00:00Z'), source: 'reconcile', verdict: 'applied', callbacks: 1 },
    { hour: at('2026-01-01T11:00:00Z'), source: 'webhook', verdict: 'applied', callbacks: 1 },
    { hour: at('2026-01-01T11:00:00Z'), source: 'webhook', verdict: 'rejected', callbacks: 1 },
  ])
})

t.test('event_deliveries_failing: given up or being retried, with the last answer', async (t) => {
  const h = await createHarness(t)
  const [ep] = await h.sql<{ id: string }[]>`
    INSERT INTO event_endpoints (url, secrets) VALUES ('https://hooks.example.com/calls', '{whsec_x}') RETURNING id`
  const call = await insertCall(h, { status: 'FAILED' })
  await h.sql`
    INSERT INTO events (id, type, call_id, payload) VALUES
      ('msg_failed', 'call.failed', ${call.id}, '{}'), ('msg_retrying', 'call.failed', ${call.id}, '{}'),
      ('msg_new', 'call.failed', ${call.id}, '{}'), ('msg_done', 'call.failed', ${call.id}, '{}')`
  await h.sql`
    INSERT INTO event_deliveries (event_id, endpoint_id, status, attempts, last_attempt_at, last_status_code, last_error, next_attempt_at, delivered_at) VALUES
      ('msg_failed', ${ep!.id}, 'failed', 20, '2026-01-01T10:00:00Z', 500, 'HTTP 500', NULL, NULL),
      ('msg_retrying', ${ep!.id}, 'pending', 2, '2026-01-01T10:00:00Z', NULL, 'timed out after 10000 ms', '2026-01-01T10:00:40Z', NULL),
      ('msg_new', ${ep!.id}, 'pending', 0, NULL, NULL, NULL, NULL, NULL),
      ('msg_done', ${ep!.id}, 'delivered', 3, '2026-01-01T10:00:00Z', 204, NULL, NULL, '2026-01-01T10:00:00Z')`
  const rows = await h.sql`
    SELECT endpoint, endpoint_id, event, event_id, call_id, status, attempts, last_status_code, last_error, next_retry_at
    FROM event_deliveries_failing ORDER BY event_id`
  const base = { endpoint: 'https://hooks.example.com/calls', endpoint_id: ep!.id, event: 'call.failed', call_id: call.id }
  t.same(rows, [
    { ...base, event_id: 'msg_failed', status: 'failed', attempts: 20, last_status_code: 500, last_error: 'HTTP 500', next_retry_at: null },
    { ...base, event_id: 'msg_retrying', status: 'pending', attempts: 2, last_status_code: null, last_error: 'timed out after 10000 ms', next_retry_at: new Date('2026-01-01T10:00:40Z') },
  ])
})

t.test('cancel_call does what POST /calls/:id/cancel does', async (t) => {
  const h = await createHarness(t)
  const endpointId = await endpoint(h)
  const viaApi = await postCall(h, { to: newPhone() })
  const viaSql = await postCall(h, { to: newPhone() })
  const sqlJob = (await jobOf(h.sql, viaSql.id))!.id
  t.equal((await h.call('POST', `/calls/${viaApi.id}/cancel`)).status, 200)
  const [returned] = await h.sql<CallRow[]>`SELECT * FROM cancel_call(${viaSql.id})`
  t.equal(returned!.status, 'CANCELLED', 'it returns the cancelled row')

  const row = await callRow(h, viaSql.id)
  t.equal(row.status, 'CANCELLED')
  t.ok(row.ended_at)
  t.equal(row.last_error, 'cancelled by an operator before it was dialed')
  t.same(await h.sql`SELECT 1 FROM pgboss.job WHERE id = ${sqlJob}`, [], 'its job is deleted, as the API deletes it')

  const [apiEvent] = await eventsOf(h.sql, viaApi.id)
  const sqlEvents = await eventsOf(h.sql, viaSql.id)
  t.same(sqlEvents.map((e) => e.type), ['call.cancelled'], 'one call.cancelled, as the API writes')
  const event = sqlEvents[0]!
  t.same(event.payload.data, toResource(row, await dialsOf(h.sql, [row.id])), 'its data is the call resource the API would send')
  t.same(Object.keys(event.payload).sort(), Object.keys(apiEvent!.payload).sort())
  t.match(event.payload.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
  t.match(event.id, /^msg_[0-9a-f-]{36}$/)

  // Its delivery row and delivery job, shaped as the API's.
  const deliveries = await h.sql`SELECT event_id, endpoint_id, status, attempts FROM event_deliveries WHERE event_id = ${event.id}`
  t.same(deliveries, [{ event_id: event.id, endpoint_id: endpointId, status: 'pending', attempts: 0 }])
  const jobs = await h.sql<{ id: string; call_id: string; singleton_key: string; group_id: string; data: unknown }[]>`
    SELECT id, data->>'callId' AS call_id, singleton_key, group_id, data FROM pgboss.job WHERE name = 'event-deliveries' ORDER BY created_on`
  const apiJob = jobs.find((j) => j.call_id === viaApi.id)!
  const sqlDelivery = jobs.find((j) => j.call_id === viaSql.id)!
  t.same(sqlDelivery.data, { endpointId, callId: viaSql.id, batchId: null })
  t.equal(sqlDelivery.singleton_key, `${endpointId}:${viaSql.id}`)
  t.equal(sqlDelivery.group_id, endpointId)
  t.same(await jobShape(h.sql, sqlDelivery.id), await jobShape(h.sql, apiJob.id), 'the delivery job behaves as the API\'s')

  const counts = await h.call('GET', '/metrics')
  t.equal(counts.body.calls.CANCELLED, 2, 'the status counters saw both')
})

t.test('cancel_call on the last open call of a batch completes the batch, as the API does', async (t) => {
  const h = await createHarness(t)
  const res = await h.call('POST', '/calls/batch', { calls: [{ to: newPhone(), scriptId: 's' }, { to: newPhone(), scriptId: 's' }] })
  t.equal(res.status, 201, JSON.stringify(res.body))
  const batchId = res.body.batchId as string
  const ids = (await h.sql<{ id: string }[]>`SELECT id FROM calls WHERE batch_id = ${batchId} ORDER BY batch_index`).map((r) => r.id)
  await h.sql`SELECT cancel_call(${ids[0]!})`
  t.same(await h.sql`SELECT type FROM events WHERE batch_id = ${batchId} AND call_id IS NULL`, [], 'not while a call of it is open')
  await h.sql`SELECT cancel_call(${ids[1]!})`
  const [batch] = await h.sql<BatchRow[]>`
    SELECT b.*, (SELECT jsonb_object_agg(status, n) FROM (SELECT status, count(*)::int AS n FROM calls WHERE batch_id = b.id GROUP BY status) s) AS by_status
    FROM call_batches b WHERE id = ${batchId}`
  t.ok(batch!.completed_at, 'the batch is complete')
  const events = await h.sql<{ type: string; payload: { data: unknown } }[]>`SELECT type, payload FROM events WHERE batch_id = ${batchId} ORDER BY seq`
  t.same(events.map((e) => e.type), ['call.cancelled', 'call.cancelled', 'batch.completed'])
  t.same(events[2]!.payload.data, batchResource(batch!), 'batch.completed carries the batch resource the API would send')
  await h.sql`SELECT cancel_call(${ids[1]!})`.catch(() => {})
  t.equal((await h.sql`SELECT 1 FROM events WHERE type = 'batch.completed'`).length, 1, 'once')
})

t.test('cancel_call refuses a call that is not PENDING, or not there, and changes nothing', async (t) => {
  const h = await createHarness(t)
  await endpoint(h)
  for (const status of ['IN_PROGRESS', 'COMPLETED', 'FAILED', 'EXPIRED'] as const) {
    const call = await insertCall(h, { status })
    const before = await callSnapshot(h, call.id)
    const err = await raised(h.sql`SELECT cancel_call(${call.id})`)
    t.equal(err?.code, '55000', `${status}: object_not_in_prerequisite_state`)
    t.equal(err?.message, `call ${call.id} is ${status}; only a PENDING call can be cancelled`)
    t.ok(err?.hint, 'with a hint')
    t.same(await callSnapshot(h, call.id), before, `${status}: unchanged`)
  }
  const cancelled = await postCall(h, { to: newPhone() })
  await h.sql`SELECT cancel_call(${cancelled.id})`
  const before = await callSnapshot(h, cancelled.id)
  t.equal((await raised(h.sql`SELECT cancel_call(${cancelled.id})`))?.code, '55000', 'a cancelled call cannot be cancelled again')
  t.same(await callSnapshot(h, cancelled.id), before)
  const missing = await raised(h.sql`SELECT cancel_call(${randomUUID()})`)
  t.equal(missing?.code, 'P0002', 'a missing call: no_data_found')
  t.match(missing?.message, /^no call has id /)
  t.same(await h.sql`SELECT type FROM events`, [{ type: 'call.cancelled' }], 'no event for a refused cancel')
})

t.test('retry_call: a FAILED call is dialed again by the worker, under its next dial', async (t) => {
  const h = await createHarness(t)
  await endpoint(h)
  let n = 0
  // The first request is refused for good (the call ends FAILED); the retry's is accepted.
  const fake = await startFakeProvider(t, () => (++n === 1 ? { status: 400, body: { error: 'no such script' } } : { status: 202, body: { callId: `p-${n}` } }))
  await startDispatcher(t, h, fake.url)

  const call = await postCall(h, { to: newPhone() })
  await waitFor('the call to fail', async () => (await callRow(h, call.id)).status === 'FAILED', 30_000)
  const failed = await callRow(h, call.id)
  const [retried] = await h.sql<CallRow[]>`SELECT * FROM retry_call(${call.id})`
  t.equal(retried!.status, 'PENDING')
  t.ok(retried!.expires_at! > new Date(), 'it may wait again')
  // The worker is woken by the retry itself (pollMs is a minute): it dials at once.
  await waitFor('the retry to be dialed', async () => (await callRow(h, call.id)).status === 'IN_PROGRESS' && fake.received.length === 2, 30_000)
  await waitFor('the dial to be recorded', async () => (await callRow(h, call.id)).dialed_at !== null, 30_000)
  t.same(fake.received.map((r) => r.headers['idempotency-key']), [`${call.id}:1`, `${call.id}:2`], 'a new dial, under a new key')
  const row = await callRow(h, call.id)
  t.equal(row.dial, 2)
  t.equal(row.provider_call_id, 'p-2')
  t.not(row.job_id, failed.job_id, 'on a fresh job')
  t.same((await dialsOf(h.sql, [call.id])).map((d) => d.outcome), ['refused', null])
  const events = await eventsOf(h.sql, call.id)
  t.same(events.map((e) => e.type), ['call.failed', 'call.retry_scheduled', 'call.dialed'])
  t.same(events[1]!.payload.data, toResource(retried!, await dialsOf(h.sql, [call.id]).then((d) => d.filter((x) => x.dial === 1))), 'the event carries the call as retried')
})

t.test('retry_call gives an EXPIRED call a job shaped as the API makes them, and time to wait', async (t) => {
  const h = await createHarness(t)
  const api = await postCall(h, { to: newPhone() })
  const call = await insertCall(h, { status: 'EXPIRED' })
  await h.sql`UPDATE calls SET created_at = now() - interval '2 days', expires_at = now() - interval '1 day' WHERE id = ${call.id}`
  const [row] = await h.sql<Array<CallRow & { wait: string }>>`SELECT *, expires_at - now() AS wait FROM retry_call(${call.id})`
  t.equal(row!.status, 'PENDING')
  t.equal(row!.wait, '1 day', 'the same time to wait it first had, from now')
  t.equal(row!.ended_at, null)
  const job = await jobOf(h.sql, call.id)
  t.same({ state: job!.state, key: job!.singleton_key, data: job!.data }, { state: 'created', key: call.phone, data: { callId: call.id } })
  t.same(await jobShape(h.sql, job!.id), await jobShape(h.sql, (await jobOf(h.sql, api.id))!.id), 'the job behaves as the API\'s')

  const other = await insertCall(h, { status: 'EXPIRED' })
  const [given] = await h.sql<CallRow[]>`SELECT * FROM retry_call(${other.id}, '2099-01-01T00:00:00Z')`
  t.same(given!.expires_at, new Date('2099-01-01T00:00:00Z'), 'or the expiry given')
  const third = await insertCall(h, { status: 'EXPIRED' })
  const before = await callSnapshot(h, third.id)
  t.equal((await raised(h.sql`SELECT retry_call(${third.id}, now() - interval '1 minute')`))?.code, '22023', 'an expiry in the past is refused')
  t.same(await callSnapshot(h, third.id), before)
})

t.test('retry_call refuses other states, missing calls and suppressed numbers, and changes nothing', async (t) => {
  const h = await createHarness(t)
  for (const status of ['PENDING', 'IN_PROGRESS', 'COMPLETED'] as const) {
    const call = await insertCall(h, { status })
    const before = await callSnapshot(h, call.id)
    const err = await raised(h.sql`SELECT retry_call(${call.id})`)
    t.equal(err?.code, '55000', status)
    t.equal(err?.message, `call ${call.id} is ${status}; only a FAILED or EXPIRED call can be retried`)
    t.ok(err?.hint)
    t.same(await callSnapshot(h, call.id), before, `${status}: unchanged`)
  }
  const cancelled = await insertCall(h)
  await h.sql`SELECT cancel_call(${cancelled.id})`
  t.equal((await raised(h.sql`SELECT retry_call(${cancelled.id})`))?.code, '55000', 'CANCELLED stays cancelled')
  const suppressed = await insertCall(h, { status: 'FAILED' })
  await h.sql`INSERT INTO suppressions (phone) VALUES (${suppressed.phone})`
  const before = await callSnapshot(h, suppressed.id)
  const err = await raised(h.sql`SELECT retry_call(${suppressed.id})`)
  t.match(err?.message, /do-not-call list/)
  t.same(await callSnapshot(h, suppressed.id), before, 'a number on the do-not-call list is not retried')
  t.equal((await raised(h.sql`SELECT retry_call(${randomUUID()})`))?.code, 'P0002')
  t.same(await h.sql`SELECT type FROM events WHERE type <> 'call.cancelled'`, [], 'no event for a refused retry')
})

t.test('cancel_call racing a claim, 40 rounds: cancelled and never dialed, or claimed and refused', async (t) => {
  const h = await createHarness(t)
  await raceCancelAgainstClaim(t, h, {
    cancel: (id) => raised(h.sql`SELECT cancel_call(${id})`),
    won: (err) => !err,
    refused: (err, label) => t.equal(err?.code, '55000', `${label}: otherwise refused`),
  })
})
