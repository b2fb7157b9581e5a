import t from 'tap'
import { request } from 'node:http'
import { createHarness } from './support/harness.ts'
import { freePort, runBinary, waitFor } from './support/processes.ts'

// A shutdown is bounded whatever the clients do: an open event stream requested without
// `Accept: text/event-stream` (curl -N), or a request that never finishes sending its body,
// is cut, and the process exits within SHUTDOWN_TIMEOUT_MS saying what it waited for. SIGHUP
// (the terminal closed) stops it as SIGINT does.

const openStream = (port: number) =>
  new Promise<{ destroy(): void; ended: Promise<void> }>((resolve, reject) => {
    // What `curl -N http://…/status/events` sends: no Accept header naming event streams.
    const req = request({ host: '127.0.0.1', port, path: '/status/events', headers: { accept: '*/*' } }, (res) => {
      const ended = new Promise<void>((done) => {
        res.on('close', () => done())
        res.on('error', () => done())
      })
      res.resume()
      resolve({ destroy: () => req.destroy(), ended })
    })
    req.on('error', reject)
    req.end()
  })

/** A POST that sends its headers and part of its body, and then nothing. */
const hangingUpload = (port: number) =>
  new Promise<void>((resolve) => {
    const req = request({ host: '127.0.0.1', port, path: '/calls', method: 'POST', headers: { 'content-type': 'application/json', 'content-length': '1000' } })
    req.on('error', () => {})
    req.write('{"to":"+9665', () => resolve())
  })

for (const signal of ['SIGINT', 'SIGHUP'] as const) {
  t.test(`${signal} with an event stream open and an upload hanging: the process exits, bounded`, async (t) => {
    const h = await createHarness(t)
    const port = await freePort()
    const proc = runBinary(t, 'api', {
      DATABASE_URL: h.url,
      DATABASE_CONNECTIONS: '8',
      PORT: String(port),
      SHUTDOWN_TIMEOUT_MS: '2000',
      LOG_LEVEL: 'info',
    })
    await waitFor('the API', async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined))?.ok, 60_000)
    const stream = await openStream(port)
    t.teardown(() => stream.destroy())
    await hangingUpload(port)

    const within = <T>(p: Promise<T>, ms: number) => Promise.race([p, new Promise<'still waiting'>((r) => setTimeout(() => r('still waiting'), ms).unref())])
    proc.child.kill(signal)
    t.equal(await within(proc.exited, 30_000), 0, `${signal}: a clean exit, not a hang`)
    t.not(await within(stream.ended, 5_000), 'still waiting', 'the event stream was cut')
    t.match(proc.output(), new RegExp(`"signal":"${signal}"`), 'the signal is logged')
    t.match(proc.output(), /"eventStreams":1/, 'what it cut is logged')
  })
}

t.test('Ctrl-C with calls in flight on the built-in simulator: its callbacks stop, said once; SIMULATOR_PORT is honoured', async (t) => {
  const h = await createHarness(t)
  const port = await freePort()
  const simPort = await freePort()
  const proc = runBinary(t, 'all', {
    DATABASE_URL: h.url,
    DATABASE_CONNECTIONS: '8',
    PORT: String(port),
    SIMULATOR_PORT: String(simPort),
    SIMULATOR_MIN_DURATION_MS: '4000',
    SIMULATOR_MAX_DURATION_MS: '6000',
    SHUTDOWN_TIMEOUT_MS: '2000',
    WORKER_POLL_MS: '200',
    LOG_LEVEL: 'info',
  })
  const base = `http://127.0.0.1:${port}`
  await waitFor('the API', async () => (await fetch(`${base}/readyz`).catch(() => undefined))?.ok, 60_000)
  t.match(proc.output(), new RegExp(`"simulatorUrl":"http://127\\.0\\.0\\.1:${simPort}"`), 'the simulator on SIMULATOR_PORT')
  t.match(proc.output(), new RegExp(`"statusPage":"http://localhost:${port}/"`), 'a page address a browser opens')
  for (let i = 0; i < 5; i++) {
    const res = await fetch(`${base}/calls`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ to: `+1555300000${i}`, scriptId: 'stop' }) })
    t.equal(res.status, 201)
  }
  await waitFor('the calls to be dialed', async () => (await h.sql`SELECT 1 FROM calls WHERE dialed_at IS NOT NULL`).length === 5, 60_000)

  proc.child.kill('SIGINT')
  const code = await Promise.race([proc.exited, new Promise<'still running'>((r) => setTimeout(() => r('still running'), 30_000).unref())])
  t.equal(code, 0, 'a clean exit')
  t.notMatch(proc.output(), /callback failed/, 'no callback sent to an API that is closing')
  t.equal(proc.output().match(/stopped sending callbacks/g)?.length, 1, 'what it dropped, said once')
  t.match(proc.output(), /"notSent":5/, 'the five calls in flight')
})
