import { lockCall } from '../../store/calls.ts'
import { lockClaimsShared } from '../../store/locks.ts'
import { wakeWorkers } from '../../store/notify.ts'
import type { Queues } from '../../store/queues.ts'
import type { Tx } from '../../store/sql.ts'
import { isSuppressed } from '../../store/suppressions.ts'
import { cancelPending, databaseNow, reopenEnded } from '../../store/transitions.ts'
import { emitCallEvents } from '../events/outbox.ts'
import { firstDue, phoneSuppressed } from './create.ts'
import { deleteJob, jobForNextDial } from './jobs.ts'
import { callNotCancellable, callNotFound, callNotRetryable, RETRYABLE, type CallRow } from '../../domain/call.ts'
import { DomainError } from '../../domain/errors.ts'
import type { CallingPolicy } from '../../domain/policy.ts'

// What a client or an operator may do to one call after it was made, each written once: the
// API (POST /calls/:id/cancel, /retry), bin/orchestrator calls cancel|retry and the requests
// operators file from psql (src/services/calls/requests.ts) all run these, in a transaction of theirs.
// Each takes the shared claim lock and then the call's row, so a claim of the same call either
// committed first (the action sees it IN_PROGRESS and refuses) or waits and finds it changed.

/** PENDING → CANCELLED, its job deleted, call.cancelled written; a DomainError otherwise. */
export async function cancelCall(tx: Tx, queue: Queues, id: string): Promise<CallRow> {
  await lockClaimsShared(tx)
  const current = await lockCall(tx, id)
  if (!current) throw callNotFound(id)
  const [cancelled] = await cancelPending(tx, [id])
  if (!cancelled) throw callNotCancellable(id, current.status)
  await deleteJob(tx, queue.calls, cancelled)
  await emitCallEvents(tx, queue.deliveries, 'call.cancelled', [cancelled])
  return cancelled
}

/**
 * FAILED or EXPIRED → PENDING for a new dial: a new job due when the calling rules allow, a new
 * deadline (`expiresAt`, or as long as the call first could wait, counted from now),
 * call.retry_scheduled written, the workers woken. Refused while the number is on the
 * do-not-call list.
 */
export async function retryCall(
  tx: Tx,
  deps: { queue: Queues; calling: CallingPolicy },
  id: string,
  options: { expiresAt?: Date | undefined } = {},
): Promise<CallRow> {
  await lockClaimsShared(tx)
  const current = await lockCall(tx, id)
  if (!current) throw callNotFound(id)
  if (!RETRYABLE.includes(current.status)) throw callNotRetryable(id, current.status)
  if (await isSuppressed(tx, current.phone)) throw phoneSuppressed(current.phone)
  const now = await databaseNow(tx)
  const waited = current.expires_at && current.expires_at.getTime() - current.created_at.getTime()
  const expiresAt = options.expiresAt ?? (waited === null ? null : new Date(Math.max(current.expires_at!.getTime(), now.getTime() + waited)))
  if (expiresAt && expiresAt.getTime() <= now.getTime()) {
    throw new DomainError('expiry_passed', `expiresAt ${expiresAt.toISOString()} is not in the future; give a later one, or leave it out.`, { callId: id })
  }
  const due = await firstDue(tx, deps.calling, current)
  // Its old job is done (or failed, which under key_strict_fifo would block the phone).
  const jobId = await jobForNextDial(tx, deps.queue.calls, current, due.at, 'ended')
  const row = await reopenEnded(tx, id, { jobId, expiresAt, dueAt: due.at, waitingFor: due.waitingFor })
  if (!row) throw callNotRetryable(id, current.status)
  await emitCallEvents(tx, deps.queue.deliveries, 'call.retry_scheduled', [row])
  await wakeWorkers(tx)
  return row
}
