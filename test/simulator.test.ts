import t from 'tap'
import { Webhook } from 'standardwebhooks'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { startSimulator, WEBHOOK_SECRET } from './support/harness.ts'
import { waitFor } from './support/processes.ts'

// The provider simulator keeps the provider contract: 202 + callId, Idempotency-Key honoured,
// faults on request, and callbacks a Standard Webhooks receiver accepts.

async function receiver(t: { teardown(fn: () => void): void }) {
  const got: Array<{ headers: Record<string, string>; body: string }> = []
  const server = createServer((req, res) => {
    let body = ''
    req.on('data', (c) => (body += c))
    req.on('end', () => {
      got.push({ headers: req.headers as Record<string, string>, body })
      res.writeHead(200).end()
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.teardown(() => server.close())
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`, got }
}

const dial = (url: string, key: string, webhookUrl: string, headers: Record<string, string> = {}) =>
  fetch(`${url}/api/v1/calls`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'idempotency-key': key, ...headers },
    body: JSON.stringify({ to: '+15558000001', scriptId: 's', webhookUrl }),
  })

t.test('a repeated Idempotency-Key gets the same call, not a second one', async (t) => {
  const hook = await receiver(t)
  const sim = await startSimulator(t, { minDurationMs: 50, maxDurationMs: 50 })
  const first = await dial(sim.url, 'k:1', hook.url)
  const again = await dial(sim.url, 'k:1', hook.url)
  t.equal(first.status, 202)
  t.equal(again.status, 202)
  t.same(await again.json(), await first.json())
  const stats = sim.stats()
  t.equal(stats.accepted, 1)
  t.equal(stats.replays, 1)
  t.same(stats.requestsPerKey, { 2: 1 }, 'one key, sent twice')
  t.equal(stats.keysAcceptedTwice, 0)
  await waitFor('the callback', async () => hook.got.length === 1, 10_000)
  const { headers, body } = hook.got[0]!
  t.doesNotThrow(() => new Webhook(WEBHOOK_SECRET).verify(body, headers), 'the callback verifies with the reference library')
  t.match(JSON.parse(body), { status: 'COMPLETED' })
})

t.test('faults: 5xx and 429 are not remembered, so a retry with the same key can succeed', async (t) => {
  const hook = await receiver(t)
  const answers = ['server_error', 'rate_limited', 'accept'] as const
  const sim = await startSimulator(t, { decide: ({ n }) => answers[Math.min(n, 2)]! })
  const a = await dial(sim.url, 'k:1', hook.url)
  t.equal(a.status, 503)
  const b = await dial(sim.url, 'k:1', hook.url)
  t.equal(b.status, 429)
  t.equal(b.headers.get('retry-after'), '1')
  const c = await dial(sim.url, 'k:1', hook.url)
  t.equal(c.status, 202)
  t.equal(sim.stats().accepted, 1)
})

t.test('the provider API key is required when configured', async (t) => {
  const hook = await receiver(t)
  const sim = await startSimulator(t, { apiKey: 'prov-secret' })
  t.equal((await dial(sim.url, 'k:1', hook.url)).status, 401)
  t.equal((await dial(sim.url, 'k:2', hook.url, { authorization: 'Bearer prov-secret' })).status, 202)
})

t.test('a long-running simulator forgets ended calls: its memory stays level, its counts and answers do not change', async (t) => {
  const { createHarness } = await import('./support/harness.ts')
  const { simulatorStore } = await import('../src/runtime.ts')
  const { silentLogger } = await import('../src/platform/log.ts')
  const h = await createHarness(t)
  const store = await simulatorStore(h.sql, silentLogger)
  t.ok(store, 'the store in its own schema')
  const hook = await receiver(t)
  // A minute: its own timer never runs within the test, which forgets by asking with a later clock.
  const sim = await startSimulator(t, { store, forgetAfterMs: 60_000, minDurationMs: 5, maxDurationMs: 20 })
  const send = (i: number) =>
    fetch(`${sim.url}/api/v1/calls`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': `call-${i}:1` },
      body: JSON.stringify({ to: `+1555800${String(i).padStart(4, '0')}`, scriptId: 's', webhookUrl: hook.url }),
    })
  const ids = new Map<number, string>()
  for (let round = 0; round < 10; round++) {
    const answers = await Promise.all(Array.from({ length: 30 }, (_, j) => send(round * 30 + j)))
    for (const [j, a] of answers.entries()) ids.set(round * 30 + j, ((await a.json()) as { callId: string }).callId)
  }
  for (let i = 0; i < 20; i++) t.equal(((await (await send(i)).json()) as { callId: string }).callId, ids.get(i), `a repeated key ${i} gets its call`)
  await waitFor('every callback', async () => hook.got.length === 300, 20_000)
  t.ok(sim.memory().keys >= 300, `before: every key remembered (${JSON.stringify(sim.memory())})`)

  sim.forget(Date.now() + 30_000)
  t.ok(sim.memory().keys >= 300, 'half a minute on, it still remembers')
  sim.forget(Date.now() + 61_000)
  t.same(sim.memory(), { dials: 0, keys: 0, answers: 0, byKey: 0, byProviderId: 0, phones: 0, webhookIds: 0, timers: 0 }, 'after: nothing left in memory')
  const stats = sim.stats()
  t.match(stats, { requests: 320, replays: 20, accepted: 300, keysAcceptedTwice: 0, callsPlacedTwice: 0, maxInFlightPerPhone: 1, phoneOverlaps: 0 }, 'the counts stay')
  t.same(stats.requestsPerKey, { 1: 280, 2: 20 })
  t.same(stats.placedPerCall, { 1: 300 })

  // Forgotten in memory, not by the provider: the store answers for them.
  t.equal(((await (await send(7)).json()) as { callId: string }).callId, ids.get(7), 'a forgotten key, repeated, still gets its call')
  t.equal(sim.stats().accepted, 300, 'and places nothing')
  const lookup = await fetch(`${sim.url}/api/v1/calls/${ids.get(8)}`)
  t.match(await lookup.json(), { callId: ids.get(8), status: 'COMPLETED' }, 'a look-up of a forgotten call answers the truth')
})
