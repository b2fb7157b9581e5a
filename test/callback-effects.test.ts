import t from 'tap'
import { claimCalls } from '../src/services/dispatch/claim.ts'
import { recordDialResult } from '../src/services/dispatch/record.ts'
import type { Harness } from './support/harness.ts'
import { createHarness, registerWorker } from './support/harness.ts'
import { callbackPath, deliver, inFlightCall, POLICY, sendSigned, signHeaders } from './support/callbacks.ts'
import { newPhone, postCall } from './support/factory.ts'
import { callRow, callSnapshot, inFlightCount, jobState, verdicts } from './support/inspect.ts'

// What a provider callback does to a call and its pg-boss job: final statuses, idempotency
// per webhook-id (also under concurrency), callbacks for ended calls, callbacks that beat the
// dial's 202, unknown calls, invalid bodies, and the concurrency slot it frees.

const providerId = () => `prov-${Math.random().toString(36).slice(2)}`

async function callbackRows(h: Harness, callId: string) {
  return h.sql<{ verdict: string; webhook_id: string | null; provider_status: string | null; provider_call_id: string | null }[]>`
    SELECT verdict, webhook_id, provider_status, provider_call_id FROM callbacks WHERE call_id = ${callId} ORDER BY id`
}

t.test('final statuses', async (t) => {
  const h = await createHarness(t)
  const worker = await registerWorker(h)

  t.test('COMPLETED completes the call, its job, and frees its slot', async (t) => {
    const pid = providerId()
    const call = await inFlightCall(h, worker, newPhone(), pid)
    t.equal(await jobState(h, call.job_id), 'active', 'job active while in flight')
    const inFlightBefore = await inFlightCount(h)
    const completedAt = '2025-03-04T05:06:07.891Z'
    const res = await sendSigned(h, call.id, { callId: pid, status: 'COMPLETED', durationSec: 93, completedAt })
    t.equal(res.status, 200)
    t.same(res.body, { verdict: 'applied', callId: call.id, status: 'COMPLETED' })

    const row = await callRow(h, call.id)
    t.equal(row.status, 'COMPLETED')
    t.equal(row.ended_at?.toISOString(), completedAt, 'ended_at is the provider completedAt')
    t.equal(row.duration_sec, 93)
    t.equal(row.provider_status, 'COMPLETED')
    t.equal(row.provider_call_id, pid)
    t.equal(row.last_error, null)
    t.equal(await jobState(h, call.job_id), 'completed', 'pg-boss job completed')
    t.equal(await inFlightCount(h), inFlightBefore - 1, 'in-flight count dropped')

    const api = await h.call('GET', `/calls/${call.id}`)
    t.equal(api.body.status, 'COMPLETED')
    t.equal(api.body.durationSec, 93)
    t.equal(api.body.providerStatus, 'COMPLETED')
    t.equal(api.body.endedAt, completedAt)
    const m = await h.call('GET', '/metrics')
    t.equal(m.body.inFlight, inFlightBefore - 1)

    t.same((await callbackRows(h, call.id)).map((r) => [r.verdict, r.provider_status, r.provider_call_id]), [['applied', 'COMPLETED', pid]])
  })

  t.test('COMPLETED without durationSec or completedAt', async (t) => {
    const pid = providerId()
    const call = await inFlightCall(h, worker, newPhone(), pid)
    const before = Date.now()
    const res = await sendSigned(h, call.id, { callId: pid, status: 'COMPLETED' })
    t.equal(res.status, 200)
    const row = await callRow(h, call.id)
    t.equal(row.status, 'COMPLETED')
    t.equal(row.duration_sec, null)
    t.ok(row.ended_at && row.ended_at.getTime() >= before - 5_000, 'ended_at defaults to now')
  })

  for (const status of ['FAILED', 'BUSY', 'NO_ANSWER']) {
    t.test(`${status} fails the call, naming the provider status`, async (t) => {
      const pid = providerId()
      const call = await inFlightCall(h, worker, newPhone(), pid)
      const inFlightBefore = await inFlightCount(h)
      const res = await sendSigned(h, call.id, { callId: pid, status, durationSec: 0, completedAt: new Date().toISOString() })
      t.equal(res.status, 200)
      t.same(res.body, { verdict: 'applied', callId: call.id, status: 'FAILED' })
      const row = await callRow(h, call.id)
      t.equal(row.status, 'FAILED')
      t.equal(row.provider_status, status)
      t.match(row.last_error, new RegExp(`\\b${status}\\b`), 'last_error names the provider status')
      t.equal(row.duration_sec, 0)
      t.equal(await jobState(h, call.job_id), 'completed')
      t.equal(await inFlightCount(h), inFlightBefore - 1)
    })
  }
})

