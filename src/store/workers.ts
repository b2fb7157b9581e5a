import type { Sql } from './sql.ts'

// The workers table: one row per worker process that ever started, with when it was last seen,
// so an operator (and the status page) can tell which workers are alive.

/** `pollMs`: its WORKER_POLL_MS, by which the wake-ups it is sent judge whether it is alive (src/store/notify.ts). */
export async function registerWorker(db: Sql, host: string, pid: number, pollMs: number | null = null): Promise<number> {
  const [row] = await db<{ id: number }[]>`INSERT INTO workers (host, pid, poll_ms) VALUES (${host}, ${pid}, ${pollMs}::int) RETURNING id`
  return row!.id
}

export async function touchWorker(db: Sql, id: number, stopped = false): Promise<void> {
  await db`UPDATE workers SET last_seen_at = now(), stopped_at = CASE WHEN ${stopped} THEN now() ELSE stopped_at END WHERE id = ${id}`
}

/**
 * The worker's heartbeat, and its turn at the safety sweeps if none was taken in the last
 * `intervalMs` (sql/021_sweep_turns.sql). One statement: of workers asking at once, the first
 * to update the row gets the turn; the others wait for its commit, find the row moved on and
 * get none.
 */
export async function touchAndTakeSweepTurn(db: Sql, id: number, intervalMs: number): Promise<boolean> {
  const rows = await db`
    WITH seen AS (UPDATE workers SET last_seen_at = now() WHERE id = ${id})
    UPDATE sweep_turns SET last_at = now(), worker_id = ${id}
    WHERE last_at <= now() - make_interval(secs => ${intervalMs}::int / 1000.0)
    RETURNING 1`
  return rows.length > 0
}
