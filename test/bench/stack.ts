import { spawn, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import postgres from 'postgres'
import { silentLogger } from '../../src/platform/log.ts'
import { NO_FAULTS, ProviderSimulator } from '../../src/simulator/simulator.ts'
import { freePort } from '../support/processes.ts'
import { ownUsage, processUsage, sleep, type ProcessUsage } from './measure.ts'

// What a scenario runs against: the in-process provider simulator, then bin/orchestrator as
// separate processes (migrate, one API, N workers) on the scenario's database, as in production.

const SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'
const binary = join(import.meta.dirname, '..', '..', 'bin', 'orchestrator')

export interface StackOptions {
  url: string
  workers: number
  limit: number
  /** How long the simulator holds each call; 0 calls back as soon as it has answered. */
  callMs: number
  /** Give each worker a metrics port of its own, for claimSeconds(). */
  metrics?: boolean
}

export type SimulatorStats = ReturnType<ProviderSimulator['stats']>

export interface Stack {
  base: string
  sim: ProviderSimulator
  sql: postgres.Sql
  /** Each child's usage now, and this process's (the simulator and the load generators). */
  usage(): Record<string, ProcessUsage>
  /** The workers' claims so far (orchestrator_claim_duration_seconds, summed): how many and their total seconds. Needs `metrics`. */
  claimSeconds(): Promise<{ count: number; sum: number }>
  stop(): Promise<void>
}

export async function startStack(o: StackOptions): Promise<Stack> {
  const sim = new ProviderSimulator(
    { secret: SECRET, minDurationMs: o.callMs, maxDurationMs: o.callMs, statusMix: [{ status: 'COMPLETED', weight: 1 }], rates: NO_FAULTS },
    silentLogger,
  )
  await sim.start()
  const port = await freePort()
  const env = {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? '',
    DATABASE_URL: o.url,
    PORT: String(port),
    HOST: '127.0.0.1',
    PROVIDER_BASE_URL: sim.url,
    PUBLIC_BASE_URL: `http://127.0.0.1:${port}`,
    WEBHOOK_SECRET: SECRET,
    MAX_CONCURRENT_CALLS: String(o.limit),
    METRICS_PORT: '0', // the default port would be taken twice by two workers
    LOG_LEVEL: 'error',
    // BENCH_CPU_PROF=<dir>: every process writes a V8 CPU profile there when it stops.
    ...(process.env.BENCH_CPU_PROF ? { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${process.env.BENCH_CPU_PROF}` } : {}),
  }
  const children: Array<{ role: string; child: ChildProcess }> = []
  const metricsPorts: number[] = []
  const run = async (mode: string, role = mode) => {
    const own = mode === 'worker' && o.metrics ? { METRICS_PORT: String(metricsPorts[metricsPorts.push(await freePort()) - 1]) } : {}
    const child = spawn(binary, [mode], { env: { ...env, ...own }, stdio: ['ignore', 'inherit', 'inherit'] })
    children.push({ role, child })
    return child
  }
  const sql = postgres(o.url, { max: 4, onnotice: () => {} })
  const stop = async () => {
    for (const { child } of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
    await Promise.all(children.map(({ child }) => (child.exitCode === null && child.signalCode === null ? new Promise((r) => child.on('exit', r)) : undefined)))
    await sim.stop()
    await sql.end()
  }
  try {
    // Migrate first, so the API and the workers do not all race to install pg-boss.
    const migrated = await run('migrate')
    const code = await new Promise((r) => migrated.on('exit', r))
    if (code !== 0) throw new Error(`bin/orchestrator migrate exited ${code}`)
    children.length = 0
    await run('api')
    for (let i = 0; i < o.workers; i++) await run('worker', `worker${i + 1}`)
    const deadline = Date.now() + 60_000
    for (;;) {
      const ready = (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined))?.ok
      const [w] = await sql<{ n: number }[]>`SELECT count(*)::int AS n FROM workers WHERE stopped_at IS NULL`
      if (ready && w!.n >= o.workers) break
      if (Date.now() > deadline) throw new Error('the API or the workers did not come up within 60 s')
      await sleep(100)
    }
  } catch (err) {
    await stop()
    throw err
  }
  return {
    base: `http://127.0.0.1:${port}`,
    sim,
    sql,
    usage() {
      const out: Record<string, ProcessUsage> = {}
      for (const { role, child } of children) {
        const u = child.pid === undefined ? undefined : processUsage(child.pid)
        if (u) out[role] = u
      }
      out['bench (simulator, clients)'] = ownUsage()
      return out
    },
    async claimSeconds() {
      let count = 0
      let sum = 0
      for (const port of metricsPorts) {
        const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
        count += Number(/^orchestrator_claim_duration_seconds_count (\S+)$/m.exec(text)?.[1] ?? 0)
        sum += Number(/^orchestrator_claim_duration_seconds_sum (\S+)$/m.exec(text)?.[1] ?? 0)
      }
      return { count, sum }
    },
    stop,
  }
}

/** What the provider saw that must never happen: more than `limit` live at once, two live calls for one phone, a call request placed twice. */
export function violations(stats: SimulatorStats, limit: number): string[] {
  const found: string[] = []
  if (stats.maxInFlight > limit) found.push(`provider saw ${stats.maxInFlight} calls in flight (limit ${limit})`)
  if (stats.maxInFlightPerPhone > 1) found.push(`provider saw ${stats.maxInFlightPerPhone} calls in flight for one phone`)
  if (stats.phoneOverlaps > 0) found.push(`provider saw ${stats.phoneOverlaps} calls placed while their phone had one live`)
  if (stats.keysAcceptedTwice > 0) found.push(`provider placed ${stats.keysAcceptedTwice} idempotency keys twice`)
  if (stats.callsPlacedTwice > 0) found.push(`provider placed ${stats.callsPlacedTwice} call requests twice`)
  return found
}

/** The simulator's record, as the report prints it for every scenario. */
export const providerRecord = (s: SimulatorStats) => ({
  placed: s.accepted,
  maxInFlight: s.maxInFlight,
  maxInFlightPerPhone: s.maxInFlightPerPhone,
  phoneOverlaps: s.phoneOverlaps,
  keysAcceptedTwice: s.keysAcceptedTwice,
  callsPlacedTwice: s.callsPlacedTwice,
})
export type ProviderRecord = ReturnType<typeof providerRecord>

/**
 * Waits until none of the calls the scenario created (script "bench": postCall's, postBatches')
 * is open; calls still open after `timeoutMs`, or ended in anything but COMPLETED (the
 * simulator completes every call), are lost. Returns how many.
 */
export async function drain(sql: postgres.Sql, timeoutMs: number): Promise<{ lost: number; completed: number }> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const [row] = await sql<{ open: number }[]>`SELECT count(*)::int AS open FROM calls WHERE script_id = 'bench' AND status IN ('PENDING', 'IN_PROGRESS')`
    if (row!.open === 0 || Date.now() > deadline) break
    await sleep(50)
  }
  const [r] = await sql<{ completed: number; other: number }[]>`
    SELECT count(*) FILTER (WHERE status = 'COMPLETED')::int AS completed, count(*) FILTER (WHERE status <> 'COMPLETED')::int AS other
    FROM calls WHERE script_id = 'bench'`
  return { lost: r!.other, completed: r!.completed }
}

/** POSTs one call; throws unless it was created. */
export async function postCall(base: string, to: string): Promise<void> {
  const res = await fetch(`${base}/calls`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ to, scriptId: 'bench', metadata: { source: 'bench' } }),
  })
  await res.arrayBuffer()
  if (res.status !== 201) throw new Error(`POST /calls answered ${res.status}`)
}

