import t from 'tap'
import { insertCall, newPhone, postCall } from './support/factory.ts'
import { raceCancelAgainstClaim } from './support/cancel-race.ts'
import { addEventSink, createHarness } from './support/harness.ts'
import { callRow, callSnapshot, jobOf } from './support/inspect.ts'

// POST /calls/:id/cancel: a PENDING call ends CANCELLED and is never dialed; its job goes with
// it. A call in flight or final is answered 409 with its status and left as it was.

t.test('a pending call is cancelled: final, jobless, and reported', async (t) => {
  const h = await createHarness(t)
  await addEventSink(h) // these events are looked at: an endpoint takes them
  const call = await postCall(h, { to: newPhone() })
  const jobId = (await jobOf(h.sql, call.id))!.id
  const res = await h.call('POST', `/calls/${call.id}/cancel`)
  t.equal(res.status, 200)
  t.equal(res.body.status, 'CANCELLED')
  t.ok(res.body.endedAt, 'it has ended')
  const row = await callRow(h, call.id)
  t.equal(row.status, 'CANCELLED')
  const [job] = await h.sql`SELECT 1 FROM pgboss.job WHERE id = ${jobId}`
  t.equal(job, undefined, 'its job is deleted')
  const [event] = await h.sql<{ type: string; payload: { data: { status: string } } }[]>`SELECT type, payload FROM events WHERE call_id = ${call.id}`
  t.equal(event?.type, 'call.cancelled', 'the event is written with the change')
  t.equal(event?.payload.data.status, 'CANCELLED')

  const listed = await h.call('GET', '/calls?status=CANCELLED')
  t.same(listed.body.data.map((c: { id: string }) => c.id), [call.id], 'the list filter knows CANCELLED')
  const metrics = await h.call('GET', '/metrics')
  t.equal(metrics.body.calls.CANCELLED, 1)
  const prometheus = await h.call('GET', '/metrics?format=prometheus')
  t.match(prometheus.body, /orchestrator_calls\{status="CANCELLED"\} 1/)

  const again = await h.call('POST', `/calls/${call.id}/cancel`)
  t.equal(again.status, 409, 'a cancelled call cannot be cancelled again')
  t.equal(again.body.callStatus, 'CANCELLED')
})

t.test('a call in flight or final is refused with its status and left as it was', async (t) => {
  const h = await createHarness(t)
  for (const status of ['IN_PROGRESS', 'COMPLETED', 'FAILED', 'EXPIRED'] as const) {
    const call = await insertCall(h, { status })
    const before = await callSnapshot(h, call.id)
    const res = await h.call('POST', `/calls/${call.id}/cancel`)
    t.equal(res.status, 409, status)
    t.equal(res.body.code, 'call_not_pending')
    t.equal(res.body.callStatus, status)
    t.same(await callSnapshot(h, call.id), before, `${status}: unchanged`)
  }
  t.equal((await h.call('POST', `/calls/${crypto.randomUUID()}/cancel`)).status, 404)
  t.equal((await h.call('POST', '/calls/not-a-uuid/cancel')).status, 400)
  const get = await h.call('GET', `/calls/${crypto.randomUUID()}/cancel`)
  t.equal(get.status, 405)
  t.equal(get.headers.get('allow'), 'POST')
  const [events] = await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM events`
  t.equal(events!.n, 0, 'no event for a refused cancel')
})

t.test('cancel racing a claim, 40 rounds: cancelled and never dialed, or dialed and refused', async (t) => {
  const h = await createHarness(t)
  await raceCancelAgainstClaim(t, h, {
    cancel: (id) => h.call('POST', `/calls/${id}/cancel`),
    won: (res) => res.status === 200,
    refused: (res, label) => {
      t.equal(res.status, 409, `${label}: otherwise refused`)
      t.equal(res.body.callStatus, 'IN_PROGRESS')
    },
  })
})
