import type { WaitingFor } from '../../domain/policy.ts'
import { wakeWorkers } from '../../store/notify.ts'
import type { CallJobs } from '../../store/call-jobs.ts'
import type { Tx } from '../../store/sql.ts'
import { dueAfter, requeuePending } from '../../store/transitions.ts'
import type { CallRow } from '../../domain/call.ts'

// The one rule every part keeps through this module, whether the API or dispatch: a waiting or
// in-flight call has exactly one pg-boss job, keyed by its phone, and a call row and its job
// change in the same transaction (the caller's `tx`), never one without the other. Every write
// to the calls queue goes through here; only reads (a claim's fetch, the sweeps' look-ups for
// jobs that lost their call) go to src/store/call-jobs.ts directly.

/** New calls' jobs, many at once, with the ids their rows were inserted with (src/services/calls/create.ts). */
export async function jobsForNewCalls(tx: Tx, jobs: CallJobs, calls: Array<{ id: string; jobId: string; phone: string; startAfter: Date | null }>): Promise<void> {
  await jobs.enqueueMany(tx, calls)
}

/**
 * A new dial for a call whose job is done: an ended call retried (its old job deleted) or an
 * in-flight one sent back by an outcome retry (its active job completed). The caller writes the
 * row with the returned job id in the same transaction.
 */
export async function jobForNextDial(
  tx: Tx,
  jobs: CallJobs,
  call: Pick<CallRow, 'id' | 'phone' | 'job_id'>,
  due: Date,
  old: 'ended' | 'in flight',
): Promise<string> {
  if (call.job_id) await (old === 'ended' ? jobs.delete(tx, call.job_id) : jobs.complete(tx, call.job_id))
  return jobs.enqueue(tx, { id: call.id, phone: call.phone, startAfter: due })
}

/**
 * A PENDING call moves to a fresh job, due no sooner than `delaySeconds` from now nor than the
 * call's own next_attempt_at: its phone changed (the job is keyed by phone), its job was lost,
 * or a claim met it while its phone was busy. Whatever job it had is deleted.
 */
export async function requeueCall(tx: Tx, jobs: CallJobs, call: Pick<CallRow, 'id' | 'phone' | 'job_id'>, delaySeconds = 0): Promise<string> {
  if (call.job_id) await jobs.delete(tx, call.job_id)
  const due = await dueAfter(tx, call.id, delaySeconds)
  const jobId = await jobs.enqueue(tx, { id: call.id, phone: call.phone, startAfter: due })
  await requeuePending(tx, call.id, jobId, due)
  await wakeWorkers(tx)
  return jobId
}

/** A PENDING call's job is replaced by one due at `due` (a time from the database's clock), waiting for `waitingFor`. */
export async function rescheduleCall(
  tx: Tx,
  jobs: CallJobs,
  call: Pick<CallRow, 'id' | 'phone' | 'job_id'>,
  due: Date,
  waitingFor: WaitingFor | null,
): Promise<string> {
  if (call.job_id) await jobs.delete(tx, call.job_id)
  const jobId = await jobs.enqueue(tx, { id: call.id, phone: call.phone, startAfter: due })
  await requeuePending(tx, call.id, jobId, due, waitingFor)
  await wakeWorkers(tx)
  return jobId
}

/**
 * The call ended (or was refused a dial): its job has done its work. Under key_strict_fifo an
 * active job blocks its phone until then, so every end goes through here; a caller that frees
 * a slot also wakes the workers.
 */
export async function completeJob(tx: Tx, jobs: CallJobs, call: Pick<CallRow, 'job_id'>): Promise<void> {
  if (call.job_id) await jobs.complete(tx, call.job_id)
}

/** The call ended without being dialed (it expired): its waiting job goes. */
export async function deleteJob(tx: Tx, jobs: CallJobs, call: Pick<CallRow, 'job_id'>): Promise<void> {
  if (call.job_id) await jobs.delete(tx, call.job_id)
}
