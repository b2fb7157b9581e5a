import t from 'tap'
import { claimCalls, type DispatchPolicy } from '../src/services/dispatch/claim.ts'
import { CLAIM_LOCK } from '../src/store/locks.ts'
import { TEST_DISPATCH } from './support/dispatcher.ts'
import { insertCall, newPhone, postCall } from './support/factory.ts'
import { waitFor } from './support/processes.ts'
import { createHarness, registerWorker } from './support/harness.ts'
import { callRow, jobOf, tableSnapshot } from './support/inspect.ts'

// The do-not-call list and run-time control of dispatch, through the API.

/** A worker's policy as the in-process test workers have it. */
const policy: DispatchPolicy = TEST_DISPATCH

t.test('suppressing a number ends its waiting calls, refuses new ones, and leaves calls in flight alone', async (t) => {
  const h = await createHarness(t)
  const phone = newPhone()
  const waiting = [await postCall(h, { to: phone }), await postCall(h, { to: phone })]
  const inFlight = await insertCall(h, { status: 'IN_PROGRESS', phone: newPhone() })
  await h.sql`UPDATE calls SET phone = ${phone} WHERE id = ${inFlight.id}` // in flight when the number is listed

  const put = await h.call('PUT', `/suppressions/${encodeURIComponent(phone)}`, { reason: 'asked not to be called' })
  t.equal(put.status, 201)
  t.match(put.body, { phone, reason: 'asked not to be called', source: 'api', callsSuppressed: 2 })
  for (const call of waiting) {
    const row = await callRow(h, call.id)
    t.equal(row.status, 'SUPPRESSED')
    t.ok(row.ended_at)
    t.match(row.last_error, /do-not-call/)
    t.equal(await jobOf(h.sql, call.id), undefined, 'its job is gone')
  }
  t.equal((await callRow(h, inFlight.id)).status, 'IN_PROGRESS', 'a call already dialing is not touched')

  const again = await h.call('PUT', `/suppressions/${encodeURIComponent(phone)}`, { reason: 'second request' })
  t.equal(again.status, 200, 'listing it again updates the reason')
  t.equal(again.body.reason, 'second request')

  const before = await tableSnapshot(h.sql)
  const refused = await h.call('POST', '/calls', { to: phone, scriptId: 's' })
  t.equal(refused.status, 422)
  t.equal(refused.body.code, 'phone_suppressed')
  t.same(await tableSnapshot(h.sql), before, 'nothing written')
  const other = await postCall(h, { to: newPhone() })
  const patched = await h.call('PATCH', `/calls/${other.id}`, { to: phone })
  t.equal(patched.status, 422, 'nor may a call be moved to it')

  t.match((await h.call('GET', `/suppressions/${encodeURIComponent(phone)}`)).body, { phone, reason: 'second request' })
  const metrics = await h.call('GET', '/metrics')
  t.equal(metrics.body.calls.SUPPRESSED, 2)
  t.equal((await h.call('GET', '/calls?status=SUPPRESSED')).body.data.length, 2)

  t.equal((await h.call('DELETE', `/suppressions/${encodeURIComponent(phone)}`)).status, 204)
  t.equal((await h.call('DELETE', `/suppressions/${encodeURIComponent(phone)}`)).status, 404)
  t.equal((await h.call('GET', `/suppressions/${encodeURIComponent(phone)}`)).status, 404)
  t.equal((await h.call('POST', '/calls', { to: phone, scriptId: 's' })).status, 201, 'off the list, it may be called again')
  t.equal((await h.call('PUT', '/suppressions/12345', {})).status, 400, 'not E.164')
})

t.test('a number listed without the API (or just as a claim begins) is never dialed: the claim checks too', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  const phone = newPhone()
  const call = await postCall(h, { to: phone })
  await h.sql`INSERT INTO suppressions (phone, reason, source) VALUES (${phone}, 'by hand', 'sql')`
  const { claimed } = await claimCalls(h.sql, h.queue, policy, w, 30)
  t.same(claimed, [])
  t.equal((await callRow(h, call.id)).status, 'SUPPRESSED')
})

t.test('import and list', async (t) => {
  const h = await createHarness(t)
  const phones = Array.from({ length: 30 }, () => newPhone())
  const pending = await postCall(h, { to: phones[0]! })
  const imported = await h.call('POST', '/suppressions/import', {
    source: 'crm-export',
    entries: [...phones.map((phone) => ({ phone })), { phone: phones[1]!, reason: 'duplicate line' }],
  })
  t.equal(imported.status, 200)
  t.match(imported.body, { added: 30, updated: 0, rejected: 0, callsSuppressed: 1 })
  t.equal(imported.body.items.length, 31, 'an answer per entry')
  t.same(imported.body.items[30], { index: 30, result: 'added', phone: phones[1] }, 'a number given twice: added, once')
  t.equal((await callRow(h, pending.id)).status, 'SUPPRESSED')
  t.equal((await h.call('GET', `/suppressions/${encodeURIComponent(phones[1]!)}`)).body.reason, 'duplicate line', 'the last entry for a number wins')
  const seen: string[] = []
  for (let cursor: string | null = null, pages = 0; pages < 10; pages++) {
    const page: { body: { data: Array<{ phone: string; source: string }>; nextCursor: string | null } } = await h.call('GET', `/suppressions?limit=7${cursor ? `&cursor=${cursor}` : ''}`)
    seen.push(...page.body.data.map((s) => s.phone))
    t.ok(page.body.data.every((s) => s.source === 'crm-export'))
    cursor = page.body.nextCursor
    if (!cursor) break
  }
  t.same(seen.slice().sort(), phones.slice().sort(), 'every number, once, over the pages')
  // One bad entry refuses that entry, not the list: each is answered by its index.
  const another = newPhone()
  const mixed = await h.call('POST', '/suppressions/import', { entries: [{ phone: 'nope' }, { phone: another, reason: 'asked' }, { phone: phones[2], reason: 42 }] })
  t.equal(mixed.status, 200)
  t.match(mixed.body, { added: 1, updated: 0, rejected: 2 })
  t.equal(mixed.body.items[0].result, 'rejected')
  t.equal(mixed.body.items[0].problem.code, 'validation_failed')
  t.same(mixed.body.items[0].problem.errors.map((e: { path: string }) => e.path), ['body.entries.0.phone'])
  t.same(mixed.body.items[1], { index: 1, result: 'added', phone: another })
  t.same(mixed.body.items[2].problem.errors.map((e: { path: string }) => e.path), ['body.entries.2.reason'])
  t.equal((await h.call('GET', `/suppressions/${encodeURIComponent(another)}`)).status, 200, 'the good entry is listed')
  t.equal((await h.call('GET', `/suppressions/${encodeURIComponent(phones[2]!)}`)).body.reason, null, 'the refused entry changed nothing')
  // The list itself must be a list of 1 to 5,000 entries.
  t.equal((await h.call('POST', '/suppressions/import', { entries: [] })).status, 400)
  t.equal((await h.call('POST', '/suppressions/import', { entries: 'x' })).status, 400)
})