t.test('idempotency per webhook-id', async (t) => {
  const h = await createHarness(t)
  const worker = await registerWorker(h)

  t.test('the same webhook-id delivered twice is applied once', async (t) => {
    const pid = providerId()
    const call = await inFlightCall(h, worker, newPhone(), pid)
    const body = JSON.stringify({ callId: pid, status: 'COMPLETED', durationSec: 10, completedAt: '2025-01-01T00:00:10Z' })
    const first = await deliver(h, body, signHeaders(body, { id: 'msg_twice' }), callbackPath(call.id))
    t.equal(first.status, 200)
    t.equal(first.body.verdict, 'applied')
    const afterFirst = await callSnapshot(h, call.id)
    // A redelivery is signed afresh (new timestamp), with the same id.
    const second = await deliver(h, body, signHeaders(body, { id: 'msg_twice', at: new Date(Date.now() + 1000) }), callbackPath(call.id))
    t.equal(second.status, 200)
    t.equal(second.body.verdict, 'duplicate')
    t.equal(second.body.callId, call.id)
    t.same(await callSnapshot(h, call.id), afterFirst, 'the call changed once')
    const [row] = await h.sql<{ verdict: string; webhook_id: string; repeats: number }[]>`
      SELECT verdict, webhook_id, repeats FROM callbacks WHERE call_id = ${call.id}`
    t.same(row, { verdict: 'applied', webhook_id: 'msg_twice', repeats: 1 }, 'one row, the repeat counted on it')
  })

  t.test('a redelivery with a different status is still a duplicate', async (t) => {
    const pid = providerId()
    const call = await inFlightCall(h, worker, newPhone(), pid)
    await sendSigned(h, call.id, { callId: pid, status: 'BUSY' }, { id: 'msg_changed' })
    const afterFirst = await callSnapshot(h, call.id)
    const second = await sendSigned(h, call.id, { callId: pid, status: 'COMPLETED', durationSec: 5 }, { id: 'msg_changed' })
    t.equal(second.status, 200)
    t.equal(second.body.verdict, 'duplicate')
    t.same(await callSnapshot(h, call.id), afterFirst)
    t.equal(afterFirst.call.status, 'FAILED')
  })

  t.test('10 concurrent deliveries of one webhook-id: exactly one is applied', async (t) => {
    const pid = providerId()
    const call = await inFlightCall(h, worker, newPhone(), pid)
    const body = JSON.stringify({ callId: pid, status: 'COMPLETED', durationSec: 61 })
    const deliveries = await Promise.all(
      Array.from({ length: 10 }, () => deliver(h, body, signHeaders(body, { id: 'msg_storm' }), callbackPath(call.id))),
    )
    t.same(deliveries.map((d) => d.status), Array(10).fill(200), 'all answered 200')
    const answered = deliveries.map((d) => d.body.verdict).sort()
    t.same(answered, ['applied', ...Array(9).fill('duplicate')], 'one applied, nine duplicates')
    const [applied] = await h.sql<{ n: number }[]>`
      SELECT count(*)::int AS n FROM callbacks WHERE webhook_id = 'msg_storm' AND verdict = 'applied'`
    t.equal(applied!.n, 1, "one 'applied' row")
    const row = await callRow(h, call.id)
    t.equal(row.status, 'COMPLETED')
    t.equal(row.duration_sec, 61)
    t.equal(await jobState(h, call.job_id), 'completed')
  })

  t.test('a different callback for a call that already ended is already_final', async (t) => {
    const pid = providerId()
    const call = await inFlightCall(h, worker, newPhone(), pid)
    await sendSigned(h, call.id, { callId: pid, status: 'COMPLETED', durationSec: 30, completedAt: '2025-02-02T02:02:02Z' })
    const afterFirst = await callSnapshot(h, call.id)
    for (const status of ['FAILED', 'NO_ANSWER']) {
      const res = await sendSigned(h, call.id, { callId: pid, status, durationSec: 1 })
      t.equal(res.status, 200)
      t.same(res.body, { verdict: 'already_final', callId: call.id, status: 'COMPLETED' })
    }
    t.same(await callSnapshot(h, call.id), afterFirst, 'no change')
    t.same((await callbackRows(h, call.id)).map((r) => r.verdict), ['applied', 'already_final', 'already_final'])
  })
})

