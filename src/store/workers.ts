import type { Sql } from './sql.ts'

// The workers table: one row per worker process that ever started, with when it was last seen,
// so an operator (and the status page) can tell which workers are alive.

export async function registerWorker(db: Sql, host: string, pid: number): Promise<number> {
  const [row] = await db<{ id: number }[]>`INSERT INTO workers (host, pid) VALUES (${host}, ${pid}) RETURNING id`
  return row!.id
}

export async function touchWorker(db: Sql, id: number, stopped = false): Promise<void> {
  await db`UPDATE workers SET last_seen_at = now(), stopped_at = CASE WHEN ${stopped} THEN now() ELSE stopped_at END WHERE id = ${id}`
}
