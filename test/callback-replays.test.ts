import t from 'tap'
import { callbackPath, deliver, inFlightCall, signHeaders } from './support/callbacks.ts'
import { newPhone } from './support/factory.ts'
import { createHarness, registerWorker, type Harness } from './support/harness.ts'
import { callSnapshot } from './support/inspect.ts'

// A callback delivered again (a replay by whoever captured it, or the provider trying again)
// leaves nothing durable: it is counted on the row of its first delivery (repeats), never
// stored again. Signed callbacks are known by their webhook-id, API-key ones by their body.

const rowsOf = (h: Harness, callId: string) =>
  h.sql<{ verdict: string; repeats: number }[]>`SELECT verdict, repeats FROM callbacks WHERE call_id = ${callId} ORDER BY id`

t.test('15 replays of one captured signed callback: one row, 14 repeats, the call changed once', async (t) => {
  const h = await createHarness(t)
  const call = await inFlightCall(h, await registerWorker(h), newPhone(), 'p-replayed')
  const body = JSON.stringify({ callId: 'p-replayed', status: 'NO_ANSWER' })
  const headers = signHeaders(body, { id: 'msg_captured' })
  const first = await deliver(h, body, headers, callbackPath(call.id))
  t.equal(first.body.verdict, 'applied')
  const after = await callSnapshot(h, call.id)
  for (let i = 0; i < 14; i++) {
    const again = await deliver(h, body, headers, callbackPath(call.id))
    t.same([again.status, again.body.verdict], [200, 'duplicate'])
  }
  t.same(await rowsOf(h, call.id), [{ verdict: 'applied', repeats: 14 }])
  t.same(await callSnapshot(h, call.id), after)
})

t.test('an API-key callback replayed: known by its body, one row', async (t) => {
  const secret = 'a callback URL secret of 32 chars or more'
  const h = await createHarness(t, { webhookSecrets: [], webhookApiKey: 'k', callbackUrlSecret: secret })
  const call = await inFlightCall(h, await registerWorker(h), newPhone(), 'p-keyed')
  const body = JSON.stringify({ callId: 'p-keyed', status: 'COMPLETED', durationSec: 9 })
  const headers = { 'content-type': 'application/json', authorization: 'Bearer k' }
  t.equal((await deliver(h, body, headers, callbackPath(call.id, 1, secret))).body.verdict, 'applied')
  for (let i = 0; i < 5; i++) t.equal((await deliver(h, body, headers, callbackPath(call.id, 1, secret))).body.verdict, 'duplicate')
  t.same(await rowsOf(h, call.id), [{ verdict: 'applied', repeats: 5 }])
  // Another body is another report: judged on its own (the call is final now).
  const other = JSON.stringify({ callId: 'p-keyed', status: 'FAILED' })
  t.equal((await deliver(h, other, headers, callbackPath(call.id, 1, secret))).body.verdict, 'already_final')
  t.same(await rowsOf(h, call.id), [{ verdict: 'applied', repeats: 5 }, { verdict: 'already_final', repeats: 0 }])
})

t.test('a malformed signed callback replayed: kept once, without its body', async (t) => {
  const h = await createHarness(t)
  const call = await inFlightCall(h, await registerWorker(h), newPhone(), 'p-malformed')
  const body = '{"callId": "p-malformed", "status": "MAYBE"}'
  const headers = signHeaders(body, { id: 'msg_malformed' })
  for (let i = 0; i < 4; i++) await deliver(h, body, headers, callbackPath(call.id))
  t.same(await rowsOf(h, call.id), [{ verdict: 'rejected', repeats: 3 }])
})

t.test('ten deliveries of one new webhook-id at once: one row', async (t) => {
  const h = await createHarness(t)
  const call = await inFlightCall(h, await registerWorker(h), newPhone(), 'p-storm')
  const body = JSON.stringify({ callId: 'p-storm', status: 'COMPLETED' })
  const headers = signHeaders(body, { id: 'msg_storm' })
  const answers = await Promise.all(Array.from({ length: 10 }, () => deliver(h, body, headers, callbackPath(call.id))))
  t.same(answers.map((a) => a.body.verdict).sort(), ['applied', ...Array(9).fill('duplicate')])
  t.same(await rowsOf(h, call.id), [{ verdict: 'applied', repeats: 9 }])
})
