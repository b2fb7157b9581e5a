import { randomUUID } from 'node:crypto'
import type { CallRow } from '../domain/call.ts'
import type { Sql, Tx } from './sql.ts'

// Batches of calls (POST /calls/batch): one row per request, its calls inserted in one statement.

type Db = Sql | Tx

export interface BatchRow {
  id: string
  idempotency_key: string | null
  request_hash: string | null
  items: number
  calls: number
  created_at: Date
  completed_at: Date | null
  /** Its calls by status, when read with them. */
  by_status?: Record<string, number>
}

export function batchResource(batch: BatchRow) {
  return {
    id: batch.id,
    items: batch.items,
    /** How many of its items became calls. */
    created: batch.calls,
    byStatus: batch.by_status ?? {},
    createdAt: batch.created_at.toISOString(),
    completedAt: batch.completed_at?.toISOString() ?? null,
  }
}

export async function insertBatch(
  tx: Tx,
  b: { id: string; idempotencyKey: string | null; requestHash: string | null; items: number; calls: number; results: unknown },
): Promise<BatchRow> {
  const [row] = await tx<BatchRow[]>`
    INSERT INTO call_batches (id, idempotency_key, request_hash, items, calls, results)
    VALUES (${b.id}, ${b.idempotencyKey}, ${b.requestHash}, ${b.items}, ${b.calls}, ${tx.json(b.results as never)})
    RETURNING id, idempotency_key, request_hash, items, calls, created_at, completed_at`
  return row!
}

export async function findBatchByKey(db: Db, key: string): Promise<BatchRow | undefined> {
  const [row] = await db<BatchRow[]>`SELECT * FROM call_batches WHERE idempotency_key = ${key}`
  return row
}

export async function getBatch(db: Db, id: string): Promise<BatchRow | undefined> {
  const [row] = await db<BatchRow[]>`
    SELECT b.*, COALESCE((SELECT jsonb_object_agg(status, n) FROM (
      SELECT status, count(*)::int AS n FROM calls WHERE batch_id = b.id GROUP BY status) s), '{}') AS by_status
    FROM call_batches b WHERE id = ${id}`
  return row
}

export async function callsOfBatch(db: Db, id: string): Promise<CallRow[]> {
  return db<CallRow[]>`SELECT * FROM calls WHERE batch_id = ${id} ORDER BY batch_index`
}

/**
 * Batches whose calls are now all final, marked complete (once); with their calls by status.
 *
 * Two transactions ending a batch's last two calls at once would each see the other's call
 * still open and neither complete it. So for each batch, first an open call that nobody has
 * locked is looked for and, if found, locked FOR SHARE (SKIP LOCKED: never waited for). Whoever
 * ends that call must wait for this transaction to commit and then sees its call ended: this
 * batch is theirs to complete, not ours, and its row is left alone. Only a batch whose open
 * calls are all locked by others (or none) is locked, FOR NO KEY UPDATE in id order (two such
 * transactions never deadlock), and looked at again with a fresh snapshot: the second to get
 * that lock sees the first's call ended. Before, every call ending locked its batch's row, and
 * the calls of a large batch ended one behind the other. NO KEY UPDATE, not UPDATE: the events
 * these transactions have just written hold KEY SHARE locks on the batch (their foreign key),
 * which FOR UPDATE would wait for, each on the other.
 */
export async function completeBatches(tx: Tx, ids: string[]): Promise<BatchRow[]> {
  if (ids.length === 0) return []
  // From a random point in the batch's open calls, so that transactions ending its calls at
  // once pin different ones, and no one call's end waits for all of them.
  const pivot = randomUUID()
  const pinned = await tx<{ id: string; call: string | null }[]>`
    SELECT b.id, COALESCE(
      (SELECT c.id FROM calls c WHERE c.batch_id = b.id AND c.status IN ('PENDING', 'IN_PROGRESS') AND c.id >= ${pivot}::uuid
       ORDER BY c.id LIMIT 1 FOR SHARE SKIP LOCKED),
      (SELECT c.id FROM calls c WHERE c.batch_id = b.id AND c.status IN ('PENDING', 'IN_PROGRESS')
       ORDER BY c.id LIMIT 1 FOR SHARE SKIP LOCKED)) AS call
    FROM unnest(${ids}::uuid[]) AS b(id)`
  const unsettled = pinned.filter((p) => p.call === null).map((p) => p.id)
  if (unsettled.length === 0) return []
  const open = await tx<{ id: string }[]>`
    SELECT id FROM call_batches WHERE id = ANY(${unsettled}::uuid[]) AND completed_at IS NULL ORDER BY id FOR NO KEY UPDATE`
  if (open.length === 0) return []
  return tx<BatchRow[]>`
    UPDATE call_batches b SET completed_at = now()
    WHERE b.id = ANY(${open.map((b) => b.id)}::uuid[]) AND b.completed_at IS NULL
      AND NOT EXISTS (SELECT 1 FROM calls c WHERE c.batch_id = b.id AND c.status IN ('PENDING', 'IN_PROGRESS'))
    RETURNING b.*, COALESCE((SELECT jsonb_object_agg(status, n) FROM (
      SELECT status, count(*)::int AS n FROM calls WHERE batch_id = b.id GROUP BY status) s), '{}') AS by_status`
}
