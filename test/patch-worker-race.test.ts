import t from 'tap'
import { startFakeProvider } from './support/fake-provider.ts'
import { createHarness } from './support/harness.ts'
import { waitFor } from './support/processes.ts'
import { startDispatcher } from './support/dispatcher.ts'

// The PATCH-versus-claim race with the real worker loop: a client changes a call's script the
// instant it is created, while a running worker is woken by that very creation. Whatever wins,
// the provider must receive exactly what the API said: the new script if the PATCH was
// accepted, the old one if it was refused. Most rounds race; in every fifth the PATCH goes
// first for sure (dispatch paused meanwhile), and in every fifth after the claim (the call seen
// IN_PROGRESS), so both answers are checked on any machine, under any load.

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
    const order = round % 5 === 1 ? 'patch first' : round % 5 === 3 ? 'claim first' : 'together'
    if (order === 'patch first') await h.call('POST', '/dispatch/pause')
    const created = await h.call('POST', '/calls', { to: `+1555700${String(round).padStart(4, '0')}`, scriptId: 'v1' })
    const id = created.body.id as string
    if (order === 'claim first') {
      await waitFor('the worker to claim it', async () => (await h.sql<{ status: string }[]>`SELECT status FROM calls WHERE id = ${id}`)[0]!.status === 'IN_PROGRESS', 30_000)
    }
    const patched = await h.call('PATCH', `/calls/${id}`, { scriptId: 'v2' })
    if (order === 'patch first') await h.call('POST', '/dispatch/resume')
    if (order !== 'together') t.equal(patched.status, order === 'patch first' ? 200 : 409, `round ${round} (${order})`)
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
})