t.test('ordering against the dial', async (t) => {
  const h = await createHarness(t)
  const worker = await registerWorker(h)

  t.test("a callback that beats the dial's 202 is applied; the late 202 is stale", async (t) => {
    const call = await inFlightCall(h, worker, newPhone(), null)
    const before = await callRow(h, call.id)
    t.equal(before.status, 'IN_PROGRESS')
    t.equal(before.provider_call_id, null)
    const pid = providerId()
    const res = await sendSigned(h, call.id, { callId: pid, status: 'COMPLETED', durationSec: 7, completedAt: '2025-05-05T05:05:05Z' })
    t.equal(res.status, 200)
    t.equal(res.body.verdict, 'applied')
    let row = await callRow(h, call.id)
    t.equal(row.status, 'COMPLETED')
    t.equal(row.provider_call_id, pid, 'the provider id comes from the callback')
    t.equal(await jobState(h, call.job_id), 'completed')
    t.ok(row.dialed_at, 'marked dialed by the report itself: the provider placed it (call.dialed is told first)')
    const dialedAt = row.dialed_at!.getTime()

    const late = await recordDialResult(h.sql, h.queue, POLICY, call, { kind: 'accepted', providerCallId: pid })
    t.equal(late.outcome, 'stale')
    row = await callRow(h, call.id)
    t.equal(row.status, 'COMPLETED', 'still COMPLETED')
    t.equal(row.provider_call_id, pid, 'provider id recorded')
    t.equal(row.dialed_at?.getTime(), dialedAt, 'the late 202 changes nothing')
    t.equal(row.duration_sec, 7)
    t.equal(row.ended_at?.toISOString(), '2025-05-05T05:05:05.000Z')
  })

  t.test('a callback for a call that does not exist, at a URL we issued for it, is 404 and kept as unknown_call', async (t) => {
    const counts = await verdicts(h)
    const pid = providerId()
    const missing = '00000000-0000-4000-8000-000000000000'
    const res = await sendSigned(h, missing, { callId: pid, status: 'COMPLETED' })
    t.equal(res.status, 404)
    t.match(res.contentType, /^application\/problem\+json/)
    t.equal(res.body.code, 'call_not_found')
    const after = await verdicts(h)
    t.equal(after.unknown_call ?? 0, (counts.unknown_call ?? 0) + 1)
    t.equal(after.applied ?? 0, counts.applied ?? 0)
    const rows = await h.sql`SELECT call_id, dial, provider_call_id, webhook_id FROM callbacks WHERE verdict = 'unknown_call'`
    t.equal(rows.length, 1)
    t.same(rows[0], { call_id: null, dial: 1, provider_call_id: pid, webhook_id: rows[0]!.webhook_id })
    t.ok(rows[0]!.webhook_id)
  })
})

