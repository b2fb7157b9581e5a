import { randomUUID } from 'node:crypto'
import postgres from 'postgres'
import t from 'tap'
import { startDispatcher } from './support/dispatcher.ts'
import { startFakeProvider } from './support/fake-provider.ts'
import { insertCall, newPhone, postCall } from './support/factory.ts'
import { addEventSink, createHarness, registerWorker, type Harness } from './support/harness.ts'
import { callRow } from './support/inspect.ts'
import { waitFor } from './support/processes.ts'

// sql/008_operator_views.sql: the views operators read; sql/011: the requests they file.

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
    { call_id: dialed.id, phone: dialed.phone, dial: 1, seconds_in_flight: 90, state: 'dialed: waiting for the final report', provider_call_id: dialed.provider_call_id, worker_id: null, worker: null, started_ok: true },
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

// sql/011_call_actions.sql: cancels and retries requested from psql, carried out by a worker
// through the API's own code (src/services/calls/actions.ts).

const actionOf = async (h: Harness, id: string) => {
  const [row] = await h.sql<Array<{ action: string; outcome: string | null; detail: string | null; requested_by: string }>>`
    SELECT action, outcome, detail, requested_by FROM call_actions WHERE id = ${id}`
  return row!
}
const done = (h: Harness, id: string) => waitFor(`request ${id} to be carried out`, async () => (await actionOf(h, id)).outcome !== null, 30_000)

t.test('request_retry: a worker, woken by the request, retries the call as the API does', async (t) => {
  const h = await createHarness(t)
  await addEventSink(h) // these events are looked at: an endpoint takes them
  let n = 0
  const fake = await startFakeProvider(t, () => (++n === 1 ? { status: 400, body: { error: 'no such script' } } : { status: 202, body: { callId: `p-${n}` } }))
  await startDispatcher(t, h, fake.url) // polls once a minute: only the request's wake-up can get it going
  const call = await postCall(h, { to: newPhone() })
  await waitFor('the call to fail', async () => (await callRow(h, call.id)).status === 'FAILED', 30_000)
  const id = (await h.sql<{ id: string }[]>`SELECT request_retry(${call.id}) AS id`)[0]!.id
  await done(h, id)
  t.match(await actionOf(h, id), { action: 'retry', outcome: 'done', detail: 'the call is PENDING', requested_by: 'postgres' })
  await waitFor('the retry to be dialed', async () => (await callRow(h, call.id)).dialed_at !== null, 30_000)
  t.same(fake.received.map((r) => r.headers['idempotency-key']), [`${call.id}:1`, `${call.id}:2`], 'a new dial, under a new key')
  const events = await h.sql<{ type: string }[]>`SELECT type FROM events WHERE call_id = ${call.id} ORDER BY seq`
  t.same(events.map((e) => e.type), ['call.failed', 'call.retry_scheduled', 'call.dialed'])
})

t.test('request_cancel: done for a PENDING call; refused, with the API’s reason, for one in flight or not there', async (t) => {
  const h = await createHarness(t)
  await addEventSink(h) // these events are looked at: an endpoint takes them
  const fake = await startFakeProvider(t, () => ({ status: 202, body: { callId: 'p' } }))
  await startDispatcher(t, h, fake.url)
  await h.call('POST', '/dispatch/pause') // so the pending call stays PENDING until cancelled
  const pending = await postCall(h, { to: newPhone() })
  const flying = await insertCall(h, { status: 'IN_PROGRESS' })
  const before = await callRow(h, flying.id)
  const missing = randomUUID()
  const ids: string[] = []
  for (const callId of [pending.id, flying.id, missing]) ids.push((await h.sql<{ id: string }[]>`SELECT request_cancel(${callId}) AS id`)[0]!.id)
  for (const id of ids) await done(h, id)
  t.match(await actionOf(h, ids[0]!), { outcome: 'done', detail: 'the call is CANCELLED' })
  t.match(await actionOf(h, ids[1]!), { outcome: 'refused', detail: `Call ${flying.id} is IN_PROGRESS; only a PENDING call can be cancelled. (call_not_pending)` })
  t.match(await actionOf(h, ids[2]!), { outcome: 'refused', detail: `No call has id ${missing}. (call_not_found)` })
  t.equal((await callRow(h, pending.id)).status, 'CANCELLED')
  t.same(await callRow(h, flying.id), before, 'the refused request changed nothing')
  t.same((await h.sql<{ type: string }[]>`SELECT type FROM events`).map((e) => e.type), ['call.cancelled'], 'one event: the cancel that was done')
})

