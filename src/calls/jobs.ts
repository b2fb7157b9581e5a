import { randomUUID } from 'node:crypto'
import { insertCall, type NewCall } from '../db/calls.ts'
import type { WaitingFor } from './policy.ts'
import { wakeWorkers } from '../db/locks.ts'
import type { CallQueue } from '../db/queue.ts'
import type { Tx } from '../db/sql.ts'
import { dueAfter, requeuePending } from '../db/transitions.ts'
import type { CallRow } from './model.ts'

// The one rule every part keeps through this module, whether the API or dispatch: a waiting or
// in-flight call has exactly one pg-boss job, keyed by its phone, and a call row and its job
// change in the same transaction (the caller's `tx`), never one without the other.

/**
 * A new call and its job, due when `call.dueAt` says (now when absent); the workers are woken
 * when the transaction commits. With `commit`, the transaction's COMMIT follows the two inserts
 * on the wire without waiting for their answers: the caller has nothing left to do in the
 * transaction, and whatever fails ahead of the COMMIT (a check the caller sent first, such as
 * refuseSuppressed, or either insert) rolls back all of it instead.
 */
export async function insertCallWithJob(tx: Tx, queue: CallQueue, call: Omit<NewCall, 'jobId'>, options: { commit?: boolean } = {}): Promise<CallRow> {
  // The job's id is chosen here, so the two inserts go together (one round trip). The call's
  // insert is sent now, pg-boss's when it gets to it (an async path of its own), and the
  // COMMIT right behind that one (the transaction awaits the COMMIT's answer itself). pg-boss
  // answers a refused job with no row, which `enqueue` throws on, too late for a COMMIT already
  // sent; it cannot refuse this one (a fresh id, and key_strict_fifo queues any number of jobs
  // per key), and a call left without a job would be requeued by the orphan sweep.
  const jobId = randomUUID()
  const row = insertCall(tx, { ...call, jobId }) // which wakes the workers too
  const sendCommit = options.commit ? () => void tx.commit().execute() : undefined
  await Promise.all([queue.enqueue(tx, { id: call.id, jobId, phone: call.phone, startAfter: call.dueAt ?? null }, sendCommit), row])
  return row
}

/**
 * A PENDING call moves to a fresh job, due no sooner than `delaySeconds` from now nor than the
 * call's own next_attempt_at: its phone changed (the job is keyed by phone), its job was lost,
 * or a claim met it while its phone was busy. Whatever job it had is deleted.
 */
export async function requeueCall(tx: Tx, queue: CallQueue, call: Pick<CallRow, 'id' | 'phone' | 'job_id'>, delaySeconds = 0): Promise<string> {
  if (call.job_id) await queue.delete(tx, call.job_id)
  const due = await dueAfter(tx, call.id, delaySeconds)
  const jobId = await queue.enqueue(tx, { id: call.id, phone: call.phone, startAfter: due })
  await requeuePending(tx, call.id, jobId, due)
  await wakeWorkers(tx)
  return jobId
}

/** A PENDING call's job is replaced by one due at `due` (a time from the database's clock), waiting for `waitingFor`. */
export async function rescheduleCall(
  tx: Tx,
  queue: CallQueue,
  call: Pick<CallRow, 'id' | 'phone' | 'job_id'>,
  due: Date,
  waitingFor: WaitingFor | null,
): Promise<string> {
  if (call.job_id) await queue.delete(tx, call.job_id)
  const jobId = await queue.enqueue(tx, { id: call.id, phone: call.phone, startAfter: due })
  await requeuePending(tx, call.id, jobId, due, waitingFor)
  await wakeWorkers(tx)
  return jobId
}

/**
 * The call ended (or was refused a dial): its job has done its work. Under key_strict_fifo an
 * active job blocks its phone until then, so every end goes through here; a caller that frees
 * a slot also wakes the workers.
 */
export async function completeJob(tx: Tx, queue: CallQueue, call: Pick<CallRow, 'job_id'>): Promise<void> {
  if (call.job_id) await queue.complete(tx, call.job_id)
}

/** The call ended without being dialed (it expired): its waiting job goes. */
export async function deleteJob(tx: Tx, queue: CallQueue, call: Pick<CallRow, 'job_id'>): Promise<void> {
  if (call.job_id) await queue.delete(tx, call.job_id)
}
