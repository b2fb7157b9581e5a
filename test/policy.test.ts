import t from 'tap'
import { NO_POLICY, type CallingPolicy } from '../src/domain/policy.ts'
import { claimCalls, type DispatchPolicy } from '../src/services/dispatch/claim.ts'
import { recordDialResult } from '../src/services/dispatch/record.ts'
import { sweep } from '../src/services/dispatch/sweeps.ts'
import { TEST_DISPATCH } from './support/dispatcher.ts'
import { sendSigned } from './support/callbacks.ts'
import { insertCall, newPhone, postCall } from './support/factory.ts'
import { createHarness, registerWorker, type Harness } from './support/harness.ts'
import { callRow, jobOf } from './support/inspect.ts'

// The calling policy, rule by rule: notBefore, calling windows, outcome retries, per-person
// caps, each decided in the claim; a call that must wait keeps a job due when it may go.

/** A worker's policy as the in-process test workers have it. */
const base: DispatchPolicy = TEST_DISPATCH

const withPolicy = (calling: CallingPolicy): DispatchPolicy => ({ ...base, calling })
const claimIds = async (h: Harness, policy: DispatchPolicy, worker: number) => (await claimCalls(h.sql, h.queue, policy, worker, 30)).claimed.map((c) => c.id)

/** Time passing: the call's job (and its due time) come due now. */
const makeDue = (h: Harness, id: string) =>
  h.sql`UPDATE pgboss.job SET start_after = now() WHERE id = (SELECT job_id FROM calls WHERE id = ${id})`

/** HH:MM:SS in UTC, `seconds` from now. */
const utcClock = (seconds: number) => new Date(Date.now() + seconds * 1000).toISOString().slice(11, 19)
const ALL_DAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat']

t.test('notBefore: the call waits, visibly, and its job is due then; PATCH can move it', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  const at = new Date(Date.now() + 3_600_000).toISOString()
  const call = await postCall(h, { to: newPhone(), notBefore: at })
  t.equal(call.status, 'PENDING')
  const res = await h.call('GET', `/calls/${call.id}`)
  t.equal(res.body.notBefore, at)
  t.equal(res.body.nextAttemptAt, at)
  t.equal(res.body.waitingFor, 'notBefore')
  const [job] = await h.sql<{ start_after: Date }[]>`SELECT start_after FROM pgboss.job WHERE id = (SELECT job_id FROM calls WHERE id = ${call.id})`
  t.equal(job!.start_after.toISOString(), at, 'its job is due then, so no claim fetches it before')
  t.same(await claimIds(h, base, w), [])

  // Even a job that comes due early (a policy change, a manual fix) is checked in the claim.
  await makeDue(h, call.id)
  t.same(await claimIds(h, base, w), [], 'the claim refuses it and moves its job back')
  t.equal((await callRow(h, call.id)).waiting_for, 'not_before')

  const patched = await h.call('PATCH', `/calls/${call.id}`, { notBefore: null })
  t.equal(patched.status, 200)
  t.equal(patched.body.waitingFor, null)
  t.equal(patched.body.nextAttemptAt, null)
  t.same(await claimIds(h, base, w), [call.id], 'no longer scheduled: dialed')
})

t.test('a call outside its calling window waits; inside it is dialed; its expiry can come first', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  // A window that opens an hour from now, in UTC.
  const closed = { days: ALL_DAYS, start: utcClock(3600), end: utcClock(7200), timezone: 'UTC' }
  const later = await postCall(h, { to: newPhone(), callingWindow: closed })
  t.equal(later.status, 'PENDING')
  const shown = await h.call('GET', `/calls/${later.id}`)
  t.equal(shown.body.waitingFor, 'callingWindow')
  t.same(shown.body.timeZones, ['UTC'])
  const opens = new Date(shown.body.nextAttemptAt).getTime() - Date.now()
  t.ok(opens > 3_590_000 && opens <= 3_600_000, `due when the window opens (${opens} ms)`)
  t.same(await claimIds(h, base, w), [])
  await makeDue(h, later.id)
  t.same(await claimIds(h, base, w), [], 'a job due early is refused by the claim')
  t.equal((await callRow(h, later.id)).status, 'PENDING', 'neither dialed nor failed')

  const open = { days: ALL_DAYS, start: utcClock(-60), end: utcClock(3600), timezone: 'UTC' }
  const now = await postCall(h, { to: newPhone(), callingWindow: open })
  t.same(await claimIds(h, base, w), [now.id], 'inside its window: dialed')

  // Moving the window so it is open now lets the waiting call go.
  const moved = await h.call('PATCH', `/calls/${later.id}`, { callingWindow: open })
  t.equal(moved.body.waitingFor, null)
  t.same(await claimIds(h, base, w), [later.id])

  const expiring = await postCall(h, { to: newPhone(), callingWindow: closed, expiresAt: new Date(Date.now() + 60_000).toISOString() })
  await h.sql`UPDATE calls SET expires_at = now() - interval '1 second' WHERE id = ${expiring.id}`
  await sweep(h.sql, h.queue, base, {})
  t.equal((await callRow(h, expiring.id)).status, 'EXPIRED', 'its expiry came before the window opened')
})