t.test('requests filed at once, two workers: each carried out once', async (t) => {
  const h = await createHarness(t)
  await addEventSink(h) // these events are looked at: an endpoint takes them
  const fake = await startFakeProvider(t, () => ({ status: 202, body: { callId: 'p' } }))
  await h.call('POST', '/dispatch/pause')
  const calls = await Promise.all(Array.from({ length: 12 }, () => postCall(h, { to: newPhone() })))
  await startDispatcher(t, h, fake.url)
  await startDispatcher(t, h, fake.url)
  await h.sql.begin(async (tx) => {
    for (const call of calls) await tx`SELECT request_cancel(${call.id})`
  })
  await waitFor('every request to be carried out', async () => (await h.sql`SELECT 1 FROM call_actions WHERE done_at IS NULL`).length === 0, 30_000)
  const outcomes = await h.sql<{ outcome: string; n: number }[]>`SELECT outcome, count(*)::int AS n FROM call_actions GROUP BY outcome`
  t.same(outcomes, [{ outcome: 'done', n: 12 }])
  const [events] = await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM events WHERE type = 'call.cancelled'`
  t.equal(events!.n, 12, 'one call.cancelled each')
})

t.test('the request functions are not PUBLIC, and name everything by schema', async (t) => {
  const h = await createHarness(t)
  await h.sql`CREATE ROLE orchestrator_stranger NOLOGIN`
  t.teardown(() => h.sql`DROP ROLE IF EXISTS orchestrator_stranger`.then(() => {}))
  const [row] = await h.sql<{ cancel: boolean; retry: boolean }[]>`
    SELECT has_function_privilege('orchestrator_stranger', 'request_cancel(uuid)', 'EXECUTE') AS cancel,
           has_function_privilege('orchestrator_stranger', 'request_retry(uuid, timestamptz)', 'EXECUTE') AS retry`
  t.same(row, { cancel: false, retry: false })
  const configs = await h.sql<{ config: string[] }[]>`SELECT proconfig AS config FROM pg_proc WHERE proname IN ('request_cancel', 'request_retry')`
  t.same(configs.map((c) => c.config), [['search_path=pg_catalog, pg_temp'], ['search_path=pg_catalog, pg_temp']])
})

t.test('orchestrator_operator reads and files requests, and can change nothing else', async (t) => {
  const h = await createHarness(t)
  const alice = `orchestrator_test_alice_${randomUUID().slice(0, 8)}`
  // A password too: the embedded server (npm test without DATABASE_URL) asks for one.
  const password = randomUUID()
  await h.sql.unsafe(`CREATE ROLE ${alice} LOGIN PASSWORD '${password}' IN ROLE orchestrator_operator`)
  const asAlice = postgres(h.url, { max: 1, username: alice, password, onnotice: () => {} })
  t.teardown(async () => {
    await asAlice.end({ timeout: 1 })
    await h.sql.unsafe(`DROP OWNED BY ${alice}`)
    await h.sql.unsafe(`DROP ROLE ${alice}`)
  })
  const call = await postCall(h, { to: newPhone() })
  t.same((await asAlice`SELECT count(*)::int AS n FROM phone_backlog`)[0], { n: 1 }, 'reads the views')
  t.same((await asAlice`SELECT status FROM calls WHERE id = ${call.id}`)[0], { status: 'PENDING' }, 'and the tables')
  t.ok((await asAlice`SELECT request_cancel(${call.id}) AS id`)[0]!.id, 'files a request')
  for (const [what, statement] of [
    ['UPDATE calls', asAlice`UPDATE calls SET status = 'CANCELLED' WHERE id = ${call.id}`],
    ['DELETE FROM pgboss.job', asAlice`DELETE FROM pgboss.job`],
    ['UPDATE call_actions', asAlice`UPDATE call_actions SET outcome = 'done', done_at = now()`],
    ['fold_call_status_changes()', asAlice`SELECT fold_call_status_changes()`],
  ] as const) {
    t.equal(await statement.then(() => 'allowed', (err: { code?: string }) => err.code), '42501', `${what}: permission denied`)
  }
})

t.test('a function planted earlier on the search path stands in for nothing of ours', async (t) => {
  const h = await createHarness(t)
  // A schema first on the session's path, with a pg_notify overload and a decoy counts table.
  await h.sql`CREATE SCHEMA planted`
  await h.sql`CREATE TABLE planted.call_status_changes (status call_status, delta bigint)`
  await h.sql`CREATE FUNCTION planted.pg_notify(text, text) RETURNS void LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION 'planted function ran'; END$$`
  const planted = postgres(h.url, { max: 1, onnotice: () => {}, connection: { search_path: 'planted, public, pg_catalog' } })
  t.teardown(() => planted.end({ timeout: 1 }))
  const call = await postCall(h, { to: newPhone() })
  t.ok((await planted`SELECT request_cancel(${call.id}) AS id`)[0]!.id, 'request_cancel calls pg_catalog.pg_notify')
  await planted`INSERT INTO public.calls (id, phone, script_id, job_id, expires_at) VALUES (${randomUUID()}, ${newPhone()}, 's', ${randomUUID()}, now() + interval '1 day')`
  t.same(await planted`SELECT * FROM planted.call_status_changes`, [], 'the counting trigger wrote to public.call_status_changes, not the decoy')
  t.ok((await planted`SELECT public.fold_call_status_changes() AS n`)[0]!.n >= 1, 'and the fold read it there')
  const configs = await h.sql<{ name: string; config: string[] | null; public: boolean }[]>`
    SELECT p.proname AS name, p.proconfig AS config,
           COALESCE(bool_or(a.grantee = 0), false) AS public
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    LEFT JOIN LATERAL aclexplode(COALESCE(p.proacl, acldefault('f', p.proowner))) a ON a.privilege_type = 'EXECUTE'
    WHERE n.nspname = 'public' GROUP BY p.proname, p.proconfig ORDER BY 1`
  for (const f of configs) {
    t.match(f.config?.join(), /^search_path=pg_catalog, (public|pg_temp)$/, `${f.name}: search_path pinned`)
    t.equal(f.public, false, `${f.name}: not executable by PUBLIC`)
  }
})
