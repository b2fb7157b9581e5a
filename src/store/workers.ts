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
