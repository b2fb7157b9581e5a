import t from 'tap'
import { createHarness } from './support/harness.ts'
import { insertCall, newPhone } from './support/factory.ts'

// A PENDING call says why it is not dialed yet, also when the reason is not its own schedule:
// dispatch paused, every slot taken, or its number already has a call in flight. Computed
// when the call is read, on GET /calls/:id and in lists alike.

t.test('waitingFor: paused, then phone, then slot, then nothing', async (t) => {
  const h = await createHarness(t, { maxConcurrentCalls: 2 })
  const phone = newPhone()
  const created = await h.call('POST', '/calls', { to: phone, scriptId: 'w' })
  t.equal(created.status, 201)
  const id = created.body.id
  const waitingFor = async () => {
    const one = (await h.call('GET', `/calls/${id}`)).body.waitingFor
    const listed = (await h.call('GET', '/calls?status=PENDING&limit=100')).body.data.find((c: { id: string }) => c.id === id).waitingFor
    t.equal(listed, one, 'the list says the same')
    return one
  }
  t.equal(await waitingFor(), null, 'free to go: nothing to wait for')

  t.equal((await h.call('POST', '/dispatch/pause')).status, 200)
  t.equal(await waitingFor(), 'paused')
  t.equal((await h.call('POST', '/dispatch/resume')).status, 200)

  const sameNumber = await insertCall(h, { status: 'IN_PROGRESS', phone })
  t.equal(await waitingFor(), 'phone', 'its number has a call in flight')
  await h.sql`UPDATE calls SET status = 'COMPLETED', ended_at = now() WHERE id = ${sameNumber.id}`

  await insertCall(h, { status: 'IN_PROGRESS' })
  await insertCall(h, { status: 'IN_PROGRESS' })
  t.equal(await waitingFor(), 'slot', 'every slot taken (2 of 2)')
  t.equal((await h.call('PUT', '/dispatch/settings', { maxConcurrentCalls: 3 })).status, 200)
  t.equal(await waitingFor(), null, 'a slot free again')
})

t.test('its own schedule comes first: notBefore wins over paused', async (t) => {
  const h = await createHarness(t)
  const created = await h.call('POST', '/calls', { to: newPhone(), scriptId: 'w', notBefore: new Date(Date.now() + 3_600_000).toISOString() })
  t.equal((await h.call('POST', '/dispatch/pause')).status, 200)
  t.equal((await h.call('GET', `/calls/${created.body.id}`)).body.waitingFor, 'notBefore')
})
