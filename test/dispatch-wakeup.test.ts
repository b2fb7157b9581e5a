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
