import { networkInterfaces } from 'node:os'
import t from 'tap'
import { loadConfig } from '../src/config.ts'
import { createTestDatabase } from './support/db.ts'
import { createHarness, WEBHOOK_SECRET } from './support/harness.ts'
import { freePort, runBinary, waitFor } from './support/processes.ts'

// Who may reach the API and make it act: an open API (no API_TOKENS) listens on this machine
// only unless HOST says otherwise; a page on another site cannot make a browser change
// anything (a simple cross-site POST needs no preflight); with ALLOWED_HOSTS, a name pointed at
// this server by someone else (DNS rebinding) is not answered.

const plain = { 'content-type': 'text/plain' }

t.test('a cross-site POST is refused with 403 and changes nothing; curl and the same origin are not refused', async (t) => {
  const h = await createHarness(t)
  const pause = (headers: Record<string, string>) => h.app.request('/dispatch/pause', { method: 'POST', headers: { host: 'orchestrator.internal:3000', ...headers } })
  const paused = async () => (await h.sql<{ paused: boolean }[]>`SELECT paused FROM dispatch_settings`)[0]!.paused

  const refused: Array<Record<string, string>> = [{ ...plain, 'sec-fetch-site': 'cross-site' }, { ...plain, 'sec-fetch-site': 'same-site' }, { ...plain, origin: 'https://evil.example' }, { origin: 'null' }]
  for (const headers of refused) {
    const res = await pause(headers)
    t.equal(res.status, 403, JSON.stringify(headers))
    t.equal(((await res.json()) as { code: string }).code, 'cross_origin')
    t.equal(await paused(), false, 'not paused')
  }
  t.equal((await pause({})).status, 200, 'no Origin, no Sec-Fetch-Site: curl, a script, a server')
  t.equal(await paused(), true)
  t.equal((await pause({ origin: 'http://orchestrator.internal:3000', 'sec-fetch-site': 'same-origin' })).status, 200, 'this server’s own page')
  const read = await h.app.request('/calls', { headers: { host: 'orchestrator.internal:3000', 'sec-fetch-site': 'cross-site' } })
  t.equal(read.status, 200, 'a read is not refused (the browser keeps its answer from the other site)')
})

t.test('ALLOWED_HOSTS: another host name is a 403; the health checks answer any', async (t) => {
  const h = await createHarness(t, { allowedHosts: ['api.example.com', '127.0.0.1', '::1'] })
  const get = (path: string, host: string) => h.app.request(path, { headers: { host } })
  t.equal((await get('/calls', 'api.example.com')).status, 200)
  t.equal((await get('/calls', 'API.example.com:8443')).status, 200, 'case and port do not matter')
  t.equal((await get('/calls', '[::1]:3000')).status, 200)
  const rebound = await get('/calls', 'attacker.example')
  t.equal(rebound.status, 403)
  t.equal(((await rebound.json()) as { code: string }).code, 'host_not_allowed')
  t.equal((await get('/healthz', '10.0.0.7:3000')).status, 200, 'a probe by address')
  t.equal((await get('/readyz', '10.0.0.7:3000')).status, 200)
})

t.test('an open API binds to 127.0.0.1 and says so; HOST or API tokens open it up', async (t) => {
  t.equal(loadConfig({}).http.host, '127.0.0.1')
  t.equal(loadConfig({ API_TOKENS: 'x'.repeat(32) }).http.host, '0.0.0.0')
  t.equal(loadConfig({ HOST: '0.0.0.0' }).http.host, '0.0.0.0')
  const db = await createTestDatabase(t)
  const port = await freePort()
  const proc = runBinary(t, 'api', { DATABASE_URL: db.url, DATABASE_CONNECTIONS: '8', PORT: String(port), LOG_LEVEL: 'info' })
  await waitFor('the API', async () => (await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => undefined))?.ok, 60_000)
  t.match(proc.output(), /listening on 127\.0\.0\.1 only/, 'it says so')
  t.match(proc.output(), /"host":"127\.0\.0\.1","port":\d+,"statusPage":"http:\/\/localhost:\d+\/","console":"http:\/\/localhost:\d+\/console\/calls","msg":"API listening"/)
  // From any other address of this machine, nothing answers.
  const other = Object.values(networkInterfaces()).flat().find((a) => a && a.family === 'IPv4' && !a.internal)
  if (other) {
    const reached = await fetch(`http://${other.address}:${port}/healthz`).then(() => 'answered', (err: Error) => (err.cause as { code?: string })?.code ?? err.message)
    t.equal(reached, 'ECONNREFUSED', `not reachable at ${other.address}`)
  } else t.comment('this machine has no address but loopback; the log line above is the check')
  proc.child.kill('SIGTERM')
  t.equal(await proc.exited, 0)
})

