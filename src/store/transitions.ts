import type { CallRow } from '../domain/call.ts'
import { inFlightCount } from './calls.ts'
import type { Sql, Tx } from './sql.ts'

// The dispatch side's state changes on calls. Each one is an UPDATE guarded by the state it
// leaves; zero rows back means it was not legal at that moment and the caller decides what that
// means. Every time is computed here, on the database's clock (now()), never on a process's.
//
// A request's outcome is fenced by `attempts` (each request increments it, so a late answer to
// a request that another worker has since replaced changes nothing); the provider's acceptance
// and its final report are fenced by `dial` (every request of one dial is the same provider call).

type Db = Sql | Tx

const seconds = (ms: number) => ms / 1000

/**
 * PENDING → IN_PROGRESS for the calls whose jobs a claim fetched, starting their next dial with
 * its first request: the claiming worker holds it for `leaseMs`. The new dial's row goes into
 * call_dials in the same statement; what the provider said of an earlier dial stays. A call is
 * skipped when its job is stale, when it has aged out, or when its phone already has a call in
 * flight (the partial unique index would refuse it; checking first keeps the rest of the batch).
 */
export async function claimPending(
  tx: Tx,
  jobs: Array<{ callId: string; jobId: string }>,
  workerId: number,
  leaseMs: number,
): Promise<CallRow[]> {
  if (jobs.length === 0) return []
  const rows = await tx<CallRow[]>`
    WITH claimed AS (
    UPDATE calls c SET
      status             = 'IN_PROGRESS',
      attempts           = c.attempts + 1,
      dial               = c.dial + 1,
      dial_requests      = 1,
      provider_call_id   = NULL,
      provider_status    = NULL,
      duration_sec       = NULL,
      waiting_for        = NULL,
      started_at         = now(),
      updated_at         = now(),
      claimed_by         = ${workerId},
      next_attempt_at    = now() + make_interval(secs => ${seconds(leaseMs)}),
      dialed_at          = NULL,
      outcome_unknown_at = NULL,
      timeout_at         = NULL,
      reconcile_at       = NULL
    FROM unnest(${jobs.map((j) => j.callId)}::uuid[], ${jobs.map((j) => j.jobId)}::uuid[]) AS j(call_id, job_id)
    WHERE c.id = j.call_id
      AND c.job_id = j.job_id
      AND c.status = 'PENDING'
      AND (c.expires_at IS NULL OR c.expires_at > now())
      AND NOT EXISTS (SELECT 1 FROM calls o WHERE o.phone = c.phone AND o.status = 'IN_PROGRESS')
    RETURNING c.*),
    dials AS (
      INSERT INTO call_dials (call_id, dial, phone) SELECT id, dial, phone FROM claimed)
    SELECT * FROM claimed`
  return [...rows]
}

export interface DueResend extends CallRow {
  /** The previous request's lease ran out with no answer recorded (its worker died or went silent). */
  lapsed: boolean
}

/**
 * In-flight calls whose next request under the same key is due: their backoff is over, or the
 * request under way outlived its lease (its worker died, lost the database, or hung). This
 * worker takes the next request and holds it for `leaseMs`. A lapsed request may have reached
 * the provider, so it counts as an unanswered one.
 */
export async function takeDueResends(db: Db, workerId: number, leaseMs: number, maxAttempts: number, limit: number): Promise<DueResend[]> {
  // One statement, so no transaction around it: the calls taken and their dials' request counts.
  return db<DueResend[]>`
    WITH due AS (
      SELECT id, claimed_by IS NOT NULL AS lapsed FROM calls
      WHERE status = 'IN_PROGRESS' AND dialed_at IS NULL AND next_attempt_at <= now() AND dial_requests < ${maxAttempts}
      ORDER BY next_attempt_at
      LIMIT ${limit}
      FOR UPDATE SKIP LOCKED),
    taken AS (
    UPDATE calls c SET
      attempts           = c.attempts + 1,
      dial_requests      = c.dial_requests + 1,
      claimed_by         = ${workerId},
      next_attempt_at    = now() + make_interval(secs => ${seconds(leaseMs)}),
      outcome_unknown_at = CASE WHEN due.lapsed THEN now() ELSE c.outcome_unknown_at END,
      updated_at         = now()
    FROM due WHERE c.id = due.id
    RETURNING c.*, due.lapsed),
    counted AS (
      UPDATE call_dials d SET requests = d.requests + 1 FROM taken WHERE d.call_id = taken.id AND d.dial = taken.dial)
    SELECT * FROM taken`
}

