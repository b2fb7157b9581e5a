import t from 'tap'
import postgres from 'postgres'
import { startEventReceiver } from './support/event-receiver.ts'
import { startSimulator } from './support/harness.ts'
import { startPgbouncer } from './support/pgbouncer.ts'
import { waitFor } from './support/processes.ts'
import { createCall, everyCallEnded, startService, stopService, UNHANDLED } from './support/service.ts'
import { startReplicatedPostgres } from './support/replicated.ts'

// A failover, as a managed database survives the loss of a machine: a primary with a
// synchronous streaming replica (pg_basebackup), one endpoint in front of them (PgBouncer, in
// transaction mode for the pools and in session mode for LISTEN and migrations, standing in for
// the service's DNS name). Mid-run the primary is stopped at once, the replica promoted and the
// endpoint moved to it. While no primary is up the endpoint answers every login with an error
// (server_login_retry, 08P01) or cuts connections. Afterwards every process is still running,
// every call has ended, the provider saw the limit and the one-call-per-phone rule kept and
// nothing placed twice, and every event reached the client's receiver.

const LIMIT = 6
const CALLS = 120
const EVENT_SECRET = 'whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD'

t.test('a failover mid-run: every process survives, every call ends, nothing twice, no event lost', async (t) => {
  const cluster = await startReplicatedPostgres(t)
  const setup = postgres(cluster.url(cluster.primary.port), { max: 1, onnotice: () => {} })
  await setup.unsafe('CREATE DATABASE orchestrator')
  await setup.end({ timeout: 1 })
  const pooled = await startPgbouncer(t, cluster.url(cluster.primary.port, 'orchestrator'))
  const direct = await startPgbouncer(t, cluster.url(cluster.primary.port, 'orchestrator'), { poolMode: 'session' })

  const sim = await startSimulator(t, {
    minDurationMs: 200,
    maxDurationMs: 1_500,
    statusMix: [{ status: 'COMPLETED', weight: 4 }, { status: 'NO_ANSWER', weight: 1 }],
  })
  const receiver = await startEventReceiver(t)
  receiver.secrets = [EVENT_SECRET]

  const service = await startService(t, {
    databaseUrl: pooled.url('orchestrator'),
    directUrl: direct.url('orchestrator'),
    providerUrl: sim.url,
    workers: 2,
    env: {
      MAX_CONCURRENT_CALLS: String(LIMIT),
      PROVIDER_TIMEOUT_MS: '2000',
      CALL_TIMEOUT_SECONDS: '60',
      RECONCILE_AFTER_SECONDS: '3',
      EVENT_WEBHOOK_URL: receiver.url,
      EVENT_WEBHOOK_SECRET: EVENT_SECRET,
      EVENT_ALLOW_INSECURE_URLS: 'true',
      EVENT_RETRY_BASE_SECONDS: '1',
      EVENT_RETRY_MAX_SECONDS: '2',
    },
  })
  const { base, procs } = service

  // Calls keep coming in while the primary goes away: a client retries a 503 with the same key.
  let created = 0
  const creating = (async () => {
    for (let i = 0; i < CALLS; i++) {
      await createCall(base, `failover-${i}`, `+4420720${String(i % 30).padStart(5, '0')}`, 'failover')
      created++
      await new Promise((r) => setTimeout(r, 60))
    }
  })()

  await waitFor('a third of the calls placed', async () => sim.stats().accepted >= CALLS / 3, 120_000)
  await cluster.losePrimary()
  const lostAt = Date.now()
  await new Promise((r) => setTimeout(r, 2_000)) // no primary at all for a while
  await cluster.promoteReplica()
  await pooled.retarget('127.0.0.1', cluster.replica.port)
  await direct.retarget('127.0.0.1', cluster.replica.port)
  const outage = Date.now() - lostAt

  await creating
  t.equal(created, CALLS, 'every create answered, some after retrying a 503')
  const db = postgres(cluster.url(cluster.replica.port, 'orchestrator'), { max: 2, onnotice: () => {} })
  t.teardown(() => db.end({ timeout: 1 }))
  const rows = await everyCallEnded(db)
  t.equal(rows.reduce((n, r) => n + r.n, 0), CALLS, `${CALLS} calls, every one final: ${JSON.stringify(rows)}`)

  for (const [i, p] of procs.entries()) t.equal(p.child.exitCode, null, `process ${i + 1} is still running after ${outage} ms without a primary`)
  t.match(procs.map((p) => p.output()).join('\n'), /server_login_retry|server conn crashed|database unavailable/, 'the processes saw the primary go')
  const stats = sim.stats()
  t.ok(stats.maxInFlight <= LIMIT, `the provider never had more than ${LIMIT} live (${stats.maxInFlight})`)
  t.equal(stats.phoneOverlaps, 0, 'never two live for one phone')
  t.equal(stats.keysAcceptedTwice, 0, 'no dial placed twice')

  // Every event written reached the receiver (some more than once, under their one id).
  const events = await waitFor(
    'every event delivered',
    async () => {
      const [open] = await db<{ n: number }[]>`SELECT count(*)::int AS n FROM event_deliveries WHERE status <> 'delivered'`
      return open!.n === 0 ? db<{ id: string }[]>`SELECT id::text FROM events` : undefined
    },
    120_000,
  )
  const received = new Set(receiver.accepted().map((e) => e.webhookId))
  t.ok(events.length >= CALLS, `events were written (${events.length})`)
  t.same(events.filter((e) => !received.has(e.id)), [], 'every event reached the receiver')

  t.same(await stopService(service), [0, 0, 0], 'every process stops cleanly')
  for (const [i, p] of procs.entries()) t.notMatch(p.output(), UNHANDLED, `process ${i + 1}: no unhandled rejection, nothing fatal`)
})
