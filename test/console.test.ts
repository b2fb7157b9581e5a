import t from 'tap'
import { addEventSink, createHarness } from './support/harness.ts'
import { sendSigned } from './support/callbacks.ts'
import { insertCall, newPhone } from './support/factory.ts'

// The console follows calls, in plain HTML that needs no script: a list to filter, and each
// call's timeline (created, its dials and their requests, the provider's reports with their
// verdicts, its events with their deliveries). The status page's access: a token (admin or
// read-only) or its session.

const ADMIN = 'a'.repeat(32)
const READER = 'r'.repeat(32)

t.test('the list filters by status, phone and batch, a page at a time, and links each call', async (t) => {
  const h = await createHarness(t, { apiTokens: [ADMIN], readTokens: [READER] })
  const get = (path: string, token: string | null = READER) =>
    h.app.request(path, { headers: { accept: 'text/html', ...(token ? { authorization: `Bearer ${token}` } : {}) } })
  const phone = newPhone()
  const mine = await insertCall(h, { phone, status: 'COMPLETED' })
  await insertCall(h, { status: 'FAILED' })
  const batch = await h.call('POST', '/calls/batch', { calls: [{ to: newPhone(), scriptId: 'b' }, { to: newPhone(), scriptId: 'b' }] }, { authorization: `Bearer ${ADMIN}` })

  t.equal((await get('/console/calls', null)).status, 401, 'no token, no console')
  const all = await get('/console/calls')
  t.equal(all.status, 200, 'a read-only token opens it')
  t.match(all.headers.get('content-type'), /text\/html/)
  const body = await all.text()
  t.equal(body.match(/<tr data-call=/g)?.length, 4)
  t.match(body, new RegExp(`href="calls/${mine.id}"`), 'each call links to its timeline')
  t.notMatch(body, /<script/, 'no script needed')

  const byPhone = await (await get(`/console/calls?phone=${encodeURIComponent(phone)}`)).text()
  t.same([...byPhone.matchAll(/data-call="([^"]+)"/g)].map((m) => m[1]), [mine.id], 'by phone')
  const byStatus = await (await get('/console/calls?status=FAILED&phone=')).text()
  t.equal(byStatus.match(/<tr data-call=/g)?.length, 1, 'by status; an empty field is no filter')
  const byBatch = await (await get(`/console/calls?batch=${batch.body.batchId}`)).text()
  t.equal(byBatch.match(/<tr data-call=/g)?.length, 2, 'by batch')
  const none = await (await get(`/console/calls?to=2000-01-01T00:00:00Z`)).text()
  t.match(none, /data-no-calls/, 'by time: nothing before 2000')
  t.equal((await get('/console/calls?status=NOPE')).status, 400, 'a bad filter is a 400')
})

t.test('a call\'s timeline: created, its dial, the provider\'s report and its verdict, its events and their deliveries', async (t) => {
  const h = await createHarness(t, { apiTokens: [ADMIN] })
  await addEventSink(h)
  const call = await insertCall(h, { status: 'IN_PROGRESS' })
  await h.sql`INSERT INTO call_dials (call_id, dial, phone, started_at, requests, dialed_at, provider_call_id) VALUES (${call.id}, 1, ${call.phone}, now(), 1, now(), ${call.provider_call_id})`
  t.equal((await sendSigned(h, call.id, { callId: call.provider_call_id, status: 'COMPLETED', durationSec: 12 })).status, 200)
  const res = await h.app.request(`/console/calls/${call.id}`, { headers: { accept: 'text/html', authorization: `Bearer ${ADMIN}` } })
  t.equal(res.status, 200)
  const page = await res.text()
  for (const entry of ['created', 'dial', 'dial-ended', 'report', 'event', 'ended']) t.match(page, `data-entry="${entry}"`, `the timeline has ${entry}`)
  t.match(page, /verdict <strong>applied<\/strong>/, 'the report with its verdict')
  t.match(page, /call\.completed/, 'the event')
  t.match(page, /event-sink: <strong>pending<\/strong>/, 'and its delivery')
  t.match(page, /data-status>COMPLETED/)
  const missing = await h.app.request('/console/calls/3f0e4c1a-7b2d-4e8f-9a61-0c5d2b7e8f10', { headers: { authorization: `Bearer ${ADMIN}` } })
  t.equal(missing.status, 404)
})

t.test('a batch\'s page: its progress by status and its calls, linked both ways', async (t) => {
  const h = await createHarness(t, { apiTokens: [ADMIN] })
  const auth = { authorization: `Bearer ${ADMIN}` }
  const batch = await h.call('POST', '/calls/batch', { calls: [{ to: newPhone(), scriptId: 'b' }, { to: newPhone(), scriptId: 'b' }, { to: 'nope', scriptId: 'b' }] }, auth)
  t.equal(batch.status, 201)
  const id = batch.body.batchId
  const first = batch.body.items[0].call.id
  t.equal((await h.call('POST', `/calls/${first}/cancel`, undefined, auth)).status, 200)
  const res = await h.app.request(`/console/batches/${id}`, { headers: { accept: 'text/html', ...auth } })
  t.equal(res.status, 200)
  const page = await res.text()
  t.match(page, /data-progress>1 <span class="of">of 2 calls ended/, 'one of its two calls ended')
  t.match(page, /data-batch-status="PENDING"><td>PENDING<\/td><td>1</)
  t.match(page, /data-batch-status="CANCELLED"><td>CANCELLED<\/td><td>1</)
  t.match(page, new RegExp(`href="../calls/${first}"`), 'its calls link to their timelines')
  const timeline = await (await h.app.request(`/console/calls/${first}`, { headers: auth })).text()
  t.match(timeline, new RegExp(`href="../batches/${id}"`), 'and a call links to its batch')
  t.equal((await h.app.request('/console/batches/3f0e4c1a-7b2d-4e8f-9a61-0c5d2b7e8f10', { headers: auth })).status, 404)
})

t.test('cancel and retry from the console: admins only, each after a question, back to the timeline', async (t) => {
  const h = await createHarness(t, { apiTokens: [ADMIN], readTokens: [READER] })
  const html = { accept: 'text/html', host: 'console.test' }
  const as = (token: string) => ({ ...html, authorization: `Bearer ${token}` })
  const pending = await insertCall(h, { status: 'PENDING' })
  const failed = await insertCall(h, { status: 'FAILED' })
  const statusOf = async (id: string) => (await h.sql<{ status: string }[]>`SELECT status FROM calls WHERE id = ${id}`)[0]!.status

  const asAdmin = await (await h.app.request(`/console/calls/${pending.id}`, { headers: as(ADMIN) })).text()
  t.match(asAdmin, `data-action="cancel" href="${pending.id}/cancel"`, 'an admin is offered cancel for a PENDING call')
  t.notMatch(asAdmin, /data-action="retry"/, 'and not retry')
  const failedPage = await (await h.app.request(`/console/calls/${failed.id}`, { headers: as(ADMIN) })).text()
  t.match(failedPage, /data-action="retry"/, 'retry for a FAILED one')
  t.notMatch(failedPage, /data-action="cancel"/)
  t.notMatch(await (await h.app.request(`/console/calls/${pending.id}`, { headers: as(READER) })).text(), /data-action=/, 'a reader is offered nothing')

  // The button leads to a question; only its form acts.
  const question = await h.app.request(`/console/calls/${pending.id}/cancel`, { headers: as(ADMIN) })
  t.equal(question.status, 200)
  const form = await question.text()
  t.match(form, /<form method="post" action="cancel" data-confirm="cancel">/, 'the question holds the form that does it')
  t.notMatch(form, /<script/, 'no script needed')
  t.equal(await statusOf(pending.id), 'PENDING', 'asking changes nothing')

  const post = (id: string, action: string, headers: Record<string, string>) => h.app.request(`/console/calls/${id}/${action}`, { method: 'POST', headers })
  const refusedReader = await post(pending.id, 'cancel', as(READER))
  t.equal(refusedReader.status, 403, 'a read-only token may not act')
  t.equal(((await refusedReader.json()) as { code: string }).code, 'read_only_token')
  t.equal((await h.app.request(`/console/calls/${pending.id}/cancel`, { headers: as(READER) })).status, 403, 'nor be asked')
  t.equal((await post(pending.id, 'cancel', html)).status, 401, 'no token, no action')
  t.equal((await post(pending.id, 'cancel', { ...as(ADMIN), origin: 'https://evil.test' })).status, 403, 'a form from another site is refused')
  t.equal(await statusOf(pending.id), 'PENDING', 'none of those changed anything')

  const done = await post(pending.id, 'cancel', as(ADMIN))
  t.equal(done.status, 303)
  t.equal(done.headers.get('location'), `../${pending.id}`, 'back to the timeline')
  t.equal(await statusOf(pending.id), 'CANCELLED')
  const again = await post(pending.id, 'cancel', as(ADMIN))
  t.equal(again.status, 409, 'the second time, the call is no longer PENDING')
  t.match(await again.text(), /data-refusal>[^<]*CANCELLED/, 'and the question page says why')

  t.equal((await post(failed.id, 'retry', as(ADMIN))).status, 303)
  t.equal(await statusOf(failed.id), 'PENDING', 'retried')
  t.equal((await post('3f0e4c1a-7b2d-4e8f-9a61-0c5d2b7e8f10', 'retry', as(ADMIN))).status, 404)

  // A session opened with an admin token acts; one opened with a read token does not.
  const signIn = async (token: string) => {
    const res = await h.app.request('/login', { method: 'POST', headers: { ...html, 'content-type': 'application/x-www-form-urlencoded' }, body: `token=${token}` })
    return (res.headers.get('set-cookie') ?? '').split(';')[0]!
  }
  const other = await insertCall(h, { status: 'PENDING' })
  t.equal((await post(other.id, 'cancel', { ...html, cookie: await signIn(READER) })).status, 403, 'a reader\'s session may not act')
  t.equal((await post(other.id, 'cancel', { ...html, cookie: await signIn(ADMIN) })).status, 303, 'an admin\'s session may')
  t.equal(await statusOf(other.id), 'CANCELLED')
})
