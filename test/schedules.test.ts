import t from 'tap'
import { createHarness } from './support/harness.ts'
import { snapshot } from './support/faults.ts'

// A schedule that cannot be kept is refused, with a clear error and nothing written: a call
// whose notBefore is at or after its expiry would only ever expire, quietly.

const day = 86_400_000
const at = (ms: number) => new Date(Date.now() + ms).toISOString()

t.test('POST /calls: notBefore at or after expiresAt is a 422 schedule_impossible, and nothing is written', async (t) => {
  const h = await createHarness(t, { callTtlSeconds: 3600 })
  const before = await snapshot(h.sql)
  for (const body of [
    { to: '+15553100001', scriptId: 's', notBefore: at(2 * day), expiresAt: at(day) },
    { to: '+15553100002', scriptId: 's', notBefore: at(day), expiresAt: at(day) },
    // No expiresAt: the default deadline (CALL_TTL_SECONDS, one hour here) counts.
    { to: '+15553100003', scriptId: 's', notBefore: at(2 * 3_600_000) },
  ]) {
    const res = await h.call('POST', '/calls', body)
    t.equal(res.status, 422, JSON.stringify(body))
    t.equal(res.body.code, 'schedule_impossible')
    t.match(res.body.detail, /notBefore/)
  }
  t.same(await snapshot(h.sql), before, 'nothing written')
  t.equal((await h.call('POST', '/calls', { to: '+15553100004', scriptId: 's', notBefore: at(1_800_000) })).status, 201, 'within the deadline: created')
})

t.test('POST /calls/batch: the impossible item is refused on its own', async (t) => {
  const h = await createHarness(t)
  const res = await h.call('POST', '/calls/batch', {
    calls: [
      { to: '+15553100011', scriptId: 's' },
      { to: '+15553100012', scriptId: 's', notBefore: at(2 * day), expiresAt: at(day) },
    ],
  })
  t.equal(res.status, 201)
  t.same(res.body.items.map((i: { result: string }) => i.result), ['created', 'rejected'])
  t.equal(res.body.items[1].problem.code, 'schedule_impossible')
  t.equal(res.body.items[1].problem.status, 422)
})

t.test('PATCH /calls/:id: a notBefore past the call\'s expiry is a 422 and changes nothing', async (t) => {
  const h = await createHarness(t)
  const created = await h.call('POST', '/calls', { to: '+15553100021', scriptId: 's', expiresAt: at(day) })
  t.equal(created.status, 201)
  const res = await h.call('PATCH', `/calls/${created.body.id}`, { notBefore: at(2 * day) })
  t.equal(res.status, 422)
  t.equal(res.body.code, 'schedule_impossible')
  t.equal((await h.call('GET', `/calls/${created.body.id}`)).body.notBefore, null, 'unchanged')
  t.equal((await h.call('PATCH', `/calls/${created.body.id}`, { notBefore: at(day / 2) })).status, 200, 'before it: changed')
})
