import type { Sql } from './sql.ts'

// What is kept, and for how long (CALLBACK_RETENTION, EVENT_RETENTION). Each statement deletes
// at most `limit` of the oldest rows past their time, skipping rows another transaction holds,
// so a sweep never holds a lock for long and two workers never wait on each other.

/** Callbacks received before `seconds` ago. */
export async function deleteOldCallbacks(sql: Sql, seconds: number, limit: number): Promise<number> {
  const rows = await sql`
    DELETE FROM callbacks WHERE id IN (
      SELECT id FROM callbacks
      WHERE received_at < now() - make_interval(secs => ${seconds})
      ORDER BY received_at
      LIMIT ${limit}
      FOR UPDATE SKIP LOCKED)
    RETURNING 1`
  return rows.length
}

/**
 * Events whose every delivery ended (delivered, or given up) before `seconds` ago, with their
 * delivery rows. An event with a delivery still pending stays, however old.
 */
export async function deleteOldEvents(sql: Sql, seconds: number, limit: number): Promise<number> {
  const rows = await sql`
    WITH old AS (
      SELECT e.id FROM events e
      WHERE e.created_at < now() - make_interval(secs => ${seconds})
        AND NOT EXISTS (
          SELECT 1 FROM event_deliveries d
          WHERE d.event_id = e.id
            AND (d.status = 'pending' OR COALESCE(d.delivered_at, d.last_attempt_at, e.created_at) >= now() - make_interval(secs => ${seconds})))
      ORDER BY e.created_at
      LIMIT ${limit}
      FOR UPDATE SKIP LOCKED),
    deliveries AS (DELETE FROM event_deliveries WHERE event_id IN (SELECT id FROM old))
    DELETE FROM events WHERE id IN (SELECT id FROM old)
    RETURNING 1`
  return rows.length
}
