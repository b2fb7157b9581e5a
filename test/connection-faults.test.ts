import t from 'tap'
import { createTestDatabase } from './support/db.ts'
import { startFaultProxy, type FaultMode } from './support/fault-proxy.ts'
import { startSimulator } from './support/harness.ts'
import { startPgbouncer } from './support/pgbouncer.ts'
import { freePort, waitFor } from './support/processes.ts'
import { createCall, everyCallEnded, startService, stopService, UNHANDLED } from './support/service.ts'

// Every way a connection to the database fails, one after another, while calls flow through an
// API and two workers (processes): connections reset (TCP RST), refused, accepted and never
// answered; a pooler whose logins to the server keep failing (PgBouncer's 08P01
// server_login_retry); every backend terminated (57P01). The pools go through PgBouncer in
// transaction mode behind a fault proxy; LISTEN and migrations through a second fault proxy
// straight to the server. No fault may end a process (no unhandled rejection anywhere), and once
// the database is back every call ends, with the rules kept from the provider's side.

const LIMIT = 4
const CALLS = 60

t.test('every kind of connection failure, in turn: no process ends, every call ends, nothing twice', async (t) => {
  const db = await createTestDatabase(t)
  const server = new URL(db.url)
  const pooler = await startPgbouncer(t, db.url)
  const pooled = await startFaultProxy(t, { host: '127.0.0.1', port: pooler.port })
  const direct = await startFaultProxy(t, { host: server.hostname, port: Number(server.port || 5432) })
  const via = (proxy: { port: number }, url: string) => {
    const u = new URL(url)
    u.hostname = '127.0.0.1'
    u.port = String(proxy.port)
    return u.toString()
  }
  const sim = await startSimulator(t, { minDurationMs: 100, maxDurationMs: 600 })
  const service = await startService(t, {
    databaseUrl: via(pooled, pooler.url(db.name)),
    directUrl: via(direct, db.url),
    providerUrl: sim.url,
    workers: 2,
    env: { MAX_CONCURRENT_CALLS: String(LIMIT), PROVIDER_TIMEOUT_MS: '2000', CALL_TIMEOUT_SECONDS: '60', RECONCILE_AFTER_SECONDS: '3' },
  })
  const { base, procs } = service

  let created = 0
  const creating = (async () => {
    for (let i = 0; i < CALLS; i++) {
      await createCall(base, `faults-${i}`, `+4420730${String(i % 15).padStart(5, '0')}`, 'faults')
      created++
      await new Promise((r) => setTimeout(r, 100))
    }
  })()

  const hold = (ms: number) => new Promise((r) => setTimeout(r, ms))
  const both = (mode: FaultMode) => Promise.all([pooled.set(mode), direct.set(mode)])
  await waitFor('calls under way', async () => sim.stats().accepted >= 5, 60_000)
  for (const mode of ['reset', 'refuse', 'blackhole'] as const) {
    await both(mode)
    await hold(3_000)
    await both('pass')
    await hold(1_500)
  }
  // A connection opened into the black hole waits out its connect timeout (postgres.js: 30 s), so
  // a worker may still be stuck there. The next fault has to meet every worker: first each one
  // polls through again (its heartbeat moves past this moment).
  const [mark] = await db.sql<{ after: Date }[]>`SELECT now() AS after`
  await waitFor('every worker polling again', async () => {
    const [row] = await db.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM workers WHERE stopped_at IS NULL AND last_seen_at > ${mark!.after}`
    return row!.n === procs.length - 1
  }, 60_000)
  // The pooler cannot log in to the server: every new server connection fails for a while.
  await pooler.retarget('127.0.0.1', await freePort())
  await pooler.admin('RECONNECT')
  // With no server connection left, every query waits in PgBouncer's queue for a login that keeps
  // failing, and PgBouncer ends each wait with 08P01: query_wait_timeout, after a second here (set
  // after the reload above, which would reset it), or server_login_retry for a new client once a
  // login failed. PgBouncer 1.18 answers the latter only now and then, so the test does not count
  // on it (in CI, left to chance, no process met a failing login at all).
  await pooler.admin('SET query_wait_timeout = 1')
  await db.sql`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`
  await hold(6_000)
  await pooler.retarget(server.hostname, Number(server.port || 5432))
  await hold(1_500)
  // Every backend of the database terminated by an administrator.
  const [terminated] = await db.sql<{ n: number }[]>`
    SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid()`
  t.ok(terminated!.n > 0, `terminated ${terminated!.n} backends`)

  await creating
  t.equal(created, CALLS, 'every create answered, after retrying the 503s')
  const rows = await everyCallEnded(db.sql)
  t.equal(rows.reduce((n, r) => n + r.n, 0), CALLS, `${CALLS} calls, every one final: ${JSON.stringify(rows)}`)
  for (const [i, p] of procs.entries()) t.equal(p.child.exitCode, null, `process ${i + 1} lived through every fault`)
  const stats = sim.stats()
  t.ok(stats.maxInFlight <= LIMIT, `the provider never had more than ${LIMIT} live (${stats.maxInFlight})`)
  t.equal(stats.phoneOverlaps, 0, 'never two live for one phone')
  t.equal(stats.keysAcceptedTwice, 0, 'no dial placed twice')
  for (const [i, p] of procs.slice(1).entries()) {
    t.match(p.output(), /query_wait_timeout|server_login_retry/, `the pooler's 08P01 reached worker ${i + 1}, which logged it`)
  }

  t.same(await stopService(service), [0, 0, 0], 'every process stops cleanly')
  for (const [i, p] of procs.entries()) t.notMatch(p.output(), UNHANDLED, `process ${i + 1}: no unhandled rejection`)
})
