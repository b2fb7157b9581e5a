import type { CallRow } from '../domain/call.ts'
import type { Sql, Tx } from './sql.ts'

// The do-not-call list, and the calls it ends.

type Db = Sql | Tx

export interface SuppressionRow {
  phone: string
  reason: string | null
  source: string
  created_at: Date
}

export async function isSuppressed(db: Db, phone: string): Promise<boolean> {
  const rows = await db`SELECT 1 FROM suppressions WHERE phone = ${phone}`
  return rows.length > 0
}

/** Of these phones, those on the list; with the database's clock, which a create needs too (one statement). */
export async function suppressedAmongAndNow(db: Db, phones: string[]): Promise<{ suppressed: Set<string>; now: Date }> {
  const [row] = await db<{ suppressed: string[]; now: Date }[]>`
    SELECT ARRAY(SELECT phone FROM suppressions WHERE phone = ANY(${phones}::text[])) AS suppressed, now() AS now`
  return { suppressed: new Set(row!.suppressed), now: row!.now }
}

/** Which of these calls' numbers are on the do-not-call list. */
export async function suppressedAmongCalls(db: Db, callIds: string[]): Promise<Set<string>> {
  if (callIds.length === 0) return new Set()
  const rows = await db<{ phone: string }[]>`
    SELECT s.phone FROM suppressions s WHERE s.phone IN (SELECT phone FROM calls WHERE id = ANY(${callIds}::uuid[]))`
  return new Set(rows.map((r) => r.phone))
}

/** Adds (or updates the reason of) numbers; returns which were new. */
export async function addSuppressions(
  tx: Tx,
  entries: Array<{ phone: string; reason: string | null }>,
  source: string,
): Promise<{ added: string[]; rows: SuppressionRow[] }> {
  if (entries.length === 0) return { added: [], rows: [] }
  const rows = await tx<Array<SuppressionRow & { inserted: boolean }>>`
    INSERT INTO suppressions (phone, reason, source)
    SELECT * FROM unnest(${entries.map((e) => e.phone)}::text[], ${entries.map((e) => e.reason)}::text[],
                         array_fill(${source}::text, ARRAY[${entries.length}::int]))
    ON CONFLICT (phone) DO UPDATE SET reason = COALESCE(EXCLUDED.reason, suppressions.reason)
    RETURNING *, (xmax = 0) AS inserted`
  return { added: rows.filter((r) => r.inserted).map((r) => r.phone), rows: rows.map(({ inserted: _, ...r }) => r) }
}

export async function removeSuppression(tx: Tx, phone: string): Promise<boolean> {
  const rows = await tx`DELETE FROM suppressions WHERE phone = ${phone} RETURNING phone`
  return rows.length > 0
}

export async function getSuppression(db: Db, phone: string): Promise<SuppressionRow | undefined> {
  const [row] = await db<SuppressionRow[]>`SELECT * FROM suppressions WHERE phone = ${phone}`
  return row
}

/** Newest first; keyset pagination on (created_at, phone). */
export async function listSuppressions(db: Db, q: { limit: number; after?: string | undefined }): Promise<SuppressionRow[]> {
  return db<SuppressionRow[]>`
    SELECT * FROM suppressions
    ${q.after ? db`WHERE (created_at, phone) < (SELECT created_at, phone FROM suppressions WHERE phone = ${q.after})` : db``}
    ORDER BY created_at DESC, phone DESC
    LIMIT ${q.limit}`
}

/**
 * PENDING calls to these numbers end SUPPRESSED, never dialed; returns them so their jobs can go.
 * Calls already in flight are left to end: they were dialed before the number was listed.
 */
export async function suppressPendingCalls(tx: Tx, phones: string[]): Promise<CallRow[]> {
  if (phones.length === 0) return []
  return tx<CallRow[]>`
    UPDATE calls SET status = 'SUPPRESSED', ended_at = now(), updated_at = now(), next_attempt_at = NULL, waiting_for = NULL,
      last_error = 'the number is on the do-not-call list'
    WHERE phone = ANY(${phones}::text[]) AND status = 'PENDING'
    RETURNING *`
}
