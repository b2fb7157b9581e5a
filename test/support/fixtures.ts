import type { CallStatus } from '../../src/calls/model.ts'
import type { Sql } from '../../src/db/sql.ts'
import type { Harness } from './harness.ts'

// Small helpers shared by the API tests: putting a call into a state by hand (satisfying the
// CHECK constraints of sql/001_calls.sql), and counting what the database holds.

/** Moves a call to `status` with a direct UPDATE that satisfies every CHECK constraint (IN_PROGRESS: dialed). */
export async function forceStatus(sql: Sql, id: string, status: CallStatus): Promise<void> {
  switch (status) {
    case 'PENDING':
      await sql`UPDATE calls SET status = 'PENDING', ended_at = NULL, dialed_at = NULL, claimed_by = NULL WHERE id = ${id}`
      return
    case 'IN_PROGRESS':
      await sql`
        UPDATE calls SET status = 'IN_PROGRESS', attempts = GREATEST(attempts, 1), dial = GREATEST(dial, 1),
          started_at = COALESCE(started_at, now()), dialed_at = now(), timeout_at = now() + interval '1 hour',
          ended_at = NULL, updated_at = now()
        WHERE id = ${id}`
      return
    case 'COMPLETED':
      await sql`
        UPDATE calls SET status = 'COMPLETED', attempts = GREATEST(attempts, 1), dial = GREATEST(dial, 1), started_at = COALESCE(started_at, now()),
          ended_at = now(), provider_status = 'COMPLETED', updated_at = now()
        WHERE id = ${id}`
      return
    case 'FAILED':
      await sql`
        UPDATE calls SET status = 'FAILED', attempts = GREATEST(attempts, 1), dial = GREATEST(dial, 1), started_at = COALESCE(started_at, now()),
          ended_at = now(), last_error = 'busy', updated_at = now()
        WHERE id = ${id}`
      return
    case 'EXPIRED':
      await sql`
        UPDATE calls SET status = 'EXPIRED', ended_at = now(), last_error = 'expired before it could be dialed', updated_at = now()
        WHERE id = ${id}`
      return
  }
}

export interface Snapshot {
  calls: number
  jobs: number
  rows: string
}

/** Everything the API could have written: the calls table and pg-boss's jobs. */
export async function snapshot(sql: Sql): Promise<Snapshot> {
  const [c] = await sql<{ n: number }[]>`SELECT count(*)::int AS n FROM calls`
  const [j] = await sql<{ n: number }[]>`SELECT count(*)::int AS n FROM pgboss.job`
  const rows = await sql<{ r: string }[]>`SELECT coalesce(string_agg(c::text, E'\n' ORDER BY id), '') AS r FROM calls c`
  return { calls: c!.n, jobs: j!.n, rows: rows[0]!.r }
}

export async function jobOf(sql: Sql, callId: string) {
  const [row] = await sql<{ job_id: string | null }[]>`SELECT job_id FROM calls WHERE id = ${callId}`
  if (!row?.job_id) return undefined
  const [job] = await sql<{ id: string; singleton_key: string | null; state: string; data: { callId: string } }[]>`
    SELECT id, singleton_key, state, data FROM pgboss.job WHERE id = ${row.job_id}`
  return job
}

export async function createCall(h: Harness, body: Record<string, unknown> = {}, headers: Record<string, string> = {}) {
  const res = await h.call('POST', '/calls', { to: '+966501234567', scriptId: 'welcomeFlow', ...body }, headers)
  if (res.status !== 201 && res.status !== 200) throw new Error(`POST /calls answered ${res.status}: ${JSON.stringify(res.body)}`)
  return res.body as { id: string; payload: { to: string; scriptId: string; metadata: Record<string, unknown> }; status: CallStatus }
}
