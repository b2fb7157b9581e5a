import { CALL_STATUSES, type CallRow, type CallStatus } from '../calls/model.ts'
import type { WaitingFor } from '../calls/policy.ts'
import type { CallingWindow } from '../calls/window.ts'
import { WAKE_CHANNEL } from './locks.ts'
import type { Sql, Tx } from './sql.ts'

// Every query on the calls table. Each state change is a guarded UPDATE: it names the state
// it leaves, and zero rows back means the change was not legal at that moment (a lost race, a
// duplicate callback); the caller decides what that means.

type Db = Sql | Tx

export interface NewCall {
  id: string
  jobId: string
  phone: string
  scriptId: string
  metadata: Record<string, unknown>
  /** The client's deadline; without one, `ttlSeconds` from now on the database's clock. */
  expiresAt: Date | null
  ttlSeconds: number
  idempotencyKey: string | null
  requestHash: string | null
  notBefore?: Date | null
  callingWindow?: CallingWindow | null
  timeZones?: string[]
  /** When it may first be dialed (its job's start), and why it waits until then. */
  dueAt?: Date | null
  waitingFor?: WaitingFor | null
}

/**
 * Inserts a PENDING call, and in the same statement wakes the workers for it (one round trip
 * less). Not async: the query is sent when this is called, ahead of anything sent after.
 */
export function insertCall(tx: Db, call: NewCall): Promise<CallRow> {
  return tx<Array<CallRow & { woken: unknown }>>`
    WITH inserted AS (
    INSERT INTO calls (id, job_id, phone, script_id, metadata, expires_at, idempotency_key, request_hash,
                       not_before, calling_window, time_zones, next_attempt_at, waiting_for)
    VALUES (${call.id}, ${call.jobId}, ${call.phone}, ${call.scriptId}, ${tx.json(call.metadata as never)},
            COALESCE(${call.expiresAt}::timestamptz, now() + make_interval(secs => ${call.ttlSeconds})),
            ${call.idempotencyKey}, ${call.requestHash},
            ${call.notBefore ?? null}, ${call.callingWindow ? tx.json(call.callingWindow as never) : null}::jsonb,
            ${call.timeZones ?? []}::text[],
            CASE WHEN ${call.dueAt ?? null}::timestamptz > now() THEN ${call.dueAt ?? null}::timestamptz END,
            CASE WHEN ${call.dueAt ?? null}::timestamptz > now() THEN ${call.waitingFor ?? null} END)
    RETURNING *)
    SELECT inserted.*, pg_notify(${WAKE_CHANNEL}, '') AS woken FROM inserted`.then(([row]) => {
    const { woken: _, ...inserted } = row!
    return inserted
  })
}

export async function findByIdempotencyKey(db: Db, key: string): Promise<CallRow | undefined> {
  const [row] = await db<CallRow[]>`SELECT * FROM calls WHERE idempotency_key = ${key}`
  return row
}

export async function findByIdempotencyKeys(db: Db, keys: string[]): Promise<CallRow[]> {
  if (keys.length === 0) return []
  return db<CallRow[]>`SELECT * FROM calls WHERE idempotency_key = ANY(${keys}::text[])`
}

export async function getCall(db: Db, id: string): Promise<CallRow | undefined> {
  const [row] = await db<CallRow[]>`SELECT * FROM calls WHERE id = ${id}`
  return row
}

/** These call rows, locked until the transaction ends (FOR UPDATE). */
export async function lockCalls(tx: Tx, ids: string[]): Promise<CallRow[]> {
  if (ids.length === 0) return []
  return tx<CallRow[]>`SELECT * FROM calls WHERE id = ANY(${ids}::uuid[]) FOR UPDATE`
}

/** The call row, locked until the transaction ends (FOR UPDATE). */
export async function lockCall(tx: Tx, id: string): Promise<CallRow | undefined> {
  const [row] = await tx<CallRow[]>`SELECT * FROM calls WHERE id = ${id} FOR UPDATE`
  return row
}

export interface ListQuery {
  status?: CallStatus | undefined
  limit: number
  /** The id of the last call of the previous page. */
  after?: string | undefined
}

/** Newest first; keyset pagination on (created_at, id), served by the two list indexes. */
export async function listCalls(db: Db, q: ListQuery): Promise<{ rows: CallRow[]; cursorFound: boolean }> {
  if (q.after) {
    // Compared in SQL, not in JS: created_at has microseconds, a JS Date only milliseconds.
    const [found] = await db<{ id: string }[]>`SELECT id FROM calls WHERE id = ${q.after}`
    if (!found) return { rows: [], cursorFound: false }
  }
  const rows = await db<CallRow[]>`
    SELECT * FROM calls
    WHERE true
      ${q.status ? db`AND status = ${q.status}` : db``}
      ${q.after ? db`AND (created_at, id) < (SELECT created_at, id FROM calls WHERE id = ${q.after})` : db``}
    ORDER BY created_at DESC, id DESC
    LIMIT ${q.limit}`
  return { rows, cursorFound: true }
}

export interface PayloadChange {
  phone?: string | undefined
  scriptId?: string | undefined
  metadata?: Record<string, unknown> | undefined
  /** Given (null included) replaces; absent keeps. */
  notBefore?: Date | null | undefined
  callingWindow?: CallingWindow | null | undefined
  timeZones?: string[] | undefined
}

/** Changes the payload of a call that is still PENDING; undefined when it is not. */
export async function updatePendingPayload(tx: Tx, id: string, change: PayloadChange): Promise<CallRow | undefined> {
  const window = change.callingWindow ? tx.json(change.callingWindow as never) : null
  const [row] = await tx<CallRow[]>`
    UPDATE calls SET
      phone          = COALESCE(${change.phone ?? null}, phone),
      script_id      = COALESCE(${change.scriptId ?? null}, script_id),
      metadata       = COALESCE(${change.metadata ? tx.json(change.metadata as never) : null}::jsonb, metadata),
      not_before     = CASE WHEN ${change.notBefore !== undefined} THEN ${change.notBefore ?? null}::timestamptz ELSE not_before END,
      calling_window = CASE WHEN ${change.callingWindow !== undefined} THEN ${window}::jsonb ELSE calling_window END,
      time_zones     = COALESCE(${change.timeZones ?? null}::text[], time_zones),
      updated_at     = now()
    WHERE id = ${id} AND status = 'PENDING'
    RETURNING *`
  return row
}

/** Calls by status, exact, from the counters (sql/006_call_status_counts.sql): never a scan of calls. */
export async function countByStatus(db: Db): Promise<Record<CallStatus, number>> {
  const rows = await db<{ status: CallStatus; n: number }[]>`
    SELECT status, calls::int AS n FROM call_counts`
  const counts = Object.fromEntries(CALL_STATUSES.map((s) => [s, 0])) as Record<CallStatus, number>
  for (const r of rows) counts[r.status] = r.n
  return counts
}

/** Not async: the query is sent when this is called, so it can take its place in inOrder(). */
export function countInFlight(db: Db): Promise<number> {
  return db<{ n: number }[]>`SELECT ${inFlightCount(db)} AS n`.then(([row]) => row!.n)
}

/** countInFlight as an expression, for a statement that reads it along with other things. */
export const inFlightCount = (db: Db) => db`(SELECT count(*)::int FROM calls WHERE status = 'IN_PROGRESS')`

/** Folds the status changes written since the last fold into the counters; workers do it every sweep. */
export async function foldStatusCounts(db: Db): Promise<number> {
  const [row] = await db<{ n: string }[]>`SELECT fold_call_status_changes() AS n`
  return Number(row!.n)
}