t.test('the global CALLING_WINDOW in the zones of the number', async (t) => {
  const calling: CallingPolicy = { ...NO_POLICY, window: { days: ALL_DAYS as never, start: '09:00', end: '10:00' } }
  const h = await createHarness(t, { calling })
  const ny = await postCall(h, { to: '+12125550100' })
  t.same((await h.call('GET', `/calls/${ny.id}`)).body.timeZones, ['America/New_York'], 'the zone comes from the area code')
  const riyadh = await postCall(h, { to: '+966501234599' })
  t.same((await h.call('GET', `/calls/${riyadh.id}`)).body.timeZones, ['Asia/Riyadh'])
  // US toll-free numbers can ring in 42 zones from Guam to Newfoundland: a one-hour window is
  // never open in all of them, and that is said at once rather than left to expire.
  const never = await h.call('POST', '/calls', { to: '+18005550100', scriptId: 's' })
  t.equal(never.status, 422)
  t.equal(never.body.code, 'calling_window_never_opens')
  t.match(never.body.detail, /Pacific\/Guam/)
  const own = await h.call('POST', '/calls', { to: '+18005550100', scriptId: 's', callingWindow: { days: ['mon'], start: '09:00', end: '10:00', timezone: 'America/Chicago' } })
  t.equal(own.status, 201, 'with a timezone of its own it is fine')
  t.same(own.body.timeZones, ['America/Chicago'])
  const unknown = await h.call('POST', '/calls', { to: '+8823456789', scriptId: 's' })
  t.equal(unknown.status, 422, 'a number the data cannot place, under a window')
  t.equal(unknown.body.code, 'time_zone_unknown')
  const bad = await h.call('POST', '/calls', { to: newPhone(), scriptId: 's', callingWindow: { days: ['funday'], start: '9', end: '25:00', timezone: 'Mars/Olympus' } })
  t.equal(bad.status, 400)
  t.same(bad.body.errors.map((e: { path: string }) => e.path).sort(), ['body.callingWindow.days.0', 'body.callingWindow.end', 'body.callingWindow.start', 'body.callingWindow.timezone'])
})

t.test('outcome retries: BUSY starts a new dial under a new key after the delay, at most as often as configured', async (t) => {
  const calling: CallingPolicy = { ...NO_POLICY, retries: { BUSY: { limit: 2, delaySeconds: 600 } } }
  const policy = withPolicy(calling)
  const h = await createHarness(t, { calling })
  const w = await registerWorker(h)
  const phone = newPhone()
  const call = await postCall(h, { to: phone })

  const dialOnce = async (n: number, outcome: string) => {
    await makeDue(h, call.id)
    const [claimed] = (await claimCalls(h.sql, h.queue, policy, w, 30)).claimed
    t.equal(claimed?.dial, n, `dial ${n} claimed`)
    await recordDialResult(h.sql, h.queue, policy, claimed!, { kind: 'accepted', providerCallId: `prov-${n}` })
    return sendSigned(h, call.id, { callId: `prov-${n}`, status: outcome }, { dial: n })
  }

  const first = await dialOnce(1, 'BUSY')
  t.same(first.body, { verdict: 'applied', callId: call.id, status: 'PENDING' }, 'BUSY sends it back to PENDING')
  let row = await h.call('GET', `/calls/${call.id}`)
  t.equal(row.body.waitingFor, 'retry')
  const delay = new Date(row.body.nextAttemptAt).getTime() - Date.now()
  t.ok(delay > 590_000 && delay <= 600_000, `retried 10 minutes later (${delay} ms)`)
  t.equal(row.body.providerStatus, 'BUSY')
  t.match(row.body.lastError, /BUSY; retry 1 of 2/)
  t.same(row.body.dials.map((d: { dial: number; outcome: string }) => [d.dial, d.outcome]), [[1, 'BUSY']])

  // Meanwhile its phone is free: the BUSY call has ended at the provider.
  const other = await postCall(h, { to: phone })
  const [otherClaim] = (await claimCalls(h.sql, h.queue, policy, w, 30)).claimed
  t.equal(otherClaim?.id, other.id, 'another call to the phone goes while it waits')
  await recordDialResult(h.sql, h.queue, policy, otherClaim!, { kind: 'accepted', providerCallId: 'prov-other' })
  t.equal((await sendSigned(h, other.id, { callId: 'prov-other', status: 'COMPLETED' })).body.status, 'COMPLETED')

  await dialOnce(2, 'BUSY')
  const third = await dialOnce(3, 'BUSY')
  t.same(third.body, { verdict: 'applied', callId: call.id, status: 'FAILED' }, 'the third BUSY is final: two retries were allowed')
  row = await h.call('GET', `/calls/${call.id}`)
  t.equal(row.body.attempts, 3)
  t.same(row.body.dials.map((d: { dial: number; outcome: string; providerCallId: string }) => [d.dial, d.outcome, d.providerCallId]), [
    [1, 'BUSY', 'prov-1'],
    [2, 'BUSY', 'prov-2'],
    [3, 'BUSY', 'prov-3'],
  ])
  const stale = await sendSigned(h, call.id, { callId: 'prov-1', status: 'COMPLETED' }, { dial: 1 })
  t.equal(stale.body.verdict, 'stale', "a late report on dial 1 changes nothing")
})

