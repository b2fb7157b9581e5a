import t from 'tap'
import { createHarness, registerWorker } from './support/harness.ts'
import { inFlightCall, sendSigned } from './support/callbacks.ts'
import { callSnapshot, verdicts } from './support/inspect.ts'

// A callback whose provider callId already belongs to another call is a provider bug or a
// mix-up: refuse it loudly (409) rather than report it as a harmless duplicate.

t.test('a provider callId owned by another call: 409, nothing changes, kept as rejected', async (t) => {
  const h = await createHarness(t)
  const w = await registerWorker(h)
  await inFlightCall(h, w, '+15553000001', 'prov-A')
  const b = await inFlightCall(h, w, '+15553000002', null)
  const before = await callSnapshot(h, b.id)
  const res = await sendSigned(h, b.id, { callId: 'prov-A', status: 'COMPLETED' })
  t.equal(res.status, 409)
  t.equal(res.body.code, 'provider_call_id_conflict')
  t.same(await callSnapshot(h, b.id), before, 'call B and its job are untouched')
  t.same(await verdicts(h), { rejected: 1 })
})
