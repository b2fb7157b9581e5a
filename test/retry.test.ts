import { randomUUID } from 'node:crypto'
import t from 'tap'
import { toResource } from '../src/domain/call.ts'
import { dialsOf } from '../src/store/dials.ts'
import type { Sql } from '../src/store/sql.ts'
import { startDispatcher } from './support/dispatcher.ts'
import { startFakeProvider } from './support/fake-provider.ts'
import { insertCall, newPhone, postCall } from './support/factory.ts'
import { addEventSink, createHarness, type Harness } from './support/harness.ts'
import { callRow, callSnapshot, jobOf } from './support/inspect.ts'
import { runBinary, waitFor } from './support/processes.ts'

// POST /calls/:id/retry and bin/orchestrator calls retry|cancel: a FAILED or EXPIRED call dialed
// again, with one implementation (src/services/calls/service.ts) behind both.

async function eventsOf(sql: Sql, callId: string) {
  return sql<Array<{ id: string; type: string; payload: { type: string; timestamp: string; data: any } }>>`
    SELECT id, type, payload FROM events WHERE call_id = ${callId} ORDER BY seq`
}

/** The pg-boss columns that say how a job behaves: what every job of a call must share. */
async function jobShape(sql: Sql, jobId: string) {
  const [job] = await sql<Record<string, unknown>[]>`
    SELECT name, state, priority, policy, retry_limit, retry_delay, retry_backoff, retry_delay_max, expire_seconds,
           deletion_seconds, keep_until - start_after AS retention, group_tier, dead_letter, heartbeat_seconds,
           blocked, blocking, pending_dependencies, singleton_on, singleton_key, data
    FROM pgboss.job WHERE id = ${jobId}`
  return job
}

const endpoint = async (h: Harness) => {
  const res = await h.call('POST', '/event-endpoints', { url: 'http://127.0.0.1:9/events' })
  if (res.status !== 201) throw new Error(`POST /event-endpoints answered ${res.status}: ${JSON.stringify(res.body)}`)
  return res.body.id as string
}

t.test('a FAILED call, retried, is dialed again by the worker under its next dial', async (t) => {
  const h = await createHarness(t)
  await endpoint(h)
  let n = 0
  // The first request is refused for good (the call ends FAILED); the retry's is accepted.
  const fake = await startFakeProvider(t, () => (++n === 1 ? { status: 400, body: { error: 'no such script' } } : { status: 202, body: { callId: `p-${n}` } }))
  await startDispatcher(t, h, fake.url)

  const call = await postCall(h, { to: newPhone() })
  await waitFor('the call to fail', async () => (await callRow(h, call.id)).status === 'FAILED', 30_000)
  const failed = await callRow(h, call.id)
  const res = await h.call('POST', `/calls/${call.id}/retry`)
  t.equal(res.status, 200, JSON.stringify(res.body))
  t.equal(res.body.status, 'PENDING')
  t.equal(res.body.lastError, null, 'the error of the dial that ended it is in its dials, not on the call')
  t.ok(new Date(res.body.expiresAt) > new Date(), 'it may wait again')
  // The worker is woken by the retry itself (pollMs is a minute): it dials at once.
  await waitFor('the retry to be dialed', async () => (await callRow(h, call.id)).dialed_at !== null && fake.received.length === 2, 30_000)
  t.same(fake.received.map((r) => r.headers['idempotency-key']), [`${call.id}:1`, `${call.id}:2`], 'a new dial, under a new key')
  const row = await callRow(h, call.id)
  t.equal(row.dial, 2)
  t.equal(row.provider_call_id, 'p-2')
  t.not(row.job_id, failed.job_id, 'on a fresh job')
  t.same((await dialsOf(h.sql, [call.id])).map((d) => d.outcome), ['refused', null])
  const events = await eventsOf(h.sql, call.id)
  t.same(events.map((e) => e.type), ['call.failed', 'call.retry_scheduled', 'call.dialed'])
  t.same(events[1]!.payload.data, res.body, 'the event carries the call as the answer shows it')
})

t.test('an EXPIRED call gets a job like any call’s, and as long to wait as it first had', async (t) => {
  const h = await createHarness(t)
  const api = await postCall(h, { to: newPhone() })
  const call = await insertCall(h, { status: 'EXPIRED' })
  await h.sql`UPDATE calls SET created_at = now() - interval '2 days', expires_at = now() - interval '1 day' WHERE id = ${call.id}`
  const res = await h.call('POST', `/calls/${call.id}/retry`)
  t.equal(res.status, 200, JSON.stringify(res.body))
  const [row] = await h.sql<Array<{ status: string; hours: number; ended_at: Date | null }>>`
    SELECT status, round(extract(epoch FROM expires_at - now()) / 3600)::int AS hours, ended_at FROM calls WHERE id = ${call.id}`
  t.same(row, { status: 'PENDING', hours: 24, ended_at: null }, 'the same time to wait it first had (a day), from now')
  const job = await jobOf(h.sql, call.id)
  t.same({ state: job!.state, key: job!.singleton_key, data: job!.data }, { state: 'created', key: call.phone, data: { callId: call.id } })
  const shape = ({ singleton_key: _k, data: _d, ...rest }: Record<string, unknown>) => rest
  t.same(shape((await jobShape(h.sql, job!.id))!), shape((await jobShape(h.sql, (await jobOf(h.sql, api.id))!.id))!), 'the job behaves as a created call’s')

  const other = await insertCall(h, { status: 'EXPIRED' })
  const until = new Date(Date.now() + 30 * 86_400_000).toISOString()
  const given = await h.call('POST', `/calls/${other.id}/retry`, { expiresAt: until })
  t.equal(given.body.expiresAt, until, 'or until the expiry given')
  const third = await insertCall(h, { status: 'EXPIRED' })
  const before = await callSnapshot(h, third.id)
  const past = await h.call('POST', `/calls/${third.id}/retry`, { expiresAt: new Date(Date.now() - 60_000).toISOString() })
  t.equal(past.status, 400, 'an expiry in the past is refused')
  t.match(past.body.detail, /body\.expiresAt must be in the future/)
  t.same(await callSnapshot(h, third.id), before)
})