t.test('invalid callbacks are 400 and change nothing', async (t) => {
  const h = await createHarness(t)
  const worker = await registerWorker(h)
  const pid = providerId()
  const call = await inFlightCall(h, worker, newPhone(), pid)
  const good = { callId: pid, status: 'COMPLETED', durationSec: 3, completedAt: '2025-01-01T00:00:00Z' }
  const cases: Array<[string, string, string]> = [
    ['malformed JSON', '{"callId": "x", "status": ', call.id],
    ['an empty body', '', call.id],
    ['a JSON array', '[]', call.id],
    ['missing status', JSON.stringify({ callId: pid }), call.id],
    ['missing callId', JSON.stringify({ status: 'COMPLETED' }), call.id],
    ['empty callId', JSON.stringify({ ...good, callId: '' }), call.id],
    ['unknown status RINGING', JSON.stringify({ ...good, status: 'RINGING' }), call.id],
    ['lower-case status', JSON.stringify({ ...good, status: 'completed' }), call.id],
    ['negative durationSec', JSON.stringify({ ...good, durationSec: -1 }), call.id],
    ['fractional durationSec', JSON.stringify({ ...good, durationSec: 1.5 }), call.id],
    ['string durationSec', JSON.stringify({ ...good, durationSec: '3' }), call.id],
    ['durationSec beyond a Postgres integer', JSON.stringify({ ...good, durationSec: 2 ** 31 }), call.id],
    ['bad completedAt', JSON.stringify({ ...good, completedAt: 'yesterday' }), call.id],
    ['completedAt in year 0', JSON.stringify({ ...good, completedAt: '0000-06-01T00:00:00Z' }), call.id],
    ['completedAt before year 1 in UTC', JSON.stringify({ ...good, completedAt: '0001-01-01T00:00:00+01:00' }), call.id],
    ['numeric completedAt', JSON.stringify({ ...good, completedAt: 1735689600 }), call.id],
    ['a NUL in the provider callId', JSON.stringify({ ...good, callId: 'p\u0000' }), call.id],
    ['a lone surrogate in the provider callId', JSON.stringify({ ...good, callId: 'p\ud800' }), call.id],
  ]
  for (const [name, body, query] of cases) {
    t.test(name, async (t) => {
      const before = await callSnapshot(h, call.id)
      const counts = await verdicts(h)
      const res = await deliver(h, body, signHeaders(body), callbackPath(query))
      t.equal(res.status, 400)
      t.match(res.contentType, /^application\/problem\+json/)
      t.equal(res.body.status, 400)
      t.match(res.body.code, /^(malformed_json|validation_failed)$/)
      t.same(await callSnapshot(h, call.id), before, 'nothing changed')
      const after = await verdicts(h)
      t.equal(after.rejected ?? 0, (counts.rejected ?? 0) + 1, "kept as 'rejected': it was authenticated, at the call's own URL")
      t.equal(after.applied ?? 0, counts.applied ?? 0)
      const [last] = await h.sql`SELECT call_id, body, reason FROM callbacks ORDER BY id DESC LIMIT 1`
      t.equal(last!.call_id, call.id)
      t.equal(last!.body, null, 'without its body')
      t.ok(last!.reason)
    })
  }

  t.test('a rejected body does not burn its webhook-id', async (t) => {
    const body = JSON.stringify({ ...good, status: 'RINGING' })
    await deliver(h, body, signHeaders(body, { id: 'msg_fixed_later' }), callbackPath(call.id))
    const fixed = JSON.stringify(good)
    const res = await deliver(h, fixed, signHeaders(fixed, { id: 'msg_fixed_later' }), callbackPath(call.id))
    t.equal(res.status, 200)
    t.equal(res.body.verdict, 'applied')
    t.equal((await callRow(h, call.id)).status, 'COMPLETED')
  })
})

t.test('a callback frees the phone for its next PENDING call', async (t) => {
  const h = await createHarness(t)
  const worker = await registerWorker(h)
  const phone = newPhone()
  const pid = providerId()
  const first = await inFlightCall(h, worker, phone, pid)
  const second = (await postCall(h, { to: phone })).id

  const blocked = await claimCalls(h.sql, h.queue, POLICY, worker, 30)
  t.same(blocked.claimed.map((c) => c.id), [], 'the second call is blocked while the first is in flight')
  t.equal((await callRow(h, second)).status, 'PENDING')

  const res = await sendSigned(h, first.id, { callId: pid, status: 'COMPLETED', durationSec: 12 })
  t.equal(res.body.verdict, 'applied')

  const freed = await claimCalls(h.sql, h.queue, POLICY, worker, 30)
  t.same(freed.claimed.map((c) => c.id), [second], 'the second call is claimed once the first ended')
  const row = await callRow(h, second)
  t.equal(row.status, 'IN_PROGRESS')
  t.equal(await jobState(h, row.job_id), 'active')
})

t.test('a completedAt that names no real day is refused, not moved to the next month', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  const call = await inFlightCall(h, w, '+15553900001', 'prov-feb30')
  const res = await sendSigned(h, call.id, { callId: 'prov-feb30', status: 'COMPLETED', completedAt: '2024-02-30T10:00:00Z' })
  t.equal(res.status, 400)
  t.match(res.body.detail, /real date/)
  t.equal((await callRow(h, call.id)).status, 'IN_PROGRESS')
})
