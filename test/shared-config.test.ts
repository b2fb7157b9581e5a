import t from 'tap'
import { startEventReceiver } from './support/event-receiver.ts'
import { createHarness, startSimulator, workerEnv } from './support/harness.ts'
import { freePort, runBinary, waitFor } from './support/processes.ts'

// Processes share one database, and some settings live there for all of them. One started
// with another environment (a second API, a worker, a job) must not change those for the rest
// without saying so: a process without EVENT_WEBHOOK_URL leaves the endpoint another process
// configured alone, and processes that disagree about a shared setting say so, naming both.

const SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'

t.test('a process without EVENT_WEBHOOK_URL leaves the configured endpoint alone; events still arrive', async (t) => {
  const h = await createHarness(t)
  const sim = await startSimulator(t)
  const receiver = await startEventReceiver(t)
  receiver.secrets = [SECRET]
  const apiPort = await freePort()
  const base = `http://127.0.0.1:${apiPort}`
  const shared = workerEnv(h, sim.url, apiPort)

  // The API is configured with the endpoint; the worker, started after it, is not.
  const api = runBinary(t, 'api', {
    ...shared,
    PORT: String(apiPort),
    EVENT_WEBHOOK_URL: receiver.url,
    EVENT_WEBHOOK_SECRET: SECRET,
    EVENT_ALLOW_INSECURE_URLS: 'true',
  })
  await waitFor('the API', async () => (await fetch(`${base}/readyz`).catch(() => undefined))?.ok, 60_000)
  await waitFor('the env endpoint', async () => (await h.sql`SELECT 1 FROM event_endpoints WHERE source = 'env' AND disabled_at IS NULL`).length > 0)
  const worker = runBinary(t, 'worker', { ...shared, EVENT_ALLOW_INSECURE_URLS: 'true' })
  await waitFor('the worker', async () => (await h.sql`SELECT 1 FROM workers WHERE host <> 'test'`).length > 0, 60_000)

  const endpoints = await h.sql`SELECT url, disabled_at FROM event_endpoints WHERE source = 'env'`
  t.same(endpoints.map((e) => [e.url, e.disabled_at]), [[receiver.url, null]], 'the endpoint is still enabled after the worker started')

  const created = await fetch(`${base}/calls`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ to: '+15554000001', scriptId: 'shared' }),
  })
  t.equal(created.status, 201)
  const { id } = (await created.json()) as { id: string }
  await waitFor('call.completed at the receiver', async () => receiver.accepted().some((e) => e.payload.type === 'call.completed' && e.payload.data.id === id), 60_000)
  t.pass('events reached the endpoint the API configured')
  t.notMatch(worker.output() + api.output(), /disabl/i, 'nothing was disabled')
})

t.test('processes that disagree about a shared setting say so, naming both values', async (t) => {
  const h = await createHarness(t)
  const sim = await startSimulator(t)
  const first = await freePort()
  const second = await freePort()
  const env = (port: number) => ({ ...workerEnv(h, sim.url, port), PORT: String(port), EVENT_ALLOW_INSECURE_URLS: 'true' })

  const a = runBinary(t, 'api', { ...env(first), MAX_CONCURRENT_CALLS: '30', CALLING_WINDOW: 'mon-fri 09:00-20:00', EVENT_WEBHOOK_URL: 'http://127.0.0.1:9/a', EVENT_WEBHOOK_SECRET: SECRET })
  await waitFor('the first API', async () => (await fetch(`http://127.0.0.1:${first}/readyz`).catch(() => undefined))?.ok, 60_000)
  const b = runBinary(t, 'api', { ...env(second), MAX_CONCURRENT_CALLS: '12', CALLING_WINDOW: 'mon-sat 10:00-18:00', EVENT_WEBHOOK_URL: 'http://127.0.0.1:9/b', EVENT_WEBHOOK_SECRET: SECRET })
  await waitFor('the second API', async () => (await fetch(`http://127.0.0.1:${second}/readyz`).catch(() => undefined))?.ok, 60_000)
  await waitFor('its warnings', async () => /MAX_CONCURRENT_CALLS/.test(b.output()) && /CALLING_WINDOW/.test(b.output()) && /EVENT_WEBHOOK_URL/.test(b.output()), 10_000).catch(() => undefined)

  const out = b.output()
  t.match(out, /MAX_CONCURRENT_CALLS[\s\S]*12[\s\S]*30|MAX_CONCURRENT_CALLS[\s\S]*30[\s\S]*12/, 'the limit: both values named')
  t.match(out, /mon-sat 10:00-18:00/, 'the calling window: ours named')
  t.match(out, /mon-fri 09:00-20:00/, 'the calling window: theirs named')
  t.match(out, /http:\/\/127\.0\.0\.1:9\/a/, 'the other endpoint named')
  t.notMatch(out, new RegExp(SECRET.slice(6)), 'no secret in the log')
  t.notMatch(a.output(), /differ/i, 'the first process had no one to disagree with')
  // Both endpoints stay: removing one is the API's to do.
  const enabled = await h.sql`SELECT url FROM event_endpoints WHERE source = 'env' AND disabled_at IS NULL ORDER BY url`
  t.same(enabled.map((e) => e.url), ['http://127.0.0.1:9/a', 'http://127.0.0.1:9/b'])
})
