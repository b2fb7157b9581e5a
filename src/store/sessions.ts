import type { Sql } from './sql.ts'

// status_sessions (sql/014_status_sessions.sql): the status page's sign-in sessions.

/** A session opened now for `seconds`; expired sessions are cleared on the way. Returns when it ends. */
export async function openSession(sql: Sql, keyHash: string, tokenHash: string, seconds: number): Promise<Date> {
  await sql`DELETE FROM status_sessions WHERE expires_at <= now()`
  const [row] = await sql<{ expires_at: Date }[]>`
    INSERT INTO status_sessions (key_hash, token_hash, expires_at)
    VALUES (${keyHash}, ${tokenHash}, now() + make_interval(secs => ${seconds}))
    RETURNING expires_at`
  return row!.expires_at
}

/** The session with this key's hash, while it lasts. */
export async function findSession(sql: Sql, keyHash: string): Promise<{ token_hash: string; expires_at: Date } | undefined> {
  const [row] = await sql<{ token_hash: string; expires_at: Date }[]>`
    SELECT token_hash, expires_at FROM status_sessions WHERE key_hash = ${keyHash} AND expires_at > now()`
  return row
}

export async function endSession(sql: Sql, keyHash: string): Promise<void> {
  await sql`DELETE FROM status_sessions WHERE key_hash = ${keyHash}`
}