/** POSTs calls in batches of at most 1000 (MAX_BATCH), one request at a time. */
export async function postBatches(base: string, phones: string[]): Promise<void> {
  for (let i = 0; i < phones.length; i += 1000) {
    const calls = phones.slice(i, i + 1000).map((to) => ({ to, scriptId: 'bench', metadata: { source: 'bench' } }))
    const res = await fetch(`${base}/calls/batch`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ calls }) })
    const answer = (await res.json()) as { created?: number }
    if (res.status !== 201 || answer.created !== calls.length) throw new Error(`POST /calls/batch answered ${res.status}, created ${answer.created}`)
  }
}

export const phoneNumber = (prefix: string, i: number) => `+1${prefix}${String(i).padStart(7, '0')}`

export type Resources = Record<string, ProcessUsage & { cpuSecondsPerCall?: number }>

/** Peak RSS of each process, and the CPU it spent between two readings (per completed call when `completed` is given). */
export function resourcesBetween(before: Record<string, ProcessUsage>, after: Record<string, ProcessUsage>, completed?: number): Resources {
  const out: Resources = {}
  for (const [proc, u] of Object.entries(after)) {
    const cpu = u.cpuSeconds - (before[proc]?.cpuSeconds ?? 0)
    out[proc] = { peakRssMb: u.peakRssMb, cpuSeconds: Math.round(cpu * 100) / 100, ...(completed ? { cpuSecondsPerCall: cpu / completed } : {}) }
  }
  return out
}