t.test('pause, resume and the limit at run time', async (t) => {
  const h = await createHarness(t, { maxConcurrentCalls: 5 })
  const w = await registerWorker(h)
  t.same((await h.call('GET', '/dispatch/settings')).body, {
    paused: false,
    maxConcurrentCalls: 5,
    maxConcurrentCallsSet: false,
    updatedAt: (await h.call('GET', '/dispatch/settings')).body.updatedAt,
  })
  const paused = await h.call('POST', '/dispatch/pause')
  t.equal(paused.body.paused, true)
  const calls = await Promise.all(Array.from({ length: 4 }, () => postCall(h, { to: newPhone() })))
  t.same((await claimCalls(h.sql, h.queue, policy, w, 30)).claimed, [], 'nothing is claimed while paused')
  t.equal((await h.call('GET', '/metrics')).body.paused, true)
  t.match((await h.call('GET', '/metrics?format=prometheus')).body, /orchestrator_dispatch_paused 1/)
  await h.call('POST', '/dispatch/resume')
  t.equal((await claimCalls(h.sql, h.queue, policy, w, 30)).claimed.length, 4, 'resumed: all four go')

  // Lowering the limit below what is in flight touches nothing and lets it drain.
  const limited = await h.call('PUT', '/dispatch/settings', { maxConcurrentCalls: 2 })
  t.same([limited.body.maxConcurrentCalls, limited.body.maxConcurrentCallsSet], [2, true])
  t.equal((await h.call('GET', '/metrics')).body.maxConcurrentCalls, 2)
  await postCall(h, { to: newPhone() })
  t.same((await claimCalls(h.sql, h.queue, policy, w, 30)).claimed, [], 'four in flight, limit two: nothing new')
  const [inFlight] = await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM calls WHERE status = 'IN_PROGRESS'`
  t.equal(inFlight!.n, 4, 'and nothing in flight was touched')
  await h.sql`UPDATE calls SET status = 'COMPLETED', ended_at = now(), claimed_by = NULL, next_attempt_at = NULL WHERE id IN (${calls[0]!.id}, ${calls[1]!.id}, ${calls[2]!.id})`
  t.equal((await claimCalls(h.sql, h.queue, policy, w, 30)).claimed.length, 1, 'one in flight, limit two: one more')
  const reset = await h.call('PUT', '/dispatch/settings', { maxConcurrentCalls: null })
  t.same([reset.body.maxConcurrentCalls, reset.body.maxConcurrentCallsSet], [5, false], 'null: back to MAX_CONCURRENT_CALLS')
  for (const body of [{ maxConcurrentCalls: 0 }, { maxConcurrentCalls: 1.5 }, {}, { maxConcurrentCalls: '3' }]) {
    t.equal((await h.call('PUT', '/dispatch/settings', body)).status, 400, JSON.stringify(body))
  }
})

t.test('a pause is stamped when it took effect: after the claim it waited for, not when it began waiting', async (t) => {
  const h = await createHarness(t)
  let releasedAt: Date | undefined
  let holding!: () => void
  const held = new Promise<void>((resolve) => (holding = resolve))
  let release!: () => void
  const gate = new Promise<void>((resolve) => (release = resolve))
  // A claim under way: it holds the claim lock (as claimCalls does) until the pause waits for it.
  const claim = h.sql.begin(async (tx) => {
    await tx`SELECT pg_advisory_xact_lock(${CLAIM_LOCK})`
    holding()
    await gate
    const [now] = await tx<{ at: Date }[]>`SELECT clock_timestamp() AS at`
    releasedAt = now!.at
  })
  await held
  const paused = h.call('POST', '/dispatch/pause')
  await waitFor('the pause to wait for the claim lock', async () => {
    const [row] = await h.sql<{ n: number }[]>`
      SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND objid = ${CLAIM_LOCK} AND NOT granted`
    return row!.n > 0
  })
  release()
  await claim
  t.equal((await paused).status, 200)
  const [row] = await h.sql<{ updated_at: Date }[]>`SELECT updated_at FROM dispatch_settings`
  t.ok(row!.updated_at.getTime() >= releasedAt!.getTime(), `stamped ${row!.updated_at.toISOString()}, the claim let go at ${releasedAt!.toISOString()}`)
})
