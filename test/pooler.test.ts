import t from 'tap'
import { createTestDatabase } from './support/db.ts'
import { startSimulator, WEBHOOK_SECRET } from './support/harness.ts'
import { startPgbouncer } from './support/pgbouncer.ts'
import { freePort, runBinary, waitFor, type Proc } from './support/processes.ts'

// Behind a pooler in transaction mode (what most managed Postgres offers): Debian's PgBouncer
// between the service and the test's server, each transaction on whichever server connection
// is free. An API and two workers, as processes, use it for everything but LISTEN and the
// migrations (DATABASE_DIRECT_URL); the provider, a simulator that records what it saw, must
// see the limit and the one-call-per-phone rule kept and nothing placed twice, and no process
// may log an error. Without DATABASE_POOLER=transaction the same run fails at once with
// `prepared statement "…" does not exist`.

const LIMIT = 4

t.test('through PgBouncer in transaction mode: every call ends, the provider sees every rule kept', async (t) => {
  const db = await createTestDatabase(t)
  const pooler = await startPgbouncer(t, db.url)
  const sim = await startSimulator(t, { minDurationMs: 20, maxDurationMs: 150, statusMix: [{ status: 'COMPLETED', weight: 3 }, { status: 'BUSY', weight: 1 }] })
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const env = {
    DATABASE_URL: pooler.url(db.name),
    DATABASE_DIRECT_URL: db.url,
    DATABASE_POOLER: 'transaction',
    DATABASE_CONNECTIONS: '8',
    PORT: String(port),
    HOST: '127.0.0.1',
    PROVIDER_BASE_URL: sim.url,
    PUBLIC_BASE_URL: base,
    WEBHOOK_SECRET,
    MAX_CONCURRENT_CALLS: String(LIMIT),
    MAX_ATTEMPTS: '2',
    RETRY_BASE_SECONDS: '1',
    RETRY_MAX_SECONDS: '1',
    WORKER_POLL_MS: '1000',
  }
  const procs: Proc[] = [runBinary(t, 'api', env)]
  await waitFor('the API', async () => (await fetch(`${base}/readyz`).catch(() => undefined))?.ok, 60_000)
  procs.push(runBinary(t, 'worker', env), runBinary(t, 'worker', env))

  // Single creates and batches, some phones shared, so the per-phone rule has work to do.
  const phone = (i: number) => `+4420710${String(i % 12).padStart(5, '0')}`
  const singles = await Promise.all(
    Array.from({ length: 30 }, (_, i) =>
      fetch(`${base}/calls`, { method: 'POST', headers: { 'content-type': 'application/json', 'idempotency-key': `single-${i}` }, body: JSON.stringify({ to: phone(i), scriptId: 'pooler' }) }),
    ),
  )
  t.same([...new Set(singles.map((r) => r.status))], [201], 'single creates')
  for (let b = 0; b < 3; b++) {
    const res = await fetch(`${base}/calls/batch`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ calls: Array.from({ length: 10 }, (_, i) => ({ to: phone(b * 10 + i + 5), scriptId: 'pooler' })) }),
    })
    t.equal(res.status, 201, `batch ${b + 1}`)
  }

  const ended = await waitFor(
    'every call to end',
    async () => {
      const rows = await db.sql<{ status: string; n: number }[]>`SELECT status, count(*)::int AS n FROM calls GROUP BY status`
      const open = rows.filter((r) => r.status === 'PENDING' || r.status === 'IN_PROGRESS').reduce((n, r) => n + r.n, 0)
      return open === 0 && rows.length > 0 ? rows : undefined
    },
    120_000,
  )
  t.equal(ended.reduce((n, r) => n + r.n, 0), 60, 'sixty calls, every one final')

  const stats = sim.stats()
  t.ok(stats.maxInFlight <= LIMIT, `the provider never had more than ${LIMIT} live (${stats.maxInFlight})`)
  t.equal(stats.maxInFlightPerPhone, 1, 'never two live for one phone')
  t.equal(stats.phoneOverlaps, 0)
  t.equal(stats.keysAcceptedTwice, 0, 'no dial placed twice')
  const [events] = await db.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM callbacks WHERE verdict = 'applied'`
  t.equal(events!.n, stats.accepted, 'every callback the provider sent applied, through the pooler')

  // It went through the pooler: transactions counted there; LISTEN did not.
  const [pool] = (await pooler.admin('SHOW STATS')).filter((r) => (r as { database: string }).database === db.name) as Array<{ total_xact_count: string }>
  t.ok(Number(pool?.total_xact_count) > 200, `PgBouncer carried the transactions (${pool?.total_xact_count})`)
  const clients = (await pooler.admin('SHOW CLIENTS')) as Array<{ application_name: string }>
  t.notOk(clients.some((c) => /listen/.test(c.application_name)), 'no LISTEN through the pooler')
  const [listening] = await db.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'call-orchestrator/listen'`
  t.ok(listening!.n >= 2, `each worker listens on a direct session (${listening!.n})`)

  for (const p of procs) p.child.kill('SIGTERM')
  const codes = await Promise.all(procs.map((p) => p.exited))
  t.same(codes, [0, 0, 0], 'every process stops cleanly')
  for (const [i, p] of procs.entries()) {
    const errors = p.output().split('\n').filter((line) => /"level":"(error|fatal)"|prepared statement|Unhandled/i.test(line))
    t.same(errors, [], `process ${i + 1} logged no error`)
  }
})
