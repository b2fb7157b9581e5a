import t from 'tap'
import { createTestDatabase } from './support/db.ts'
import { startFaultProxy, type FaultMode } from './support/fault-proxy.ts'
import { startSimulator, WEBHOOK_SECRET } from './support/harness.ts'
import { startPgbouncer } from './support/pgbouncer.ts'
import { freePort, runBinary, waitFor, type Proc } from './support/processes.ts'

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
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const env = {
    DATABASE_URL: via(pooled, pooler.url(db.name)),
    DATABASE_DIRECT_URL: via(direct, db.url),
    DATABASE_POOLER: 'transaction',
    DATABASE_CONNECTIONS: '8',
    PORT: String(port),
    HOST: '127.0.0.1',
    PROVIDER_BASE_URL: sim.url,
    PUBLIC_BASE_URL: base,
    WEBHOOK_SECRET,
    MAX_CONCURRENT_CALLS: String(LIMIT),
    RETRY_BASE_SECONDS: '1',
    RETRY_MAX_SECONDS: '2',
    PROVIDER_TIMEOUT_MS: '2000',
    CALL_TIMEOUT_SECONDS: '60',
    RECONCILE_AFTER_SECONDS: '3',
    WORKER_POLL_MS: '1000',
  }
  const procs: Proc[] = [runBinary(t, 'api', env)]
  await waitFor('the API', async () => (await fetch(`${base}/readyz`).catch(() => undefined))?.ok, 60_000)
  procs.push(runBinary(t, 'worker', env), runBinary(t, 'worker', env))

  let created = 0
  const creating = (async () => {
    for (let i = 0; i < CALLS; i++) {
      for (;;) {
        const res = await fetch(`${base}/calls`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'idempotency-key': `faults-${i}` },
          body: JSON.stringify({ to: `+4420730${String(i % 15).padStart(5, '0')}`, scriptId: 'faults' }),
          signal: AbortSignal.timeout(5_000),
        }).catch(() => undefined)
        if (res?.status === 201 || res?.status === 200) break
        if (res && res.status !== 503) throw new Error(`POST /calls answered ${res.status}: ${await res.text()}`)
        await new Promise((r) => setTimeout(r, 250))
      }
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
  // The pooler cannot log in to the server: every new server connection fails for a while.
  await pooler.retarget('127.0.0.1', await freePort())
  await pooler.admin('RECONNECT')
  await hold(4_000)
  await pooler.retarget(server.hostname, Number(server.port || 5432))
  await hold(1_500)
  // Every backend of the database terminated by an administrator.
  const [terminated] = await db.sql<{ n: number }[]>`
    SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid()`
  t.ok(terminated!.n > 0, `terminated ${terminated!.n} backends`)

  await creating
  t.equal(created, CALLS, 'every create answered, after retrying the 503s')
  const rows = await waitFor(
    'every call to end',
    async () => {
      const rows = await db.sql<{ status: string; n: number }[]>`SELECT status, count(*)::int AS n FROM calls GROUP BY status`
      return rows.some((r) => r.status === 'PENDING' || r.status === 'IN_PROGRESS') ? undefined : rows
    },
    180_000,
  )
  t.equal(rows.reduce((n, r) => n + r.n, 0), CALLS, `${CALLS} calls, every one final: ${JSON.stringify(rows)}`)
  for (const [i, p] of procs.entries()) t.equal(p.child.exitCode, null, `process ${i + 1} lived through every fault`)
  const stats = sim.stats()
  t.ok(stats.maxInFlight <= LIMIT, `the provider never had more than ${LIMIT} live (${stats.maxInFlight})`)
  t.equal(stats.phoneOverlaps, 0, 'never two live for one phone')
  t.equal(stats.keysAcceptedTwice, 0, 'no dial placed twice')
  const output = procs.map((p) => p.output()).join('\n')
  t.match(output, /server_login_retry|server login/, 'the pooler\'s failing logins reached the processes')

  for (const p of procs) p.child.kill('SIGTERM')
  t.same(await Promise.all(procs.map((p) => p.exited)), [0, 0, 0], 'every process stops cleanly')
  for (const [i, p] of procs.entries()) t.notMatch(p.output(), /Unhandled|uncaught|"level":"fatal"/i, `process ${i + 1}: no unhandled rejection`)
})
