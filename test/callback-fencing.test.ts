import t from 'tap'
import { claimCalls } from '../src/services/dispatch/claim.ts'
import { recordDialResult } from '../src/services/dispatch/record.ts'
import { sweep } from '../src/services/dispatch/sweeps.ts'
import { inFlightCall, POLICY, sendSigned } from './support/callbacks.ts'
import { newPhone } from './support/factory.ts'
import { callRow, callSnapshot, inFlightCount, jobState } from './support/inspect.ts'
import { createHarness, type Harness, registerWorker } from './support/harness.ts'

// A callback is bound to one dial of one call: the webhook URL names the dial, and once the
// provider's id for that dial is known the body must name it. A callback for an earlier dial
// is kept and changes nothing; one that contradicts the binding is refused with 409. A bound
// callback for a call we had declared FAILED without the provider's report corrects it.

const verdictsOf = async (h: Harness, callId: string) =>
  (await h.sql<{ verdict: string; dial: number | null }[]>`SELECT verdict, dial FROM callbacks WHERE call_id = ${callId} ORDER BY id`).map(
    (r) => [r.verdict, r.dial],
  )

/** A call on its second dial, as a retry policy that starts a new provider call leaves it. */
async function onSecondDial(h: Harness, worker: number) {
  const call = await inFlightCall(h, worker, newPhone(), 'prov-dial-2')
  await h.sql`UPDATE calls SET dial = 2, attempts = 2 WHERE id = ${call.id}`
  return call
}

t.test('a callback for an earlier dial is recorded as stale and ends nothing', async (t) => {
  const h = await createHarness(t)
  const worker = await registerWorker(h)
  const call = await onSecondDial(h, worker)
  const before = await callSnapshot(h, call.id)
  const res = await sendSigned(h, call.id, { callId: 'prov-dial-1', status: 'COMPLETED' }, { dial: 1 })
  t.equal(res.status, 200, 'answered 200: the sender has nothing to retry')
  t.same(res.body, { verdict: 'stale', callId: call.id, status: 'IN_PROGRESS' })
  t.same(await callSnapshot(h, call.id), before, 'the current dial is untouched')
  const current = await sendSigned(h, call.id, { callId: 'prov-dial-2', status: 'BUSY' }, { dial: 2 })
  t.same(current.body, { verdict: 'applied', callId: call.id, status: 'FAILED' })
  t.same(await verdictsOf(h, call.id), [['stale', 1], ['applied', 2]])
})

t.test("a callback re-sent to another call's URL is refused: it names another call's provider id", async (t) => {
  const h = await createHarness(t)
  const worker = await registerWorker(h)
  const c = await inFlightCall(h, worker, newPhone(), 'prov-C')
  const d = await inFlightCall(h, worker, newPhone(), 'prov-D')
  const beforeC = await callSnapshot(h, c.id)
  // D's callback, captured and replayed at C's URL with a fresh signature.
  const res = await sendSigned(h, c.id, { callId: 'prov-D', status: 'FAILED' }, { dial: 1 })
  t.equal(res.status, 409)
  t.equal(res.body.code, 'callback_not_bound')
  t.match(res.body.detail, /prov-D.*prov-C/)
  t.same(await callSnapshot(h, c.id), beforeC, 'C is untouched')
  t.equal((await callRow(h, d.id)).status, 'IN_PROGRESS', 'and so is D')
  t.same(await verdictsOf(h, c.id), [['rejected', 1]])
})

t.test('a callback naming a dial the call never started is refused', async (t) => {
  const h = await createHarness(t)
  const worker = await registerWorker(h)
  const call = await inFlightCall(h, worker, newPhone(), null)
  const before = await callSnapshot(h, call.id)
  const res = await sendSigned(h, call.id, { callId: 'prov-x', status: 'COMPLETED' }, { dial: 7 })
  t.equal(res.status, 409)
  t.same(await callSnapshot(h, call.id), before)
})

t.test('before the 202, a callback at the dial’s URL is applied and names the provider call', async (t) => {
  const h = await createHarness(t)
  const worker = await registerWorker(h)
  const call = await inFlightCall(h, worker, newPhone(), null)
  const bound = await sendSigned(h, call.id, { callId: 'prov-real', status: 'COMPLETED' }, { dial: 1 })
  t.equal(bound.body.verdict, 'applied')
  t.equal((await callRow(h, call.id)).provider_call_id, 'prov-real')
})

t.test('the provider’s report corrects a call we declared FAILED without it', async (t) => {
  const h = await createHarness(t)
  const worker = await registerWorker(h)

  t.test('after the no-callback timeout', async (t) => {
    const call = await inFlightCall(h, worker, newPhone(), 'prov-late-word')
    await h.sql`UPDATE calls SET timeout_at = now() - interval '1 second' WHERE id = ${call.id}`
    await sweep(h.sql, h.queue, POLICY, {})
    t.equal((await callRow(h, call.id)).status, 'FAILED')
    const inFlight = await inFlightCount(h)
    const res = await sendSigned(h, call.id, { callId: 'prov-late-word', status: 'COMPLETED', durationSec: 95 }, { dial: 1 })
    t.same(res.body, { verdict: 'corrected', callId: call.id, status: 'COMPLETED' })
    const row = await callRow(h, call.id)
    t.equal(row.status, 'COMPLETED')
    t.equal(row.provider_status, 'COMPLETED')
    t.equal(row.duration_sec, 95)
    t.equal(await inFlightCount(h), inFlight, 'a correction frees no slot: the timeout already did')
    t.equal(await jobState(h, row.job_id), 'completed')
    const again = await sendSigned(h, call.id, { callId: 'prov-late-word', status: 'FAILED' }, { dial: 1 })
    t.equal(again.body.verdict, 'already_final', 'once the provider has spoken, its report stands')
  })

  t.test('after an unknown outcome held to its timeout', async (t) => {
    const one = { ...POLICY, maxAttempts: 1 }
    await h.call('POST', '/calls', { to: newPhone(), scriptId: 's' })
    const [call] = (await claimCalls(h.sql, h.queue, one, worker, 30)).claimed
    const held = await recordDialResult(h.sql, h.queue, one, call!, { kind: 'unknown', error: 'provider unreachable: no answer within 10000 ms' })
    t.equal(held.outcome, 'held')
    await h.sql`UPDATE calls SET timeout_at = now() - interval '1 second' WHERE id = ${call!.id}`
    await sweep(h.sql, h.queue, one, {})
    t.match((await callRow(h, call!.id)).last_error, /outcome unknown/)
    // The request had been placed after all: its call ran and the provider reports it.
    const res = await sendSigned(h, call!.id, { callId: 'prov-was-placed', status: 'NO_ANSWER' }, { dial: 1 })
    t.equal(res.body.verdict, 'corrected')
    const row = await callRow(h, call!.id)
    t.equal(row.status, 'FAILED')
    t.equal(row.provider_status, 'NO_ANSWER', 'FAILED now on the provider’s report')
    t.equal(row.provider_call_id, 'prov-was-placed')
  })

  t.test('a FAILED call the provider itself reported is not corrected', async (t) => {
    const call = await inFlightCall(h, worker, newPhone(), 'prov-busy')
    await sendSigned(h, call.id, { callId: 'prov-busy', status: 'BUSY' }, { dial: 1 })
    const res = await sendSigned(h, call.id, { callId: 'prov-busy', status: 'COMPLETED' }, { dial: 1 })
    t.equal(res.body.verdict, 'already_final')
    t.equal((await callRow(h, call.id)).provider_status, 'BUSY')
  })
})
