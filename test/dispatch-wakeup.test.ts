import t from 'tap'
import { sendSigned } from './support/callbacks.ts'
import { startFakeProvider } from './support/fake-provider.ts'
import { startDispatcher } from './support/dispatcher.ts'
import { createHarness } from './support/harness.ts'
import { waitFor } from './support/processes.ts'

// With the safety poll set to ten minutes, only LISTEN/NOTIFY can get a waiting worker going
// within the test. Each step waits until the worker has handled the wake-up it is about, and
// the order is checked on the database's clock: the second call was claimed after the
// callback's transaction freed the slot, not merely after the test sent it.

t.test('a freed slot and a new call wake a waiting worker without polling', async (t) => {
  const h = await createHarness(t, { maxConcurrentCalls: 1 })
  let n = 0
  const fake = await startFakeProvider(t, () => ({ status: 202, body: { callId: `prov-${++n}` } }))
  const dispatcher = await startDispatcher(t, h, fake.url, { maxConcurrentCalls: 1, pollMs: 600_000, shutdownTimeoutMs: 2_000, providerTimeoutMs: 2_000 })
  await dispatcher.idle()

  /** Runs `step`, then waits until the worker has been woken by it and has gone back to waiting. */
  const andSettle = async <T>(step: () => Promise<T>): Promise<T> => {
    const before = dispatcher.wakeups
    const result = await step()
    await waitFor('the wake-up', async () => dispatcher.wakeups > before, 30_000)
    await dispatcher.idle()
    return result
  }

  // Created after the worker went idle: only the NOTIFY in the create transaction can wake it.
  const first = await andSettle(() => h.call('POST', '/calls', { to: '+15552000001', scriptId: 'a' }))
  await waitFor('the first dial to be recorded', async () => {
    const [row] = await h.sql`SELECT dialed_at FROM calls WHERE id = ${first.body.id}`
    return Boolean(row?.dialed_at)
  })
  t.equal(fake.received.length, 1, 'the first call was dialed')

  const second = await andSettle(() => h.call('POST', '/calls', { to: '+15552000002', scriptId: 'b' }))
  t.equal(fake.received.length, 1, 'woken by the second call, the worker still dials nothing: the only slot is taken')
  const [waiting] = await h.sql`SELECT status FROM calls WHERE id = ${second.body.id}`
  t.equal(waiting!.status, 'PENDING')

  // The final callback frees the slot; its NOTIFY wakes the worker.
  const cb = await sendSigned(h, first.body.id, { callId: 'prov-1', status: 'COMPLETED', durationSec: 3 })
  t.equal(cb.body.verdict, 'applied')
  await waitFor('the second dial', async () => fake.received.length === 2, 30_000)
  t.equal(fake.received[1]!.body.to, '+15552000002')
  const [order] = await h.sql<{ after: boolean }[]>`
    SELECT s.started_at > f.updated_at AS after FROM calls s, calls f WHERE s.id = ${second.body.id} AND f.id = ${first.body.id}`
  t.equal(order!.after, true, 'the second call was claimed after the transaction that freed the slot')
})

t.test('a freed slot or a new call wakes one worker, not all; a named worker that died leaves it to the others\' poll', async (t) => {
  const h = await createHarness(t, { maxConcurrentCalls: 1 })
  let n = 0
  const fake = await startFakeProvider(t, () => ({ status: 202, body: { callId: `prov-${++n}` } }))
  const options = { maxConcurrentCalls: 1, pollMs: 600_000, shutdownTimeoutMs: 2_000, providerTimeoutMs: 2_000 }
  const workers = [await startDispatcher(t, h, fake.url, options), await startDispatcher(t, h, fake.url, options), await startDispatcher(t, h, fake.url, options)]
  for (const w of workers) await w.idle()
  const wakeups = () => workers.map((w) => w.wakeups)
  const woken = (before: number[]) => wakeups().map((x, i) => x - before[i]!)

  // Ten calls created one by one while the only slot is taken: each create's NOTIFY wakes one worker.
  const first = await h.call('POST', '/calls', { to: '+15552100000', scriptId: 'a' })
  await waitFor('the first dial', async () => fake.received.length === 1, 30_000)
  for (const w of workers) await w.idle()
  let before = wakeups()
  for (let i = 1; i <= 10; i++) {
    const at = wakeups().reduce((a, b) => a + b, 0)
    await h.call('POST', '/calls', { to: `+1555210000${i % 10}${i}`, scriptId: 'b' })
    await waitFor('a worker to wake', async () => wakeups().reduce((a, b) => a + b, 0) > at, 30_000)
    for (const w of workers) await w.idle()
  }
  t.equal(woken(before).reduce((a, b) => a + b, 0), 10, `ten creates woke ten workers in all, not thirty (${woken(before)})`)

  // The callback frees the slot: one worker wakes and claims the next call.
  before = wakeups()
  t.equal((await sendSigned(h, first.body.id, { callId: 'prov-1', status: 'COMPLETED', durationSec: 3 })).body.verdict, 'applied')
  await waitFor('the second dial', async () => fake.received.length === 2, 30_000)
  for (const w of workers) await w.idle()
  t.equal(woken(before).reduce((a, b) => a + b, 0), 1, `the freed slot woke one worker (${woken(before)})`)

  // A worker that registered, was seen, and died: wake-ups named for it are lost, and the
  // others find its slot at their next poll. Here the poll is forced, as WORKER_POLL_MS would.
  await h.sql`UPDATE workers SET stopped_at = now() WHERE id <> ALL(${workers.map((w) => w.workerId)}::int[])`
  const [ghost] = await h.sql<{ id: number }[]>`INSERT INTO workers (host, pid, poll_ms) VALUES ('gone', 1, 600000) RETURNING id`
  await h.sql`UPDATE workers SET stopped_at = now() WHERE id = ANY(${workers.map((w) => w.workerId)}::int[])` // only the ghost is "alive"
  const second = (await h.sql<{ id: string; provider_call_id: string }[]>`SELECT id, provider_call_id FROM calls WHERE status = 'IN_PROGRESS'`)[0]!
  before = wakeups()
  t.equal((await sendSigned(h, second.id, { callId: second.provider_call_id, status: 'COMPLETED', durationSec: 3 })).body.verdict, 'applied')
  await new Promise((r) => setTimeout(r, 300))
  t.same(woken(before), [0, 0, 0], `the wake-up went to the dead worker ${ghost!.id}`)
  t.equal(fake.received.length, 2, 'so nobody claimed yet')
  workers[0]!.wake() // its poll
  await waitFor('the third dial, at the next poll', async () => fake.received.length === 3, 30_000)
  t.pass('the slot was not stranded')
})
