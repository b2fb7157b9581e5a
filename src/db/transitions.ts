import type { CallRow } from '../calls/model.ts'
import { WORKER_LOCK_CLASS } from './locks.ts'
import type { Tx } from './sql.ts'

// The dispatch side's state changes on calls. Each one is guarded by the state it leaves and,
// for an attempt's outcome, by the attempt number, so a late or repeated outcome is a no-op.

/**
 * PENDING → IN_PROGRESS for the calls whose jobs a claim fetched. A call is skipped when its
 * job is stale, when it has aged out, or when its phone already has a call in flight (the
 * partial unique index would refuse it; checking first keeps the rest of the batch).
 */
export async function claimPending(
  tx: Tx,
  jobs: Array<{ callId: string; jobId: string }>,
  workerId: number,
): Promise<CallRow[]> {
  if (jobs.length === 0) return []
  return tx<CallRow[]>`
    UPDATE calls c SET
      status     = 'IN_PROGRESS',
      attempts   = c.attempts + 1,
      started_at = now(),
      updated_at = now(),
      claimed_by = ${workerId},
      next_attempt_at = NULL
    FROM unnest(${jobs.map((j) => j.callId)}::uuid[], ${jobs.map((j) => j.jobId)}::uuid[]) AS j(call_id, job_id)
    WHERE c.id = j.call_id
      AND c.job_id = j.job_id
      AND c.status = 'PENDING'
      AND (c.expires_at IS NULL OR c.expires_at > now())
      AND NOT EXISTS (SELECT 1 FROM calls o WHERE o.phone = c.phone AND o.status = 'IN_PROGRESS')
    RETURNING c.*`
}

/** The provider accepted this attempt. */
export async function markDialed(tx: Tx, id: string, attempt: number, providerCallId: string): Promise<CallRow | undefined> {
  const [row] = await tx<CallRow[]>`
    UPDATE calls SET provider_call_id = ${providerCallId}, dialed_at = now(), updated_at = now()
    WHERE id = ${id} AND status = 'IN_PROGRESS' AND attempts = ${attempt}
    RETURNING *`
  return row
}

/** Records the provider's id on a call that its final callback already ended. */
export async function recordLateProviderId(tx: Tx, id: string, providerCallId: string): Promise<void> {
  await tx`
    UPDATE calls SET provider_call_id = ${providerCallId}, updated_at = now()
    WHERE id = ${id} AND provider_call_id IS NULL`
}

/** IN_PROGRESS → PENDING after a retryable failure; the slot frees with this commit. */
export async function scheduleRetry(
  tx: Tx,
  id: string,
  attempt: number,
  change: { error: string; nextAttemptAt: Date; jobId: string },
): Promise<CallRow | undefined> {
  const [row] = await tx<CallRow[]>`
    UPDATE calls SET
      status = 'PENDING', last_error = ${change.error}, next_attempt_at = ${change.nextAttemptAt},
      job_id = ${change.jobId}, claimed_by = NULL, dialed_at = NULL, updated_at = now()
    WHERE id = ${id} AND status = 'IN_PROGRESS' AND attempts = ${attempt}
    RETURNING *`
  return row
}

