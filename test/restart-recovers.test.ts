import t from 'tap'
import { createHarness } from './support/harness.ts'
import { freePort, runBinary, waitFor } from './support/processes.ts'

// `bin/orchestrator all` stopped and started again while calls are in flight on the built-in
// simulator: the simulator remembers what it placed (a schema of its own in our database), so
// the calls end when their provider calls do, not CALL_TIMEOUT_SECONDS (30 minutes) later, and
// none is placed twice.

t.test('a restart with calls in flight: they end on time, each placed once', async (t) => {
  const h = await createHarness(t)
  const port = await freePort()
  const env = {
    DATABASE_URL: h.url,
    DATABASE_CONNECTIONS: '8',
    PORT: String(port),
    SIMULATOR_MIN_DURATION_MS: '6000',
    SIMULATOR_MAX_DURATION_MS: '8000',
    WORKER_POLL_MS: '500',
    SHUTDOWN_TIMEOUT_MS: '2000',
    LOG_LEVEL: 'info',
  }
  const base = `http://127.0.0.1:${port}`
  const first = runBinary(t, 'all', env)
  await waitFor('the API', async () => (await fetch(`${base}/readyz`).catch(() => undefined))?.ok, 60_000)
  const ids: string[] = []
  for (let i = 0; i < 3; i++) {
    const res = await fetch(`${base}/calls`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ to: `+1555200000${i}`, scriptId: 'restart' }) })
    ids.push(((await res.json()) as { id: string }).id)
  }
  await waitFor('the calls to be dialed', async () => (await h.sql`SELECT 1 FROM calls WHERE dialed_at IS NOT NULL`).length === 3, 60_000)
  first.child.kill('SIGINT')
  t.equal(await first.exited, 0)
  t.equal((await h.sql`SELECT 1 FROM calls WHERE status = 'IN_PROGRESS'`).length, 3, 'stopped with the three in flight')

  const second = runBinary(t, 'all', env)
  await waitFor('the API again', async () => (await fetch(`${base}/readyz`).catch(() => undefined))?.ok, 60_000)
  // Well inside CALL_TIMEOUT_SECONDS (1800): the provider's own end decides.
  const ended = await waitFor('the calls to end', async () => {
    const rows = await h.sql<{ status: string }[]>`SELECT status FROM calls WHERE id = ANY(${ids}::uuid[]) AND status <> 'IN_PROGRESS'`
    return rows.length === 3 && rows
  }, 60_000).catch((err) => {
    t.comment(second.output())
    throw err
  })
  t.same(ended.map((r) => r.status), ['COMPLETED', 'COMPLETED', 'COMPLETED'])
  const placed = await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM simulator.calls GROUP BY split_part(idempotency_key, ':', 1)`
  t.same(placed.map((r) => r.n), [1, 1, 1], 'each placed once')
  t.match(second.output(), /calls from before the restart resumed|asking the provider/, 'the restart picks them up')
  second.child.kill('SIGINT')
  t.equal(await second.exited, 0)
})