/**
 * In-flight calls with no requests left (MAX_ATTEMPTS reached) whose last one lapsed or whose
 * backoff ended: if any request may have been placed, hold the call until its callback or
 * `timeout_at`; if every request was refused, it was never placed and is FAILED now.
 */
export async function settleExhausted(
  tx: Tx,
  maxAttempts: number,
  timeoutSeconds: number,
  limit: number,
): Promise<{ held: CallRow[]; failed: CallRow[] }> {
  const failed = await tx<CallRow[]>`
    UPDATE calls SET status = 'FAILED', claimed_by = NULL, next_attempt_at = NULL, ended_at = now(), updated_at = now(),
      last_error = COALESCE(last_error, 'dial requests refused') || ${` (${maxAttempts} attempts; none left)`}
    WHERE id IN (
      SELECT id FROM calls
      WHERE status = 'IN_PROGRESS' AND dialed_at IS NULL AND dial_requests >= ${maxAttempts} AND next_attempt_at <= now()
        AND claimed_by IS NULL AND outcome_unknown_at IS NULL
      LIMIT ${limit}
      FOR UPDATE SKIP LOCKED)
    RETURNING *`
  const held = await tx<CallRow[]>`
    UPDATE calls SET
      outcome_unknown_at = CASE WHEN claimed_by IS NOT NULL THEN now() ELSE outcome_unknown_at END,
      claimed_by = NULL, next_attempt_at = NULL,
      timeout_at = now() + make_interval(secs => ${timeoutSeconds}), updated_at = now()
    WHERE id IN (
      SELECT id FROM calls
      WHERE status = 'IN_PROGRESS' AND dialed_at IS NULL AND dial_requests >= ${maxAttempts} AND next_attempt_at <= now()
      LIMIT ${limit}
      FOR UPDATE SKIP LOCKED)
    RETURNING *`
  return { held, failed }
}

/** The provider accepted this dial (any of its requests): wait for its final report. */
export async function markDialed(
  tx: Tx,
  id: string,
  dial: number,
  providerCallId: string,
  timing: { timeoutSeconds: number; reconcileAfterSeconds: number | null },
): Promise<CallRow | undefined> {
  const [row] = await tx<CallRow[]>`
    UPDATE calls SET
      provider_call_id = ${providerCallId}, dialed_at = now(), claimed_by = NULL, next_attempt_at = NULL,
      timeout_at = now() + make_interval(secs => ${timing.timeoutSeconds}),
      -- NULL seconds (no status look-up configured) leave reconcile_at NULL.
      reconcile_at = now() + make_interval(secs => ${timing.reconcileAfterSeconds}),
      updated_at = now()
    WHERE id = ${id} AND status = 'IN_PROGRESS' AND dial = ${dial} AND dialed_at IS NULL
    RETURNING *`
  return row
}

/**
 * A dial whose final report came before its 202 was recorded: the provider placed it, so it was
 * dialed, now, under the id the report names. Undefined when its 202 was recorded already.
 */
