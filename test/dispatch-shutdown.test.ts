import t from 'tap'
import { startFakeProvider } from './support/fake-provider.ts'
import { createHarness, WEBHOOK_SECRET } from './support/harness.ts'
import { runBinary, waitFor } from './support/processes.ts'

// SIGTERM while a provider request is under way: the worker stops claiming, waits for the
// answer, records it, and exits 0. Nothing is left claimed and unrecorded.

t.test('SIGTERM lets a dial under way finish and be recorded', async (t) => {
  const h = await createHarness(t)
  const fake = await startFakeProvider(t, () => ({ status: 202, body: { callId: 'slow-1' }, delayMs: 1_500 }))
  const proc = runBinary(t, 'worker', {
    DATABASE_URL: h.url,
    DATABASE_CONNECTIONS: '8', // several processes share the test server's 100 connections
    PROVIDER_BASE_URL: fake.url,
    WEBHOOK_SECRET,
    PUBLIC_BASE_URL: 'http://127.0.0.1:9',
    PROVIDER_TIMEOUT_MS: '10000',
    LOG_LEVEL: 'info',
  })
  await waitFor('the worker', async () => /worker started/.test(proc.output()), 60_000)
  const created = await h.call('POST', '/calls', { to: '+15556000001', scriptId: 's' })
  await waitFor('the dial to reach the provider', async () => fake.received.length === 1, 30_000)
  proc.child.kill('SIGTERM')
  await waitFor('the worker to take the signal', async () => /"msg":"stopping"/.test(proc.output()), 30_000)
  // A call created once it is stopping must not be claimed by it.
  const late = await h.call('POST', '/calls', { to: '+15556000002', scriptId: 's' })
  t.equal(await proc.exited, 0, 'exit code 0')
  const [call] = await h.sql`SELECT status, provider_call_id, dialed_at FROM calls WHERE id = ${created.body.id}`
  t.equal(call!.status, 'IN_PROGRESS')
  t.equal(call!.provider_call_id, 'slow-1', 'the answer that came in during shutdown was recorded')
  t.ok(call!.dialed_at)
  const [waiting] = await h.sql`SELECT status FROM calls WHERE id = ${late.body.id}`
  t.equal(waiting!.status, 'PENDING', 'nothing new was claimed after SIGTERM')
  const [w] = await h.sql`SELECT stopped_at FROM workers`
  t.ok(w!.stopped_at, 'the worker marked itself stopped')
  t.match(proc.output(), /worker stopped/)
})
