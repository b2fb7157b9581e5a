import type { Tx } from './sql.ts'

// call_actions (sql/011_call_actions.sql): cancels and retries operators request from SQL.

export interface ActionRow {
  id: string
  call_id: string
  action: 'cancel' | 'retry'
  expires_at: Date | null
  requested_by: string
  requested_at: Date
  done_at: Date | null
  outcome: 'done' | 'refused' | null
  detail: string | null
}

/** The oldest request not carried out yet, locked for this transaction; another worker skips it. */
export async function takeRequestedAction(tx: Tx): Promise<ActionRow | undefined> {
  const [row] = await tx<ActionRow[]>`
    SELECT * FROM call_actions WHERE done_at IS NULL ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED`
  return row
}

export async function recordActionOutcome(tx: Tx, id: string, outcome: 'done' | 'refused', detail: string): Promise<void> {
  await tx`UPDATE call_actions SET done_at = now(), outcome = ${outcome}, detail = ${detail} WHERE id = ${id} AND done_at IS NULL`
}