export async function markDialedByReport(tx: Tx, id: string, dial: number, providerCallId: string): Promise<CallRow | undefined> {
  const [row] = await tx<CallRow[]>`
    UPDATE calls SET
      provider_call_id = COALESCE(provider_call_id, ${providerCallId}), dialed_at = now(),
      -- As an accepted call is (the schema's checks): no request under way, a time-out set. The
      -- report ends it (or sends it back for a retry) in the same transaction.
      claimed_by = NULL, timeout_at = COALESCE(timeout_at, now()), updated_at = now()
    WHERE id = ${id} AND status = 'IN_PROGRESS' AND dial = ${dial} AND dialed_at IS NULL
    RETURNING *`
  return row
}

/** Records the provider's id for a dial whose call has already ended (its final report came first). */
export async function recordLateProviderId(tx: Tx, id: string, dial: number, providerCallId: string): Promise<void> {
  await tx`
    UPDATE calls SET provider_call_id = ${providerCallId}, updated_at = now()
    WHERE id = ${id} AND dial = ${dial} AND provider_call_id IS NULL`
}

/** This request went unanswered or was refused for now: the next one, same key, after `delayMs`. */
export async function scheduleResend(
  tx: Tx,
  id: string,
  attempt: number,
  change: { error: string; delayMs: number; unknown: boolean },
): Promise<CallRow | undefined> {
  const [row] = await tx<CallRow[]>`
    UPDATE calls SET
      last_error = ${change.error}, claimed_by = NULL,
      next_attempt_at = now() + make_interval(secs => ${seconds(change.delayMs)}),
      outcome_unknown_at = CASE WHEN ${change.unknown} THEN now() ELSE outcome_unknown_at END,
      updated_at = now()
    WHERE id = ${id} AND status = 'IN_PROGRESS' AND attempts = ${attempt} AND dialed_at IS NULL
    RETURNING *`
  return row
}

/**
 * No requests left, and this one or an earlier one of the dial may have been placed: keep the
 * slot and the phone until the provider's final report or `timeoutSeconds` from now.
 */
export async function holdUnknown(
  tx: Tx,
  id: string,
  attempt: number,
  change: { error: string; unknown: boolean; timeoutSeconds: number },
): Promise<CallRow | undefined> {
  const [row] = await tx<CallRow[]>`
    UPDATE calls SET
      last_error = ${change.error}, claimed_by = NULL, next_attempt_at = NULL,
      outcome_unknown_at = CASE WHEN ${change.unknown} THEN now() ELSE outcome_unknown_at END,
      timeout_at = now() + make_interval(secs => ${change.timeoutSeconds}),
      updated_at = now()
    WHERE id = ${id} AND status = 'IN_PROGRESS' AND attempts = ${attempt} AND dialed_at IS NULL
      AND (${change.unknown} OR outcome_unknown_at IS NOT NULL)
    RETURNING *`
  return row
}

/** IN_PROGRESS → FAILED: the provider refused this request for good, or it was never placed at all. */
export async function failAttempt(tx: Tx, id: string, attempt: number, error: string): Promise<CallRow | undefined> {
  const [row] = await tx<CallRow[]>`
    UPDATE calls SET status = 'FAILED', last_error = ${error}, claimed_by = NULL, next_attempt_at = NULL,
      ended_at = now(), updated_at = now()
    WHERE id = ${id} AND status = 'IN_PROGRESS' AND attempts = ${attempt} AND dialed_at IS NULL
    RETURNING *`
  return row
}

export interface FinalStatus {
  status: 'COMPLETED' | 'FAILED'
  providerStatus: string
  providerCallId: string
  durationSec: number | null
  endedAt: Date | null
}

/**
 * The provider's final report on dial `dial`: ends the call if it is still in flight on that dial,
 * or corrects it if we had declared it FAILED without the provider's report (a timeout, an
 * unknown outcome). Returns the row as it was before and after.
 */
