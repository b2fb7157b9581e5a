import t from 'tap'
import postgres from 'postgres'
import { createTestDatabase } from './support/db.ts'
import { startSimulator, WEBHOOK_SECRET } from './support/harness.ts'
import { freePort, runBinary, waitFor } from './support/processes.ts'

// DATABASE_CONNECTIONS bounds everything a process opens: an API (4) and a worker (6) under
// load never hold more than 10 connections between them, counted by the server itself while
// calls flow, and each says its budget in its start log.

t.test('an API and a worker under load stay within their DATABASE_CONNECTIONS', async (t) => {
  const db = await createTestDatabase(t) // its own pool is never used: only the processes' connections count
  const watch = postgres(db.url, { max: 1, onnotice: () => {}, connection: { application_name: 'budget-test' } })
  t.teardown(() => watch.end({ timeout: 1 }))
  const sim = await startSimulator(t, { minDurationMs: 10, maxDurationMs: 80 })
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const env = { DATABASE_URL: db.url, PORT: String(port), HOST: '127.0.0.1', PROVIDER_BASE_URL: sim.url, PUBLIC_BASE_URL: base, WEBHOOK_SECRET, MAX_CONCURRENT_CALLS: '10', LOG_LEVEL: 'info' }
  const api = runBinary(t, 'api', { ...env, DATABASE_CONNECTIONS: '4' })
  await waitFor('the API', async () => (await fetch(`${base}/readyz`).catch(() => undefined))?.ok, 60_000)
  const worker = runBinary(t, 'worker', { ...env, DATABASE_CONNECTIONS: '6' })

  let most = 0
  let sampling = true
  const sampler = (async () => {
    while (sampling) {
      const [row] = await watch<{ n: number }[]>`
        SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name <> 'budget-test'`
      most = Math.max(most, row!.n)
      await new Promise((r) => setTimeout(r, 25))
    }
  })()
  const creates = await Promise.all(
    Array.from({ length: 120 }, (_, i) =>
      fetch(`${base}/calls`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ to: `+4420740${String(i).padStart(5, '0')}`, scriptId: 'budget' }) }).then((r) => r.status),
    ),
  )
  t.same([...new Set(creates)], [201])
  await waitFor('every call to end', async () => {
    const [row] = await watch<{ n: number }[]>`SELECT count(*)::int AS n FROM calls WHERE status IN ('PENDING', 'IN_PROGRESS')`
    return row!.n === 0
  }, 120_000)
  sampling = false
  await sampler
  t.ok(most <= 10, `at most 10 connections at once (${most})`)
  t.ok(most >= 6, `and the budget was used (${most})`)
  t.match(api.output(), /"msg":"database connections"/)
  t.match(api.output(), /"atMost":4,"pool":3,"pgBoss":1,"listeners":0/, 'the API says how it spends 4')
  t.match(worker.output(), /"atMost":6,"pool":3,"pgBoss":1,"listeners":2/, 'the worker says how it spends 6')
})
