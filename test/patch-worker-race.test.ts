import t from 'tap'
import { startFakeProvider } from './support/fake-provider.ts'
import { createHarness } from './support/harness.ts'
import { waitFor } from './support/processes.ts'
import { startDispatcher } from './support/dispatcher.ts'

// The PATCH-versus-claim race with the real worker loop: a client changes a call's script the
// instant it is created, while a running worker is woken by that very creation. Whatever wins,
// the provider must receive exactly what the API said: the new script if the PATCH was
// accepted, the old one if it was refused.

const ROUNDS = 30

t.test('PATCH racing a running worker: the provider dials what the API answered', async (t) => {
  const h = await createHarness(t)
  let n = 0
  const fake = await startFakeProvider(t, () => ({ status: 202, body: { callId: `p-${++n}` } }))
  await startDispatcher(t, h, fake.url)

  const expected = new Map<string, string>()
  let accepted = 0
  let refused = 0
  for (let round = 0; round < ROUNDS; round++) {
    const created = await h.call('POST', '/calls', { to: `+1555700${String(round).padStart(4, '0')}`, scriptId: 'v1' })
    const id = created.body.id as string
    // Spread the PATCH across the worker's wake-up, claim and dial, so both sides win sometimes.
    await new Promise((r) => setTimeout(r, round % 10))
    const patched = await h.call('PATCH', `/calls/${id}`, { scriptId: 'v2' })
    if (patched.status === 200) {
      accepted++
      expected.set(id, 'v2')
    } else {
      t.equal(patched.status, 409, 'a refused PATCH is a 409')
      t.equal(patched.body.callStatus, 'IN_PROGRESS')
      refused++
      expected.set(id, 'v1')
    }
  }
  await waitFor('every call to be dialed', async () => fake.received.length >= ROUNDS, 60_000)
  const dialed = new Map(fake.received.map((r) => [String(r.headers['idempotency-key']).split(':')[0]!, r.body.scriptId]))
  t.equal(fake.received.length, ROUNDS, 'each call dialed once')
  for (const [id, script] of expected) t.equal(dialed.get(id), script, `call ${id} dialed with ${script}`)
  t.comment(`PATCH accepted ${accepted} times, refused ${refused} times`)
  // Otherwise the rounds never raced, and the checks above proved only one side.
  t.ok(accepted > 0, `some PATCHes landed before the claim (${accepted})`)
  t.ok(refused > 0, `some came after it and were refused (${refused})`)
})