export async function applyProviderFinal(tx: Tx, id: string, dial: number, final: FinalStatus): Promise<CallRow | undefined> {
  const [row] = await tx<CallRow[]>`
    UPDATE calls SET
      status           = ${final.status},
      provider_status  = ${final.providerStatus},
      provider_call_id = COALESCE(provider_call_id, ${final.providerCallId}),
      duration_sec     = ${final.durationSec},
      last_error       = CASE WHEN ${final.status} = 'FAILED'
                              THEN 'provider reported ' || ${final.providerStatus} ELSE last_error END,
      ended_at         = COALESCE(${final.endedAt}, now()),
      claimed_by       = NULL,
      next_attempt_at  = NULL,
      updated_at       = now()
    WHERE id = ${id} AND dial = ${dial}
      AND (status = 'IN_PROGRESS' OR (status = 'FAILED' AND provider_status IS NULL))
    RETURNING *`
  return row
}

/** Whether applyProviderFinal changes this call (its WHERE, for a row the caller has locked). */
export const finalReportApplies = (call: Pick<CallRow, 'status' | 'provider_status'>) =>
  call.status === 'IN_PROGRESS' || (call.status === 'FAILED' && call.provider_status === null)

/** PENDING → CANCELLED, by the client; returns those it cancelled (their jobs go next). */
export async function cancelPending(tx: Tx, ids: string[]): Promise<CallRow[]> {
  if (ids.length === 0) return []
  return tx<CallRow[]>`
    UPDATE calls SET status = 'CANCELLED', ended_at = now(), updated_at = now(), next_attempt_at = NULL, waiting_for = NULL,
      last_error = COALESCE(last_error, 'cancelled by the client before it was dialed')
    WHERE id = ANY(${ids}::uuid[]) AND status = 'PENDING'
    RETURNING *`
}

/** PENDING calls past their expiry → EXPIRED; returns them so their jobs can be removed. */
export async function expireDue(tx: Tx, limit: number): Promise<CallRow[]> {
  return tx<CallRow[]>`
    UPDATE calls SET status = 'EXPIRED', ended_at = now(), updated_at = now(),
      last_error = COALESCE(last_error, 'expired before it could be dialed')
    WHERE id IN (
      SELECT id FROM calls
      WHERE status = 'PENDING' AND expires_at <= now()
      ORDER BY expires_at
      LIMIT ${limit}
      FOR UPDATE SKIP LOCKED)
    RETURNING *`
}

/** One PENDING call past its expiry → EXPIRED (met by a claim before the sweep got to it). */
export async function expirePending(tx: Tx, id: string): Promise<CallRow | undefined> {
  const [row] = await tx<CallRow[]>`
    UPDATE calls SET status = 'EXPIRED', ended_at = now(), updated_at = now(),
      last_error = COALESCE(last_error, 'expired before it could be dialed')
    WHERE id = ${id} AND status = 'PENDING' AND expires_at <= now()
    RETURNING *`
  return row
}

/**
 * A call the provider reported BUSY, NO_ANSWER or FAILED goes back to PENDING for a new dial,
 * as its outcome retry policy allows: that provider call has ended, so the slot and the phone
 * are free meanwhile. Its new job, due at `dueAt`, was made by the caller.
 */
export async function retryAfterOutcome(
  tx: Tx,
  id: string,
  dial: number,
  change: { final: FinalStatus; jobId: string; dueAt: Date; waitingFor: string | null; error: string },
): Promise<CallRow | undefined> {
  const [row] = await tx<CallRow[]>`
    UPDATE calls SET
      status = 'PENDING', provider_status = ${change.final.providerStatus},
      provider_call_id = COALESCE(provider_call_id, ${change.final.providerCallId}), duration_sec = ${change.final.durationSec},
      last_error = ${change.error}, job_id = ${change.jobId},
      next_attempt_at = CASE WHEN ${change.dueAt}::timestamptz > now() THEN ${change.dueAt}::timestamptz END,
      waiting_for = CASE WHEN ${change.dueAt}::timestamptz > now() THEN ${change.waitingFor} END,
      claimed_by = NULL, dialed_at = NULL, outcome_unknown_at = NULL, timeout_at = NULL, reconcile_at = NULL,
      updated_at = now()
    WHERE id = ${id} AND dial = ${dial} AND status = 'IN_PROGRESS'
    RETURNING *`
  return row
}

