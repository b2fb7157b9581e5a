import type { CallRow } from '../../src/domain/call.ts'
import type { Sql } from '../../src/store/sql.ts'
import type { Harness } from './harness.ts'

// What the database holds, for assertions: one call and its job, or everything a request
// could have written.

export async function callRow(h: { sql: Sql }, id: string): Promise<CallRow> {
  const [row] = await h.sql<CallRow[]>`SELECT * FROM calls WHERE id = ${id}`
  if (!row) throw new Error(`no call ${id}`)
  return row
}

export async function jobState(h: { sql: Sql }, jobId: string | null): Promise<string | undefined> {
  if (!jobId) return undefined
  const [row] = await h.sql<{ state: string }[]>`SELECT state FROM pgboss.job WHERE id = ${jobId}`
  return row?.state
}

/** The pg-boss job a call points at. */
export async function jobOf(sql: Sql, callId: string) {
  const [row] = await sql<{ job_id: string | null }[]>`SELECT job_id FROM calls WHERE id = ${callId}`
  if (!row?.job_id) return undefined
  const [job] = await sql<{ id: string; singleton_key: string | null; state: string; data: { callId: string } }[]>`
    SELECT id, singleton_key, state, data FROM pgboss.job WHERE id = ${row.job_id}`
  return job
}

/** One call row and its job's state: what a refused request must leave as it was. */
export async function callSnapshot(h: { sql: Sql }, id: string): Promise<{ call: CallRow; job: string | undefined }> {
  const call = await callRow(h, id)
  return { call, job: await jobState(h, call.job_id) }
}

/** Everything the API could have written: every call row and the number of pg-boss jobs. */
export async function tableSnapshot(sql: Sql): Promise<{ calls: number; jobs: number; rows: string }> {
  const [c] = await sql<{ n: number }[]>`SELECT count(*)::int AS n FROM calls`
  const [j] = await sql<{ n: number }[]>`SELECT count(*)::int AS n FROM pgboss.job`
  const [rows] = await sql<{ r: string }[]>`SELECT coalesce(string_agg(c::text, E'\n' ORDER BY id), '') AS r FROM calls c`
  return { calls: c!.n, jobs: j!.n, rows: rows!.r }
}

export async function verdicts(h: Pick<Harness, 'sql'>): Promise<Record<string, number>> {
  const rows = await h.sql<{ verdict: string; n: number }[]>`SELECT verdict, count(*)::int AS n FROM callbacks GROUP BY verdict`
  return Object.fromEntries(rows.map((r) => [r.verdict, r.n]))
}

export async function inFlightCount(h: Pick<Harness, 'sql'>): Promise<number> {
  const [row] = await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM calls WHERE status = 'IN_PROGRESS'`
  return row!.n
}
