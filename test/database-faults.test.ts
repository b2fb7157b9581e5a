import t from 'tap'
import { chmod, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import postgres from 'postgres'
import { startEmbeddedPostgres, type EmbeddedDatabase } from '../src/store/embedded.ts'
import { silentLogger } from '../src/platform/log.ts'
import { startSimulator, WEBHOOK_SECRET } from './support/harness.ts'
import { freePort, runBinary, waitFor, type Proc } from './support/processes.ts'

// Losing the database is routine. An API and two workers run against a private PostgreSQL
// (never the machine's shared one) while calls flow; every backend of theirs is terminated once
// (a pooler restart, an idle-session killer), then the server is stopped and started again (a
// restart, a failover). Every process must ride it out: no exit, no uncaught exception, 503s
// (never 500s) while the database is away, and every call ends as the provider says.

const CALLS = 120
const PHONES = 15

async function privatePostgres(t: { teardown(fn: () => Promise<void> | void): void }) {
  const dir = await mkdtemp(join(tmpdir(), 'orchestrator-faults-pg-'))
  await chmod(dir, 0o755) // as root, Postgres runs as "postgres" and must reach its data directory
  const port = await freePort()
  const options = { dir: join(dir, 'data'), port, persistent: true }
  let server: EmbeddedDatabase | undefined = await startEmbeddedPostgres(options, silentLogger)
  t.teardown(async () => {
    await server?.stop()
    await rm(dir, { recursive: true, force: true })
  })
  return {
    url: server.url,
    async stop() {
      await server?.stop()
      server = undefined
    },
    async start() {
      server = await startEmbeddedPostgres(options, silentLogger)
    },
  }
}

const request = (url: string, init: RequestInit = {}) =>
  fetch(url, { ...init, signal: AbortSignal.timeout(10_000) }).then(async (res) => ({
    status: res.status,
    type: res.headers.get('content-type'),
    retryAfter: res.headers.get('retry-after'),
    body: await res.text(),
  }))

t.test('terminated backends and a restarted server: every process resumes by itself', async (t) => {
  const pg = await privatePostgres(t)
  const apiPort = await freePort()
  const base = `http://127.0.0.1:${apiPort}`
  const sim = await startSimulator(t, {
    minDurationMs: 300,
    maxDurationMs: 1_500,
    statusMix: [{ status: 'COMPLETED', weight: 4 }, { status: 'NO_ANSWER', weight: 1 }],
  })
  const env = {
    DATABASE_URL: pg.url,
    DATABASE_CONNECTIONS: '8',
    PORT: String(apiPort),
    HOST: '127.0.0.1',
    PROVIDER_BASE_URL: sim.url,
    PUBLIC_BASE_URL: base,
    WEBHOOK_SECRET,
    MAX_CONCURRENT_CALLS: '8',
    PROVIDER_TIMEOUT_MS: '2000',
    RETRY_BASE_SECONDS: '1',
    RETRY_MAX_SECONDS: '2',
    WORKER_POLL_MS: '500',
    RECONCILE_AFTER_SECONDS: '3',
    CALL_TIMEOUT_SECONDS: '60',
  }
  const api = runBinary(t, 'api', env)
  await waitFor('the API', async () => (await request(`${base}/readyz`).catch(() => undefined))?.status === 200, 60_000)
  const workers: Proc[] = [runBinary(t, 'worker', env), runBinary(t, 'worker', env)]
  const admin = postgres(pg.url, { max: 1, onnotice: () => {} })
  t.teardown(() => admin.end({ timeout: 1 }))

  const create = (i: number) =>
    request(`${base}/calls`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': `fault-${i}` },
      body: JSON.stringify({ to: `+4420800${String(i % PHONES).padStart(5, '0')}`, scriptId: 'faults' }),
    })
  for (let i = 0; i < CALLS / 2; i++) t.equal((await create(i)).status, 201)
  await waitFor('calls in flight', async () => sim.stats().accepted >= 10, 60_000)

  // 1. Every backend of the service terminated at once.
  const [killed] = await admin<{ n: number }[]>`
    SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid()`
  t.ok(killed!.n >= 4, `terminated ${killed!.n} backends`)
  await waitFor('dials to go on', async () => sim.stats().accepted >= 25, 60_000)

  // 2. The server goes away: every route answers 503 problem+json with Retry-After.
  await admin.end({ timeout: 1 })
  const logged = workers.map((w) => w.output().length)
  await pg.stop()
  const during = [
    await create(9_999),
    await request(`${base}/calls/00000000-0000-4000-8000-000000000000`),
    await request(`${base}/calls?status=PENDING`),
    await request(`${base}/metrics`),
    await request(`${base}/callbacks/call-status?callId=00000000-0000-4000-8000-000000000000&dial=1`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer nope' },
      body: '{}',
    }),
  ]
  for (const [i, res] of during.entries()) {
    if (i === 4 && res.status === 401) continue // an unauthenticated callback is refused before the database is needed
    t.equal(res.status, 503, `request ${i} answered 503 during the outage`)
    t.match(res.type, /^application\/problem\+json/)
    t.ok(res.retryAfter, 'with Retry-After')
  }
  const notReady = await request(`${base}/readyz`)
  t.equal(notReady.status, 503, 'not ready while the database is away')
  t.equal(JSON.parse(notReady.body).detail, 'database unreachable', 'saying so, and not what the driver said (that goes to the log)')
  // The outage lasts until every worker has met it, not for a guessed time.
  await waitFor('every worker to meet the outage', async () => workers.every((w, i) => /database unavailable|claim loop error/.test(w.output().slice(logged[i]))), 60_000)
  await pg.start()

  // 3. Back: the rest of the calls, and every call ends.
  await waitFor('the API to be ready again', async () => (await request(`${base}/readyz`).catch(() => undefined))?.status === 200, 60_000)
  for (let i = CALLS / 2; i < CALLS; i++) t.equal((await create(i)).status, 201)
  const db = postgres(pg.url, { max: 1, onnotice: () => {} })
  t.teardown(() => db.end({ timeout: 1 }))
  await waitFor('every call to end', async () => {
    const [open] = await db<{ n: number }[]>`SELECT count(*)::int AS n FROM calls WHERE status IN ('PENDING', 'IN_PROGRESS')`
    return open!.n === 0
  }, 180_000)

  for (const p of [api, ...workers]) {
    t.equal(p.child.exitCode, null, 'the process is still running')
    t.notMatch(p.output(), /Uncaught|TypeError|unhandled/i, 'and threw nothing it did not handle')
  }
  const [count] = await db<{ n: number }[]>`SELECT count(*)::int AS n FROM calls`
  t.equal(count!.n, CALLS, 'every call created once')
  const stats = sim.stats()
  t.ok(stats.maxInFlight <= 8, `never over the limit at the provider (${stats.maxInFlight})`)
  t.equal(stats.phoneOverlaps, 0, 'never two live calls for one phone')
  t.equal(stats.callsPlacedTwice, 0, 'no call request placed twice')
  const rows = await db<{ provider_call_id: string | null; provider_status: string | null; status: string }[]>`
    SELECT provider_call_id, provider_status, status FROM calls`
  const placed = new Map(sim.dials.filter((d) => d.providerCallId).map((d) => [d.providerCallId!, d.status]))
  const mismatched = rows.filter((r) => (r.provider_call_id ? placed.get(r.provider_call_id) !== r.provider_status : r.status !== 'FAILED'))
  t.same(mismatched, [], 'the database says what the provider says happened')

  for (const p of [api, ...workers]) p.child.kill('SIGTERM')
  t.same(await Promise.all([api, ...workers].map((p) => p.exited)), [0, 0, 0], 'and each stops cleanly')
})