/**
 * FAILED or EXPIRED → PENDING, retried by the client or an operator: a new job (made by the
 * caller), due at `dueAt`, a new deadline, and nothing left of the dial that ended it but its
 * row in call_dials. Undefined when the call is not FAILED or EXPIRED.
 */
export async function reopenEnded(
  tx: Tx,
  id: string,
  change: { jobId: string; expiresAt: Date | null; dueAt: Date; waitingFor: string | null },
): Promise<CallRow | undefined> {
  const [row] = await tx<CallRow[]>`
    UPDATE calls SET
      status = 'PENDING', ended_at = NULL, job_id = ${change.jobId}, expires_at = ${change.expiresAt}, last_error = NULL,
      next_attempt_at = CASE WHEN ${change.dueAt}::timestamptz > now() THEN ${change.dueAt}::timestamptz END,
      waiting_for = CASE WHEN ${change.dueAt}::timestamptz > now() THEN ${change.waitingFor} END,
      claimed_by = NULL, dialed_at = NULL, outcome_unknown_at = NULL, timeout_at = NULL, reconcile_at = NULL,
      updated_at = now()
    WHERE id = ${id} AND status IN ('FAILED', 'EXPIRED')
    RETURNING *`
  return row
}

/** PENDING calls waiting for a calling window or a cap, in id order after `after`, locked. */
export async function waitingForPolicy(tx: Tx, after: string | undefined, limit: number): Promise<CallRow[]> {
  return tx<CallRow[]>`
    SELECT * FROM calls
    WHERE status = 'PENDING' AND waiting_for IN ('calling_window', 'cap') ${after ? tx`AND id > ${after}` : tx``}
    ORDER BY id
    LIMIT ${limit}
    FOR UPDATE SKIP LOCKED`
}

/** The database's now(): the transaction's start, the one clock every rule is judged by. */
export async function databaseNow(db: Db): Promise<Date> {
  const [row] = await db<{ now: Date }[]>`SELECT now()`
  return row!.now
}

/** When a PENDING call may go next: `delaySeconds` from now, or its own next_attempt_at if later. */
export async function dueAfter(tx: Tx, id: string, delaySeconds: number): Promise<Date> {
  const [row] = await tx<{ due: Date }[]>`
    SELECT GREATEST(now() + make_interval(secs => ${delaySeconds}), next_attempt_at) AS due FROM calls WHERE id = ${id}`
  return row!.due
}

/**
 * A PENDING call moves to a new job, due at `dueAt` (read from the database's clock): it shows
 * as next_attempt_at, and `waitingFor` says why, while that is still ahead.
 */
export async function requeuePending(tx: Tx, id: string, jobId: string, dueAt: Date, waitingFor: string | null = null): Promise<void> {
  await tx`
    UPDATE calls SET job_id = ${jobId}, updated_at = now(),
      next_attempt_at = CASE WHEN ${dueAt}::timestamptz > now() THEN ${dueAt}::timestamptz END,
      waiting_for = CASE WHEN ${dueAt}::timestamptz > now() THEN ${waitingFor} END
    WHERE id = ${id} AND status = 'PENDING'`
}

/** In-flight calls with no final report by their timeout_at → FAILED, freeing their slots. */
export async function timeOutSilent(tx: Tx, timeoutSeconds: number, limit: number): Promise<CallRow[]> {
  return tx<CallRow[]>`
    UPDATE calls SET status = 'FAILED', ended_at = now(), updated_at = now(), claimed_by = NULL, next_attempt_at = NULL,
      last_error = CASE WHEN dialed_at IS NOT NULL
        THEN ${`no final report from the provider within ${timeoutSeconds} seconds`}
        ELSE ${`outcome unknown: no answer for the dial and no final report within ${timeoutSeconds} seconds`} || ' (last error: ' || COALESCE(last_error, 'none') || ')'
      END
    WHERE id IN (
      SELECT id FROM calls
      WHERE status = 'IN_PROGRESS' AND timeout_at <= now()
      LIMIT ${limit}
      FOR UPDATE SKIP LOCKED)
    RETURNING *`
}

