import t from 'tap'
import { createTestDatabase } from './support/db.ts'
import { startSimulator } from './support/harness.ts'
import { startPgbouncer } from './support/pgbouncer.ts'
import { everyCallEnded, startService, stopService, UNHANDLED } from './support/service.ts'

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
  const service = await startService(t, {
    databaseUrl: pooler.url(db.name),
    directUrl: db.url,
    providerUrl: sim.url,
    workers: 2,
    env: { MAX_CONCURRENT_CALLS: String(LIMIT), MAX_ATTEMPTS: '2' },
  })
  const { base, procs } = service

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

  const ended = await everyCallEnded(db.sql, 120_000)
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

  t.same(await stopService(service), [0, 0, 0], 'every process stops cleanly')
  for (const [i, p] of procs.entries()) {
    const errors = p.output().split('\n').filter((line) => /"level":"error"|prepared statement/i.test(line) || UNHANDLED.test(line))
    t.same(errors, [], `process ${i + 1} logged no error`)
  }
})
