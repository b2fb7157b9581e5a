import t from 'tap'
import { insertCall, newPhone } from './support/factory.ts'
import { createHarness, registerWorker } from './support/harness.ts'

// sql/008_operator_views.sql: the views operators read.

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