t.test('a worker started while the database is down waits for it, and a signal still stops it', async (t) => {
  const pg = await privatePostgres(t)
  await pg.stop()
  const sim = await startSimulator(t)
  const worker = runBinary(t, 'worker', { DATABASE_URL: pg.url, PROVIDER_BASE_URL: sim.url, WEBHOOK_SECRET })
  await waitFor('it to say it is waiting', async () => /database unavailable during/.test(worker.output()), 30_000)
  await pg.start()
  await waitFor('it to start', async () => {
    const db = postgres(pg.url, { max: 1, onnotice: () => {} })
    try {
      const [row] = await db<{ n: number }[]>`SELECT count(*)::int AS n FROM workers WHERE stopped_at IS NULL`.catch(() => [{ n: 0 }])
      return row!.n === 1
    } finally {
      await db.end({ timeout: 1 })
    }
  }, 60_000)
  worker.child.kill('SIGTERM')
  t.equal(await worker.exited, 0)

  await pg.stop()
  const waiting = runBinary(t, 'worker', { DATABASE_URL: pg.url, PROVIDER_BASE_URL: sim.url, WEBHOOK_SECRET })
  await waitFor('it to say it is waiting', async () => /database unavailable during/.test(waiting.output()), 30_000)
  waiting.child.kill('SIGTERM')
  t.equal(await waiting.exited, 0, 'SIGTERM while waiting for the database is a clean stop')
})
