import t from 'tap'
import { Agent, request } from 'node:http'
import { MAX_BODY_BYTES } from '../src/http/body.ts'
import { listen } from '../src/platform/serve.ts'
import { createHarness } from './support/harness.ts'

// A body over the limit gets a 413 that a keep-alive client can read, and its next request on
// the same pooled connection works. Past the drain bound the 413 closes the connection, once it
// has been written.

function send(agent: Agent, port: number, method: string, path: string, body?: Buffer) {
  return new Promise<{ status: number; connection: string | undefined; text: string; reused: boolean }>((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, method, path, agent, headers: body ? { 'content-type': 'application/json', 'content-length': body.length } : {} },
      (res) => {
        let text = ''
        res.on('data', (c) => (text += c))
        res.on('end', () => resolve({ status: res.statusCode!, connection: res.headers.connection, text, reused: req.reusedSocket }))
      },
    )
    req.on('error', reject)
    req.end(body)
  })
}

t.test('a 413 reaches a keep-alive client, and its next request on the same connection works', async (t) => {
  const h = await createHarness(t)
  const server = await listen(h.app, { host: '127.0.0.1', port: 0 })
  t.teardown(() => server.close())
  const base = `http://127.0.0.1:${server.port}`
  // Node's fetch pools keep-alive connections. Before, with bodies this size, every other
  // oversized POST got a socket error instead of its 413 (the server closed mid-body).
  for (const size of [MAX_BODY_BYTES + 1, 300_000, 900_000]) {
    const tooBig = JSON.stringify({ to: '+966501234567', scriptId: 's', metadata: { blob: 'x'.repeat(size) } })
    for (let round = 0; round < 10; round++) {
      const refused = await fetch(`${base}/calls`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: tooBig }).then(
        async (res) => ({ status: res.status, connection: res.headers.get('connection'), body: await res.json() }),
        (err: Error & { cause?: { code?: string } }) => ({ status: 0, connection: err.cause?.code ?? err.message, body: undefined }),
      )
      t.equal(refused.status, 413, `${size} bytes, round ${round}: 413 (${refused.connection})`)
      t.not(refused.connection, 'close', 'the connection stays open')
      t.match(refused.body, { code: 'body_too_large' })
      t.equal((await fetch(`${base}/healthz`)).status, 200, 'the next request is answered')
    }
  }
  // And with node:http's agent, the next request provably goes out on the same socket.
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => agent.destroy())
  const body = Buffer.from(JSON.stringify({ to: '+966501234567', scriptId: 's', metadata: { blob: 'x'.repeat(300_000) } }))
  t.equal((await send(agent, server.port, 'POST', '/calls', body)).status, 413)
  t.equal((await send(agent, server.port, 'GET', '/healthz')).reused, true, 'on the same connection')
  const [calls] = await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM calls`
  t.equal(calls!.n, 0, 'nothing was written')
})

t.test('past the drain bound the 413 says Connection: close, and the client gets it', async (t) => {
  const h = await createHarness(t)
  const server = await listen(h.app, { host: '127.0.0.1', port: 0 })
  t.teardown(() => server.close())
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => agent.destroy())
  const huge = Buffer.alloc(2 * 1024 * 1024, 'x')
  const refused = await send(agent, server.port, 'POST', '/calls', huge).catch((err: Error) => ({ status: 0, connection: err.message, text: '', reused: false }))
  t.equal(refused.status, 413, `answered 413 (${refused.connection})`)
  t.equal(refused.connection, 'close')
  const next = await send(agent, server.port, 'GET', '/healthz')
  t.equal(next.status, 200, 'a new connection works')
})
