import type { Sql } from 'postgres'
import { WEBHOOK_SECRET } from './harness.ts'
import { freePort, runBinary, waitFor, type Proc } from './processes.ts'

// The service as production runs it, for the tests about where it runs (a pooler, a failover,
// connection faults, a connection budget): an API and workers as processes of bin/orchestrator,
// behind whatever database URLs the test gives them, dialing the test's simulator.

interface T {
  teardown(fn: () => Promise<void> | void): void
}

export interface Service {
  base: string
  procs: Proc[]
}

/**
 * Starts an API (and waits until it is ready), then `workers` workers. `env` adds to, or
 * overrides, what every test of this kind sets: the pooler's settings, a limit, short retries.
 */
export async function startService(t: T, o: { databaseUrl: string; directUrl?: string; providerUrl: string; workers: number; env?: Record<string, string> }): Promise<Service> {
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const env = {
    DATABASE_URL: o.databaseUrl,
    ...(o.directUrl ? { DATABASE_DIRECT_URL: o.directUrl, DATABASE_POOLER: 'transaction' } : {}),
    DATABASE_CONNECTIONS: '8',
    PORT: String(port),
    HOST: '127.0.0.1',
    PROVIDER_BASE_URL: o.providerUrl,
    PUBLIC_BASE_URL: base,
    WEBHOOK_SECRET,
    RETRY_BASE_SECONDS: '1',
    RETRY_MAX_SECONDS: '2',
    WORKER_POLL_MS: '1000',
    ...o.env,
  }
  const procs = [runBinary(t, 'api', env)]
  await waitFor('the API', async () => (await fetch(`${base}/readyz`).catch(() => undefined))?.ok, 60_000)
  for (let i = 0; i < o.workers; i++) procs.push(runBinary(t, 'worker', env))
  return { base, procs }
}

/** Creates a call as a careful client does: the same Idempotency-Key on every try, a 503 tried again. */
export async function createCall(base: string, key: string, to: string, scriptId: string): Promise<void> {
  for (;;) {
    const res = await fetch(`${base}/calls`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': key },
      body: JSON.stringify({ to, scriptId }),
      signal: AbortSignal.timeout(10_000),
    }).catch(() => undefined)
    if (res?.status === 201 || res?.status === 200) return
    if (res && res.status !== 503) throw new Error(`POST /calls answered ${res.status}: ${await res.text()}`)
    await new Promise((r) => setTimeout(r, 300))
  }
}

/** Waits until no call is PENDING or IN_PROGRESS; the calls by status. */
export function everyCallEnded(sql: Sql, timeoutMs = 180_000): Promise<Array<{ status: string; n: number }>> {
  return waitFor(
    'every call to end',
    async () => {
      const rows = await sql<{ status: string; n: number }[]>`SELECT status, count(*)::int AS n FROM calls GROUP BY status`
      return rows.length === 0 || rows.some((r) => r.status === 'PENDING' || r.status === 'IN_PROGRESS') ? undefined : rows
    },
    timeoutMs,
  )
}

/** SIGTERM to every process; their exit codes, once all have stopped. */
export async function stopService(service: Service): Promise<Array<number | null>> {
  for (const p of service.procs) p.child.kill('SIGTERM')
  return Promise.all(service.procs.map((p) => p.exited))
}

/** Log lines of an unhandled rejection, an uncaught exception, or a fatal error. */
export const UNHANDLED = /Unhandled|uncaught|"level":"fatal"/i