t.test('other states, missing calls and numbers on the do-not-call list are refused, and nothing changes', async (t) => {
  const h = await createHarness(t)
  await endpoint(h)
  for (const status of ['PENDING', 'IN_PROGRESS', 'COMPLETED'] as const) {
    const call = await insertCall(h, { status })
    const before = await callSnapshot(h, call.id)
    const res = await h.call('POST', `/calls/${call.id}/retry`)
    t.equal(res.status, 409, status)
    t.equal(res.body.code, 'call_not_retryable')
    t.equal(res.body.callStatus, status)
    t.equal(res.body.detail, `Call ${call.id} is ${status}; only a FAILED or EXPIRED call can be retried.`)
    t.same(await callSnapshot(h, call.id), before, `${status}: unchanged`)
  }
  const cancelled = await postCall(h, { to: newPhone() })
  t.equal((await h.call('POST', `/calls/${cancelled.id}/cancel`)).status, 200)
  t.equal((await h.call('POST', `/calls/${cancelled.id}/retry`)).body.code, 'call_not_retryable', 'CANCELLED stays cancelled')
  const suppressed = await insertCall(h, { status: 'FAILED' })
  await h.sql`INSERT INTO suppressions (phone) VALUES (${suppressed.phone})`
  const before = await callSnapshot(h, suppressed.id)
  const res = await h.call('POST', `/calls/${suppressed.id}/retry`)
  t.same([res.status, res.body.code], [422, 'phone_suppressed'])
  t.same(await callSnapshot(h, suppressed.id), before, 'a number on the do-not-call list is not retried')
  t.equal((await h.call('POST', `/calls/${randomUUID()}/retry`)).status, 404)
  t.equal((await h.call('POST', '/calls/nope/retry')).status, 400)
  t.same(await h.sql`SELECT type FROM events WHERE type <> 'call.cancelled'`, [], 'no event for a refused retry')
})

t.test('ten retries of one call at once: one wins, the rest are refused, one job', async (t) => {
  const h = await createHarness(t)
  await addEventSink(h) // these events are looked at: an endpoint takes them
  const call = await insertCall(h, { status: 'FAILED' })
  const answers = await Promise.all(Array.from({ length: 10 }, () => h.call('POST', `/calls/${call.id}/retry`)))
  t.same(answers.map((a) => a.status).sort(), [200, ...Array(9).fill(409)])
  const [jobs] = await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM pgboss.job WHERE name = 'calls' AND data->>'callId' = ${call.id} AND state = 'created'`
  t.equal(jobs!.n, 1)
  t.equal((await eventsOf(h.sql, call.id)).length, 1, 'one call.retry_scheduled')
})

t.test('bin/orchestrator calls retry and cancel do what the API does, through the same code', async (t) => {
  const h = await createHarness(t)
  await addEventSink(h) // these events are looked at: an endpoint takes them
  const env = { DATABASE_URL: h.url, LOG_LEVEL: 'warn' }
  const failed = await insertCall(h, { status: 'FAILED' })
  const until = new Date(Date.now() + 30 * 86_400_000).toISOString()
  const retry = runBinary(t, 'calls', env, ['retry', failed.id, '--expires-at', until])
  t.equal(await retry.exited, 0, retry.output())
  const shown = JSON.parse(retry.output())
  t.same({ id: shown.id, status: shown.status, expiresAt: shown.expiresAt }, { id: failed.id, status: 'PENDING', expiresAt: until })
  t.same(shown, toResource(await callRow(h, failed.id)), 'it prints the call as the API shows it')
  t.same((await eventsOf(h.sql, failed.id)).map((e) => e.type), ['call.retry_scheduled'])

  const cancel = runBinary(t, 'calls', env, ['cancel', failed.id])
  t.equal(await cancel.exited, 0, cancel.output())
  t.equal((await callRow(h, failed.id)).status, 'CANCELLED')
  t.equal(await jobOf(h.sql, failed.id), undefined, 'its job deleted, as the API deletes it')

  const again = runBinary(t, 'calls', env, ['cancel', failed.id])
  t.equal(await again.exited, 1, 'refused: exit 1')
  t.match(again.output(), /is CANCELLED; only a PENDING call can be cancelled\. \(call_not_pending\)/)
  const usage = runBinary(t, 'calls', env, ['retry', 'not-a-uuid'])
  t.equal(await usage.exited, 2, 'bad usage: exit 2')
  t.match(usage.output(), /is not a call id/)
})