/** IN_PROGRESS → FAILED for this attempt (not retryable, attempts exhausted, or timed out). */
export async function failAttempt(tx: Tx, id: string, attempt: number, error: string): Promise<CallRow | undefined> {
  const [row] = await tx<CallRow[]>`
    UPDATE calls SET status = 'FAILED', last_error = ${error}, ended_at = now(), updated_at = now()
    WHERE id = ${id} AND status = 'IN_PROGRESS' AND attempts = ${attempt}
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

/** PENDING or IN_PROGRESS → COMPLETED/FAILED, as the provider's final callback says. */
export async function finish(tx: Tx, id: string, final: FinalStatus): Promise<CallRow | undefined> {
  const [row] = await tx<CallRow[]>`
    UPDATE calls SET
      status           = ${final.status},
      provider_status  = ${final.providerStatus},
      provider_call_id = COALESCE(provider_call_id, ${final.providerCallId}),
      duration_sec     = ${final.durationSec},
      last_error       = CASE WHEN ${final.status} = 'FAILED'
                              THEN 'provider reported ' || ${final.providerStatus} ELSE last_error END,
      ended_at         = COALESCE(${final.endedAt}, now()),
      -- A callback can beat the claim's bookkeeping (or follow a crash-recovered attempt):
      -- a call that ends must still say that it was started.
      started_at       = COALESCE(started_at, now()),
      attempts         = GREATEST(attempts, 1),
      next_attempt_at  = NULL,
      updated_at       = now()
    WHERE id = ${id} AND status IN ('PENDING', 'IN_PROGRESS')
    RETURNING *`
  return row
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
export async function expirePending(tx: Tx, id: string): Promise<void> {
  await tx`
    UPDATE calls SET status = 'EXPIRED', ended_at = now(), updated_at = now(),
      last_error = COALESCE(last_error, 'expired before it could be dialed')
    WHERE id = ${id} AND status = 'PENDING'`
}

/** A PENDING call moves to a new job, due at `dueAt`. */
export async function requeuePending(tx: Tx, id: string, jobId: string, dueAt: Date): Promise<void> {
  await tx`
    UPDATE calls SET job_id = ${jobId}, next_attempt_at = ${dueAt}, updated_at = now()
    WHERE id = ${id} AND status = 'PENDING'`
}

/** In-flight calls the provider accepted but never reported on within the timeout. */
export async function timeOutSilent(tx: Tx, timeoutSeconds: number, limit: number): Promise<CallRow[]> {
  return tx<CallRow[]>`
    UPDATE calls SET status = 'FAILED', ended_at = now(), updated_at = now(),
      last_error = ${`no final callback from the provider within ${timeoutSeconds} seconds`}
    WHERE id IN (
      SELECT id FROM calls
      WHERE status = 'IN_PROGRESS' AND dialed_at IS NOT NULL
        AND dialed_at < now() - make_interval(secs => ${timeoutSeconds})
      LIMIT ${limit}
      FOR UPDATE SKIP LOCKED)
    RETURNING *`
}

/**
 * In-flight calls whose worker died before the provider's answer was recorded: this worker
 * adopts them and dials them again under the same attempt number, so the same Idempotency-Key
 * makes a request the provider did receive come back as the same call, not a second one. They
 * stay IN_PROGRESS throughout: the slot stays held and the phone stays blocked, so no other call
 * to that person can start while the provider may still be ringing them.
 */
export async function adoptOrphans(tx: Tx, workerId: number, limit: number): Promise<CallRow[]> {
  return tx<CallRow[]>`
    UPDATE calls SET claimed_by = ${workerId}, updated_at = now()
    WHERE id IN (
      SELECT id FROM calls
      WHERE status = 'IN_PROGRESS' AND dialed_at IS NULL
        AND (claimed_by IS NULL OR claimed_by NOT IN (${liveWorkerIds(tx)}))
      LIMIT ${limit}
      FOR UPDATE SKIP LOCKED)
    RETURNING *`
}

/**
 * Workers alive right now: each holds a session advisory lock (WORKER_LOCK_CLASS, its id) for as
 * long as its connection lives, so a killed worker drops out of this the moment it dies. Read in
 * the same statement as the calls it judges, so a worker that claims after this is evaluated
 * cannot have its calls mistaken for orphans.
 */
export function liveWorkerIds(tx: Tx) {
  return tx`
    SELECT objid::int FROM pg_locks
    WHERE locktype = 'advisory' AND classid = ${WORKER_LOCK_CLASS} AND objsubid = 2 AND granted
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`
}

/** The soonest time a backed-off call becomes due, so a worker can set one timer for it. */
export async function nextDueAt(tx: Tx): Promise<Date | null> {
  const [row] = await tx<{ at: Date | null }[]>`
    SELECT min(next_attempt_at) AS at FROM calls WHERE status = 'PENDING' AND next_attempt_at > now()`
  return row?.at ?? null
}
