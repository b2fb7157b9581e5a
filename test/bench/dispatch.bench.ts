// npm run bench:dispatch [-- --calls 2000 --phones 500 --workers 2 --limit 30 --call-ms 0]
//
// Throughput and slot refill latency. By default the provider has zero latency: the simulator
// answers 202 at once and calls back as soon as it has answered (--call-ms makes each call last
// that long, to see refill latency when the machine is not saturated). One API process and N worker processes
// (bin/orchestrator) share one database. Reports calls per second and, for every slot freed
// while calls were waiting, how long it stayed empty (from the callback's transaction to the
// claim that refilled it): median and p99. Uses DATABASE_URL's server, or an embedded one.
import { spawn, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import postgres from 'postgres'
import { silentLogger } from '../../src/platform/log.ts'
import { NO_FAULTS, ProviderSimulator } from '../../src/simulator/simulator.ts'
import { freePort } from '../support/processes.ts'
import { benchDatabase } from './database.ts'

const { values: args } = parseArgs({
  options: {
    calls: { type: 'string', default: '2000' },
    phones: { type: 'string', default: '500' },
    workers: { type: 'string', default: '2' },
    limit: { type: 'string', default: '30' },
    'call-ms': { type: 'string', default: '0' },
  },
})
const CALLS = Number(args.calls)
const PHONES = Number(args.phones)
const WORKERS = Number(args.workers)
const LIMIT = Number(args.limit)
const CALL_MS = Number(args['call-ms'])
const SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'

const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN


const database = await benchDatabase('dispatch')
const url = database.url
const sql = postgres(url, { max: 4, onnotice: () => {} })

const sim = new ProviderSimulator(
  {
    secret: SECRET,
    minDurationMs: CALL_MS,
    maxDurationMs: CALL_MS,
    statusMix: [{ status: 'COMPLETED', weight: 1 }],
    rates: NO_FAULTS,
  },
  silentLogger,
)
await sim.start()
const port = await freePort()
const env = {
  PATH: process.env.PATH ?? '',
  HOME: process.env.HOME ?? '',
  DATABASE_URL: url,
  PORT: String(port),
  HOST: '127.0.0.1',
  PROVIDER_BASE_URL: sim.url,
  PUBLIC_BASE_URL: `http://127.0.0.1:${port}`,
  WEBHOOK_SECRET: SECRET,
  MAX_CONCURRENT_CALLS: String(LIMIT),
  LOG_LEVEL: 'error',
}
const procs: ChildProcess[] = []
const run = (mode: string) => {
  const child = spawn(join(import.meta.dirname, '..', '..', 'bin', 'orchestrator'), [mode], { env, stdio: 'inherit' })
  procs.push(child)
  return child
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

try {
  // Migrate first, so the API and the workers do not all race to install pg-boss.
  const migrated = run('migrate')
  await new Promise((r) => migrated.on('exit', r))
  run('api')
  for (let i = 0; i < WORKERS; i++) run('worker')
  for (;;) {
    if ((await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined))?.ok) break
    await sleep(100)
  }
  const [w] = await sql<{ n: number }[]>`SELECT count(*)::int AS n FROM workers WHERE stopped_at IS NULL`
  if (w!.n < WORKERS) await sleep(2_000)

  // Load the backlog while the workers drain it.
  const started = Date.now()
  let next = 0
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < CALLS) {
        const i = next++
        const res = await fetch(`http://127.0.0.1:${port}/calls`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ to: `+1666${String(i % PHONES).padStart(7, '0')}`, scriptId: 'bench' }),
        })
        if (res.status !== 201) throw new Error(`POST /calls answered ${res.status}`)
      }
    }),
  )
  for (;;) {
    const [row] = await sql<{ open: number }[]>`SELECT count(*)::int AS open FROM calls WHERE status IN ('PENDING', 'IN_PROGRESS')`
    if (row!.open === 0) break
    await sleep(100)
  }
  const wall = (Date.now() - started) / 1000

  const [span] = await sql<{ first: Date; last: Date; completed: number }[]>`
    SELECT min(started_at) AS first, max(ended_at) AS last, count(*) FILTER (WHERE status = 'COMPLETED')::int AS completed FROM calls`
  const claims = (await sql<{ t: Date }[]>`SELECT started_at AS t FROM calls ORDER BY started_at`).map((r) => r.t.getTime())
  const releases = (await sql<{ t: Date }[]>`SELECT received_at AS t FROM callbacks WHERE verdict = 'applied' ORDER BY received_at`).map((r) => r.t.getTime())
  // With a backlog, the k-th freed slot is refilled by claim number LIMIT + k.
  const gaps: number[] = []
  for (let k = 0; k < releases.length && LIMIT + k < claims.length; k++) gaps.push(Math.max(0, claims[LIMIT + k]! - releases[k]!))
  gaps.sort((a, b) => a - b)
  const seconds = (span!.last.getTime() - span!.first.getTime()) / 1000
  const stats = sim.stats()
  const report = {
    calls: CALLS,
    phones: PHONES,
    workers: WORKERS,
    limit: LIMIT,
    callMs: CALL_MS,
    completed: span!.completed,
    callsPerSecond: Math.round((span!.completed / seconds) * 10) / 10,
    wallSecondsIncludingLoad: Math.round(wall * 10) / 10,
    slotEmptyMs: { samples: gaps.length, median: percentile(gaps, 50), p99: percentile(gaps, 99), max: gaps.at(-1) },
    provider: { maxInFlight: stats.maxInFlight, maxInFlightPerPhone: stats.maxInFlightPerPhone, keysAcceptedTwice: stats.keysAcceptedTwice },
  }
  console.log(JSON.stringify(report, null, 2))
  console.log(
    `\n${report.callsPerSecond} calls/s through ${WORKERS} workers; a freed slot stayed empty ` +
      `${report.slotEmptyMs.median} ms (median), ${report.slotEmptyMs.p99} ms (p99) over ${gaps.length} refills`,
  )
} finally {
  for (const p of procs) if (p.exitCode === null) p.kill('SIGTERM')
  await Promise.all(procs.map((p) => (p.exitCode === null ? new Promise((r) => p.on('exit', r)) : undefined)))
  await sim.stop()
  await sql.end()
  await database.drop()
}
