import t from 'tap'
import { listen } from '../src/platform/serve.ts'
import { createHarness, startSimulator, WEBHOOK_SECRET } from './support/harness.ts'
import { runBinary, waitFor } from './support/processes.ts'

// A worker killed with SIGKILL in the middle of provider requests: nothing is lost, nothing
// is dialed twice, and the phones it held stay blocked until their calls end. Its requests'
// leases lapse (PROVIDER_TIMEOUT_MS + the margin) and a live worker sends them again.

t.test('SIGKILL mid-dial: once their leases lapse, another worker re-sends the calls under the same idempotency keys', async (t) => {
  const h = await createHarness(t, { maxConcurrentCalls: 10 })
  const api = await listen(h.app, { host: '127.0.0.1', port: 0 })
  t.teardown(() => api.close())
  const sim = await startSimulator(t, {
    // Calls outlast the heir's start-up even on a busy machine, so it finds the victim's
    // calls still unresolved.
    minDurationMs: 10_000,
    maxDurationMs: 12_000,
    answerDelayMs: 3_000, // the victim dies while the provider is still answering
    statusMix: [{ status: 'COMPLETED', weight: 1 }],
  })
  const env = {
    DATABASE_URL: h.url,
    DATABASE_CONNECTIONS: '8', // several processes share the test server's 100 connections
    PROVIDER_BASE_URL: sim.url,
    WEBHOOK_SECRET,
    PUBLIC_BASE_URL: `http://127.0.0.1:${api.port}`,
    MAX_CONCURRENT_CALLS: '10',
    WORKER_POLL_MS: '300',
    PROVIDER_TIMEOUT_MS: '5000',
  }

  const victim = runBinary(t, 'worker', env)
  const created = await Promise.all(
    Array.from({ length: 30 }, (_, i) => h.call('POST', '/calls', { to: `+1555100${String(i % 15).padStart(4, '0')}`, scriptId: 'crash' })),
  )
  t.ok(created.every((r) => r.status === 201))

  // Kill it while the provider has its requests and has not answered them yet.
  const held = await waitFor('the victim to be mid-request', async () => {
    const rows = await h.sql<{ id: string }[]>`
      SELECT c.id FROM calls c JOIN workers w ON w.id = c.claimed_by
      WHERE w.pid = ${victim.child.pid!} AND c.status = 'IN_PROGRESS' AND c.dialed_at IS NULL`
    const received = rows.filter((r) => sim.requestsPerKey.has(`${r.id}:1`))
    return received.length >= 3 ? received.map((r) => r.id) : undefined
  })
  victim.child.kill('SIGKILL')
  await victim.exited

  const heir = runBinary(t, 'worker', env)
  await waitFor('every call to end', async () => {
    const [row] = await h.sql<{ open: number }[]>`SELECT count(*)::int AS open FROM calls WHERE status IN ('PENDING', 'IN_PROGRESS')`
    return row!.open === 0
  }, 180_000)

  const [lost] = await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM calls WHERE status <> 'COMPLETED'`
  t.equal(lost!.n, 0, 'every call completed')
  const stats = sim.stats()
  t.equal(stats.keysAcceptedTwice, 0, 'no attempt became two calls at the provider')
  t.equal(stats.maxInFlightPerPhone, 1, 'never two calls at once for one phone')
  t.ok(stats.maxInFlight <= 10, `never more than the limit (saw ${stats.maxInFlight})`)
  const heldRows = await h.sql<{ id: string; dial: number; status: string }[]>`
    SELECT id, dial, status FROM calls WHERE id = ANY(${held}::uuid[])`
  t.ok(heldRows.every((r) => r.status === 'COMPLETED' && r.dial === 1), 'the calls it held completed as the provider call it had placed')
  t.equal(stats.callsPlacedTwice, 0, 'no call request was placed twice')
  t.same(
    held.map((id) => sim.requestsPerKey.get(`${id}:1`)),
    held.map(() => 2),
    'the heir re-sent each of them once, under the same key the provider had already seen',
  )

  heir.child.kill('SIGTERM')
  t.equal(await heir.exited, 0)
})
