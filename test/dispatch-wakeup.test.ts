import t from 'tap'
import { signPayload } from '../src/callbacks/signature.ts'
import { Dispatcher } from '../src/dispatch/dispatcher.ts'
import { createProviderClient } from '../src/dispatch/provider.ts'
import { silentLogger } from '../src/log.ts'
import { startFakeProvider } from './support/fake-provider.ts'
import { createHarness, WEBHOOK_SECRET } from './support/harness.ts'
import { waitFor } from './support/processes.ts'

// With the safety poll set to ten minutes, only LISTEN/NOTIFY can get a waiting worker going
// within the test: assert on what happens and in which order, not on how fast.

t.test('a freed slot and a new call wake a waiting worker without polling', async (t) => {
  const h = await createHarness(t, { maxConcurrentCalls: 1 })
  let n = 0
  const fake = await startFakeProvider(t, () => ({ status: 202, body: { callId: `prov-${++n}` } }))
  const dispatcher = new Dispatcher({
    sql: h.sql,
    databaseUrl: h.url,
    queue: h.queue,
    provider: createProviderClient({ baseUrl: fake.url, timeoutMs: 2_000, publicBaseUrl: 'http://127.0.0.1:9' }),
    options: {
      maxConcurrentCalls: 1,
      maxAttempts: 3,
      retryBaseSeconds: 1,
      retryMaxSeconds: 1,
      callTimeoutSeconds: 600,
      pollMs: 600_000,
      shutdownTimeoutMs: 2_000,
      leaseMs: 10_000,
      reconcileAfterSeconds: 120,
      reconcileRatePerSecond: 5,
    },
    log: silentLogger,
  })
  await dispatcher.start()
  t.teardown(() => dispatcher.stop())

  // Created after the worker went idle: the NOTIFY in the create transaction wakes it.
  const first = await h.call('POST', '/calls', { to: '+15552000001', scriptId: 'a' })
  await waitFor('the first dial', async () => fake.received.length === 1, 30_000)
  const second = await h.call('POST', '/calls', { to: '+15552000002', scriptId: 'b' })
  await waitFor('the first call to be recorded as dialed', async () => {
    const [row] = await h.sql`SELECT dialed_at FROM calls WHERE id = ${first.body.id}`
    return Boolean(row?.dialed_at)
  })
  t.equal(fake.received.length, 1, 'the second call waits: the only slot is taken')
  const [waiting] = await h.sql`SELECT status FROM calls WHERE id = ${second.body.id}`
  t.equal(waiting!.status, 'PENDING')

  // The final callback frees the slot; its NOTIFY wakes the worker.
  const body = JSON.stringify({ callId: 'prov-1', status: 'COMPLETED', durationSec: 3 })
  const ts = Math.floor(Date.now() / 1000)
  const freedAt = Date.now()
  const cb = await h.app.request(`/callbacks/call-status?callId=${first.body.id}`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'webhook-id': 'msg_1',
      'webhook-timestamp': String(ts),
      'webhook-signature': signPayload(WEBHOOK_SECRET, 'msg_1', ts, body),
    },
    body,
  })
  t.equal(cb.status, 200)
  await waitFor('the second dial', async () => fake.received.length === 2, 30_000)
  t.equal(fake.received[1]!.body.to, '+15552000002')
  t.ok(fake.received[1]!.at >= freedAt, 'the second dial came after the slot was freed')
})