t.test('read-only tokens read everything a status screen needs and change nothing', async (t) => {
  const full = 'f'.repeat(32)
  const reader = 'r'.repeat(32)
  const h = await createHarness(t, { apiTokens: [full], readTokens: [reader] })
  const as = (token: string) => ({ authorization: `Bearer ${token}` })
  const created = await h.call('POST', '/calls', { to: '+14155550100', scriptId: 's' }, as(full))
  t.equal(created.status, 201, 'a full token writes')
  for (const path of ['/calls', `/calls/${created.body.id}`, '/metrics', '/status.json', '/events', '/suppressions', '/dispatch/settings', '/event-endpoints']) {
    t.equal((await h.call('GET', path, undefined, as(reader))).status, 200, `GET ${path}`)
  }
  const before = await h.sql`SELECT status, updated_at FROM calls`
  const writes: Array<[string, string, unknown]> = [
    ['POST', '/calls', { to: '+14155550101', scriptId: 's' }],
    ['POST', `/calls/${created.body.id}/cancel`, undefined],
    ['PATCH', `/calls/${created.body.id}`, { scriptId: 'other' }],
    ['POST', '/dispatch/pause', undefined],
    ['PUT', '/suppressions/%2B14155550100', {}],
    ['POST', '/event-endpoints', { url: 'http://127.0.0.1:9/x' }],
  ]
  for (const [method, path, body] of writes) {
    const res = await h.call(method, path, body, as(reader))
    t.same([res.status, res.body.code], [403, 'read_only_token'], `${method} ${path}`)
  }
  t.same(await h.sql`SELECT status, updated_at FROM calls`, before, 'nothing changed')
  t.same(await h.sql`SELECT paused FROM dispatch_settings`, [{ paused: false }])
  t.equal((await h.call('GET', '/calls', undefined, as('n'.repeat(32)))).status, 401, 'an unknown token is still a 401')
})

t.test('simulator mode listens on 127.0.0.1 unless SIMULATOR_HOST says otherwise', async (t) => {
  t.equal(loadConfig({}).simulator.host, '127.0.0.1')
  const port = await freePort()
  const proc = runBinary(t, 'simulator', { SIMULATOR_PORT: String(port), WEBHOOK_SECRET, LOG_LEVEL: 'info' })
  await waitFor('the simulator', async () => (await fetch(`http://127.0.0.1:${port}/stats`).catch(() => undefined))?.ok, 60_000)
  t.match(proc.output(), /"host":"127\.0\.0\.1","port":\d+,"msg":"provider simulator listening"/)
  const other = Object.values(networkInterfaces()).flat().find((a) => a && a.family === 'IPv4' && !a.internal)
  if (other) {
    const reached = await fetch(`http://${other.address}:${port}/stats`).then(() => 'answered', (err: Error) => (err.cause as { code?: string })?.code ?? err.message)
    t.equal(reached, 'ECONNREFUSED', `not reachable at ${other.address}: it signs callbacks to any webhookUrl it is given`)
  } else t.comment('this machine has no address but loopback; the log line above is the check')
  proc.child.kill('SIGTERM')
  t.equal(await proc.exited, 0)
})