t.test('an outcome without a retry policy is final, and NO_ANSWER has its own count', async (t) => {
  const calling: CallingPolicy = { ...NO_POLICY, retries: { NO_ANSWER: { limit: 1, delaySeconds: 60 } } }
  const policy = withPolicy(calling)
  const h = await createHarness(t, { calling })
  const w = await registerWorker(h)
  for (const [status, expected] of [['BUSY', 'FAILED'], ['NO_ANSWER', 'PENDING'], ['FAILED', 'FAILED']] as const) {
    const call = await postCall(h, { to: newPhone() })
    const [claimed] = (await claimCalls(h.sql, h.queue, policy, w, 30)).claimed
    await recordDialResult(h.sql, h.queue, policy, claimed!, { kind: 'accepted', providerCallId: `p-${call.id}` })
    const res = await sendSigned(h, call.id, { callId: `p-${call.id}`, status })
    t.equal(res.body.status, expected, `${status}: ${expected}`)
  }
})

t.test('per-person caps count dials across calls and hold the next one until the oldest leaves the window', async (t) => {
  const calling: CallingPolicy = { ...NO_POLICY, caps: { perDay: 2, perWeek: 3 } }
  const policy = withPolicy(calling)
  const h = await createHarness(t, { calling })
  const w = await registerWorker(h)
  const phone = newPhone()
  const [a, b] = [await insertCall(h, { status: 'COMPLETED', phone }), await insertCall(h, { status: 'COMPLETED', phone })]
  // Two dials of this phone in the last day, by two calls (as a claim records them).
  await h.sql`
    INSERT INTO call_dials (call_id, dial, phone, started_at, outcome, ended_at)
    VALUES (${a.id}, 99, ${phone}, now() - interval '20 hours', 'COMPLETED', now()),
           (${b.id}, 99, ${phone}, now() - interval '3 hours', 'COMPLETED', now())`
  const c = await postCall(h, { to: phone })
  const shown = await h.call('GET', `/calls/${c.id}`)
  t.equal(shown.body.waitingFor, 'cap')
  const wait = new Date(shown.body.nextAttemptAt).getTime() - Date.now()
  t.ok(wait > 4 * 3600_000 - 60_000 && wait <= 4 * 3600_000, `due when the 20-hour-old dial leaves the 24 hours (${wait} ms)`)
  await makeDue(h, c.id)
  t.same(await claimIds(h, policy, w), [], 'the claim holds it too')
  t.equal((await callRow(h, c.id)).waiting_for, 'cap')
  // A day later the per-day cap allows it, and it is the third dial of the week: allowed.
  await h.sql`UPDATE call_dials SET started_at = started_at - interval '1 day' WHERE phone = ${phone}`
  await makeDue(h, c.id)
  t.same(await claimIds(h, policy, w), [c.id])
  const other = newPhone()
  t.same((await h.call('GET', `/calls/${(await postCall(h, { to: other })).id}`)).body.waitingFor, null, 'another phone has its own count')
})

t.test('a worker starting under another policy reschedules the calls waiting on the old one', async (t) => {
  const narrow: CallingPolicy = { ...NO_POLICY, window: { days: ALL_DAYS as never, start: utcClock(3600), end: utcClock(7200), timezone: 'UTC' } }
  const h = await createHarness(t, { calling: narrow })
  const { applyPolicyChange } = await import('../src/services/dispatch/sweeps.ts')
  t.equal(await applyPolicyChange(h.sql, h.queue, narrow), 0, 'the first policy is just recorded')
  const call = await postCall(h, { to: newPhone() })
  t.equal((await callRow(h, call.id)).waiting_for, 'calling_window')
  const wide: CallingPolicy = { ...NO_POLICY, window: { days: ALL_DAYS as never, start: utcClock(-60), end: utcClock(7200), timezone: 'UTC' } }
  t.equal(await applyPolicyChange(h.sql, h.queue, wide), 1)
  const row = await callRow(h, call.id)
  t.equal(row.waiting_for, null, 'open under the new window')
  t.equal((await jobOf(h.sql, call.id))!.state, 'created')
  t.equal(await applyPolicyChange(h.sql, h.queue, wide), 0, 'the same policy again changes nothing')
})