/**
 * How long until the soonest waiting call (a backoff, a lease) becomes due, in milliseconds of
 * the database's clock, so a worker can set one timer without trusting its own clock to agree.
 */
export async function msUntilNextDue(db: Db): Promise<number | null> {
  const [row] = await db<{ ms: number | null }[]>`SELECT ${nextDueMs(db)} AS ms`
  return row?.ms ?? null
}

/** msUntilNextDue as an expression, for a statement that reads it along with other things. */
export const nextDueMs = (db: Db) => db`
  (extract(epoch FROM LEAST(
    (SELECT min(next_attempt_at) FROM calls WHERE status = 'PENDING' AND next_attempt_at > now()),
    (SELECT min(next_attempt_at) FROM calls WHERE status = 'IN_PROGRESS' AND next_attempt_at > now())) - now()) * 1000)::float8`

/**
 * Whether a claim could take anything, read without the claim lock: a hint only, for a worker
 * to skip a claim (and the exclusive lock it would take, which every callback waits behind)
 * when no slot is free. A slot freed after this read wakes the worker again (its NOTIFY comes
 * after its commit), so a hint that is already stale costs nothing. With it, when the
 * soonest waiting call is due.
 */
export async function claimHint(db: Db): Promise<{ paused: boolean; maxConcurrentCalls: number | null; inFlight: number; nextDueMs: number | null }> {
  const [row] = await db<{ paused: boolean; max_concurrent_calls: number | null; in_flight: number; next_due_ms: number | null }[]>`
    SELECT paused, max_concurrent_calls,
           ${inFlightCount(db)} AS in_flight,
           ${nextDueMs(db)} AS next_due_ms
    FROM dispatch_settings`
  return { paused: row!.paused, maxConcurrentCalls: row!.max_concurrent_calls, inFlight: row!.in_flight, nextDueMs: row!.next_due_ms }
}

/** Dialed calls due for a status look-up; each is pushed `afterSeconds` ahead, so only one worker asks. */
export async function takeDueLookups(tx: Tx, afterSeconds: number, limit: number): Promise<CallRow[]> {
  return tx<CallRow[]>`
    UPDATE calls SET reconcile_at = now() + make_interval(secs => ${afterSeconds})
    WHERE id IN (
      SELECT id FROM calls
      WHERE status = 'IN_PROGRESS' AND reconcile_at <= now() AND provider_call_id IS NOT NULL
      ORDER BY reconcile_at
      LIMIT ${limit}
      FOR UPDATE SKIP LOCKED)
    RETURNING *`
}

/** The provider says the call is still live: it is not timed out while the provider says so. */
export async function extendLive(db: Db, id: string, dial: number, timeoutSeconds: number): Promise<void> {
  await db`
    UPDATE calls SET timeout_at = GREATEST(timeout_at, now() + make_interval(secs => ${timeoutSeconds})), updated_at = now()
    WHERE id = ${id} AND dial = ${dial} AND status = 'IN_PROGRESS'`
}

/** The provider cannot be asked about this call: CALL_TIMEOUT_SECONDS decides. */
export async function stopLookups(db: Db, id: string): Promise<void> {
  await db`UPDATE calls SET reconcile_at = NULL WHERE id = ${id}`
}

/**
 * Every dialed call in flight is asked about at once: a process calls this when it starts and
 * when it gets the database back, because callbacks may have been lost while it was away.
 */
export async function reconcileAllNow(db: Db): Promise<number> {
  const rows = await db`
    UPDATE calls SET reconcile_at = now()
    WHERE status = 'IN_PROGRESS' AND reconcile_at > now()
    RETURNING id`
  return rows.length
}
