import { CALL_STATUSES, type CallRow, type CallStatus } from '../domain/call.ts'
import type { WaitingFor } from '../domain/policy.ts'
import type { CallingWindow } from '../domain/window.ts'
import { oneWorker, WAKE_CHANNEL } from './notify.ts'
import { PgError, pgErrorCode, type Sql, type Tx } from './sql.ts'

// Every query on the calls table. Each state change is a guarded UPDATE: it names the state
// it leaves, and zero rows back means the change was not legal at that moment (a lost race, a
// duplicate callback); the caller decides what that means.

type Db = Sql | Tx

/** A call to insert PENDING: every field a create gives, its due time computed. */
export interface NewCall {
  id: string
  jobId: string
  phone: string
  scriptId: string
  metadata: Record<string, unknown>
  /** Its deadline: the client's, or the default the caller worked out (CALL_TTL_SECONDS from now). */
  expiresAt: Date
  idempotencyKey: string | null
  requestHash: string | null
  notBefore: Date | null
  callingWindow: CallingWindow | null
  timeZones: string[]
  /** When it may first be dialed (its job's start), and why it waits until then. */
  dueAt: Date
  waitingFor: WaitingFor | null
  /** Its place in its batch's request; null for a single create. */
  batchIndex: number | null
}

/**
 * PENDING calls, in one INSERT (their rows as one JSON array); the same statement wakes the
 * workers when its transaction commits.
 */
export async function insertCalls(tx: Tx, calls: NewCall[], options: { batchId: string | null }): Promise<CallRow[]> {
  if (calls.length === 0) return []
  const rows = await tx<Array<CallRow & { woken?: unknown }>>`
    WITH inserted AS (
    INSERT INTO calls (id, job_id, phone, script_id, metadata, expires_at, idempotency_key, request_hash,
                       not_before, calling_window, time_zones, next_attempt_at, waiting_for, batch_id, batch_index)
    SELECT r.id, r.job_id, r.phone, r.script_id, r.metadata,
           r.expires_at,
           r.idempotency_key, r.request_hash, r.not_before, r.calling_window,
           ARRAY(SELECT jsonb_array_elements_text(r.time_zones)),
           CASE WHEN r.due_at > now() THEN r.due_at END,
           CASE WHEN r.due_at > now() THEN r.waiting_for END,
           ${options.batchId}::uuid, r.batch_index
    FROM jsonb_to_recordset(${tx.json(
      calls.map((c) => ({
        id: c.id,
        job_id: c.jobId,
        phone: c.phone,
        script_id: c.scriptId,
        metadata: c.metadata,
        expires_at: c.expiresAt,
        idempotency_key: c.idempotencyKey,
        request_hash: c.requestHash,
        not_before: c.notBefore,
        calling_window: c.callingWindow,
        time_zones: c.timeZones,
        due_at: c.dueAt,
        waiting_for: c.waitingFor,
        batch_index: c.batchIndex,
      })) as never,
    )}) AS r(id uuid, job_id uuid, phone text, script_id text, metadata jsonb, expires_at timestamptz,
             idempotency_key text, request_hash text, not_before timestamptz, calling_window jsonb,
             time_zones jsonb, due_at timestamptz, waiting_for text, batch_index int)
    ORDER BY r.batch_index
    RETURNING *)
    SELECT inserted.*, pg_notify(${WAKE_CHANNEL}, ${oneWorker(tx)}) AS woken FROM inserted`
  return rows.map(({ woken: _, ...row }) => row)
}

export async function findByIdempotencyKey(db: Db, key: string): Promise<CallRow | undefined> {
  const [row] = await db<CallRow[]>`SELECT * FROM calls WHERE idempotency_key = ${key}`
  return row
}

export async function findByIdempotencyKeys(db: Db, keys: string[]): Promise<CallRow[]> {
  if (keys.length === 0) return []
  return db<CallRow[]>`SELECT * FROM calls WHERE idempotency_key = ANY(${keys}::text[])`
}

/** An UPDATE that would give a call the provider id another call has (calls_provider_call_id_key). */
export const isProviderCallIdTaken = (err: unknown): boolean =>
  pgErrorCode(err) === PgError.uniqueViolation && (err as { constraint_name?: string }).constraint_name === 'calls_provider_call_id_key'

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
  phone?: string | undefined
  batchId?: string | undefined
  /** Created at or after. */
  from?: Date | undefined
  /** Created before. */
  to?: Date | undefined
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
      ${q.phone ? db`AND phone = ${q.phone}` : db``}
      ${q.batchId ? db`AND batch_id = ${q.batchId}::uuid` : db``}
      ${q.from ? db`AND created_at >= ${q.from}::timestamptz` : db``}
      ${q.to ? db`AND created_at < ${q.to}::timestamptz` : db``}
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

/** Whether dispatch is paused, the slots free, and which of `phones` have a call in flight: one statement. */
export async function holdupFacts(db: Db, phones: string[], defaultLimit: number): Promise<{ paused: boolean; freeSlots: number; busyPhones: Set<string> }> {
  const [row] = await db<{ paused: boolean; free: number; busy: string[] }[]>`
    SELECT s.paused,
      COALESCE(s.max_concurrent_calls, ${defaultLimit}::int) - ${inFlightCount(db)} AS free,
      ARRAY(SELECT phone FROM calls WHERE status = 'IN_PROGRESS' AND phone = ANY(${phones}::text[])) AS busy
    FROM dispatch_settings s`
  return { paused: row!.paused, freeSlots: row!.free, busyPhones: new Set(row!.busy) }
}

export async function countInFlight(db: Db): Promise<number> {
  const [row] = await db<{ n: number }[]>`SELECT ${inFlightCount(db)} AS n`
  return row!.n
}

/** countInFlight as an expression, for a statement that reads it along with other things. */
export const inFlightCount = (db: Db) => db`(SELECT count(*)::int FROM calls WHERE status = 'IN_PROGRESS')`

/** Folds the status changes written since the last fold into the counters; workers do it every sweep. */
export async function foldStatusCounts(db: Db): Promise<number> {
  const [row] = await db<{ n: string }[]>`SELECT fold_call_status_changes() AS n`
  return Number(row!.n)
}
