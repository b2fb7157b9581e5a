import { completeJob, deleteJob, requeueCall, rescheduleCall } from '../calls/jobs.ts'
import { policyHash, type CallingPolicy } from '../../domain/policy.ts'
import { dueTime } from '../calls/due.ts'
import { readSettings, recordPolicyHash } from '../../store/settings.ts'
import type { CallRow } from '../../domain/call.ts'
import { foldStatusCounts } from '../../store/calls.ts'
import { silentLogger, type Logger } from '../../platform/log.ts'
import { metrics } from '../../platform/metrics.ts'
import { observeEnded } from '../calls/observe.ts'
import { endDials } from '../../store/dials.ts'
import { deleteOldCallbacks, deleteOldEvents } from '../../store/retention.ts'
import { analyzeStale } from '../../store/statistics.ts'
import { emitCallEvents } from '../events/outbox.ts'
import { lockClaimsShared } from '../../store/locks.ts'
import { wakeDeliveries, wakeWorkers } from '../../store/notify.ts'
import type { Sql, Tx } from '../../store/sql.ts'
import * as t from '../../store/transitions.ts'
import type { DispatchPolicy } from './claim.ts'
import type { Queues } from '../../store/queues.ts'

// The periodic safety sweeps: nothing waits on a process staying alive or on a message
// arriving. Each is its own short transaction that changes a call and its job together.

const BATCH = 500

export interface SweepResult {
  expired: number
  timedOut: number
  /** Calls out of requests whose last one lapsed: held until their final report or timeout. */
  held: number
  /** Calls out of requests, every one refused: never placed, FAILED. */
  exhaustedFailed: number
  unblocked: number
  /** Failed event-delivery jobs whose scope went on in a fresh job. */
  revivedDeliveries: number
  requeued: number
  /** Callbacks and events deleted, past CALLBACK_RETENTION and EVENT_RETENTION. */
  pruned: { callbacks: number; events: number }
}

/** `cursor` carries the PENDING-call walk from one sweep to the next (see requeueJobless). */
export async function sweep(
  sql: Sql,
  queue: Queues,
  policy: DispatchPolicy,
  cursor: { pending?: string | undefined },
  log: Logger = silentLogger,
): Promise<SweepResult> {
  const ended = (rows: CallRow[], what: string) => {
    for (const row of rows) log.info(what, { callId: row.id, phone: row.phone, dial: row.dial, attempt: row.attempts, from: 'IN_PROGRESS', to: row.status, error: row.last_error })
  }
  const expired = await expireDueCalls(sql, queue)
  observeEnded(log, expired, 'EXPIRED')
  const timedOut = await timeOutSilentCalls(sql, queue, policy)
  metrics.timedOut.inc(timedOut.length)
  ended(timedOut, 'call timed out')
  const exhausted = await settleExhaustedCalls(sql, queue, policy)
  ended(exhausted.failed, 'call failed: out of requests')
  const unblocked = await deleteStrandedJobs(sql, queue)
  const revivedDeliveries = await reviveFailedDeliveries(sql, queue)
  const requeued = await requeueJobless(sql, queue, cursor)
  await foldStatusCounts(sql)
  const analyzed = await analyzeStale(sql)
  if (analyzed.length) log.info('statistics refreshed', { tables: analyzed })
  const pruned = policy.retention ? await prune(sql, policy.retention) : { callbacks: 0, events: 0 }
  return { expired: expired.length, timedOut: timedOut.length, held: exhausted.held, exhaustedFailed: exhausted.failed.length, unblocked, revivedDeliveries, requeued, pruned }
}

/** Rows deleted per table and sweep: small statements, many sweeps (every WORKER_POLL_MS). */
export const PRUNE_BATCH = 500

/** Callbacks and sent events past their retention, the oldest PRUNE_BATCH of each. */
export async function prune(sql: Sql, retention: { callbackSeconds: number; eventSeconds: number }, limit = PRUNE_BATCH): Promise<{ callbacks: number; events: number }> {
  const callbacks = await deleteOldCallbacks(sql, retention.callbackSeconds, limit)
  const events = await deleteOldEvents(sql, retention.eventSeconds, limit)
  return { callbacks, events }
}

/** PENDING calls past their expiry → EXPIRED, their jobs deleted. */
export async function expireDueCalls(sql: Sql, queue: Queues): Promise<CallRow[]> {
  return sql.begin(async (tx) => {
    await lockClaimsShared(tx)
    const rows = await t.expireDue(tx, BATCH)
    for (const row of rows) await deleteJob(tx, queue.calls, row)
    await emitCallEvents(tx, queue.deliveries, 'call.expired', rows)
    return rows
  })
}

/** In-flight calls with no final report by their timeout → FAILED, their slots freed. */
export async function timeOutSilentCalls(sql: Sql, queue: Queues, policy: Pick<DispatchPolicy, 'callTimeoutSeconds'>): Promise<CallRow[]> {
  return sql.begin(async (tx) => {
    const rows = await t.timeOutSilent(tx, policy.callTimeoutSeconds, BATCH)
    await endDials(tx, rows.map((row) => ({ callId: row.id, dial: row.dial, outcome: 'unknown', error: row.last_error })))
    for (const row of rows) await completeJob(tx, queue.calls, row)
    await emitCallEvents(tx, queue.deliveries, 'call.failed', rows)
    if (rows.length) await wakeWorkers(tx, true)
    return rows
  })
}

/** Calls out of requests: held for their final report, or FAILED when every request was refused. */
export async function settleExhaustedCalls(
  sql: Sql,
  queue: Queues,
  policy: Pick<DispatchPolicy, 'maxAttempts' | 'callTimeoutSeconds'>,
): Promise<{ held: number; failed: CallRow[] }> {
  return sql.begin(async (tx) => {
    const { held, failed } = await t.settleExhausted(tx, policy.maxAttempts, policy.callTimeoutSeconds, BATCH)
    await endDials(tx, failed.map((row) => ({ callId: row.id, dial: row.dial, outcome: 'refused', error: row.last_error })))
    for (const row of failed) await completeJob(tx, queue.calls, row)
    await emitCallEvents(tx, queue.deliveries, 'call.failed', failed)
    if (failed.length) await wakeWorkers(tx, true)
    return { held: held.length, failed }
  })
}

/** Failed pg-boss jobs whose call has moved on: under key_strict_fifo they would block their phone for good. */
export async function deleteStrandedJobs(sql: Sql, queue: Queues): Promise<number> {
  return sql.begin(async (tx) => {
    await lockClaimsShared(tx)
    const jobs = await queue.calls.failedJobsWithoutLiveCall(tx, BATCH)
    for (const jobId of jobs) await deleteJob(tx, queue.calls, { job_id: jobId })
    if (jobs.length) await wakeWorkers(tx)
    return jobs.length
  })
}

/** Failed event-delivery jobs: under key_strict_fifo each would hold back its call's events for good. */
export async function reviveFailedDeliveries(sql: Sql, queue: Queues): Promise<number> {
  return sql.begin(async (tx) => {
    const revived = await queue.deliveries.reviveFailed(tx, BATCH)
    if (revived) await wakeDeliveries(tx)
    return revived
  })
}

/**
 * A PENDING call must always have a waiting job, or no worker will ever fetch it. Each sweep
 * checks the next BATCH of PENDING calls (newest first, wrapping around) and gives any without
 * one a new job, due when the call is. Under the shared claim lock, so no claim is halfway
 * through moving one of them.
 */
export async function requeueJobless(sql: Sql, queue: Queues, cursor: { pending?: string | undefined }): Promise<number> {
  return sql.begin(async (tx) => {
    await lockClaimsShared(tx)
    const { orphans, last } = await queue.calls.pendingWithoutLiveJob(tx, cursor.pending, BATCH)
    cursor.pending = last
    for (const orphan of orphans) await requeueCall(tx, queue.calls, { ...orphan, job_id: orphan.job_state ? orphan.job_id : null })
    return orphans.length
  })
}

/**
 * A worker that starts under another calling policy (CALLING_WINDOW, the caps) than the one
 * waiting calls' due times were computed with computes them again, so a wider window or a
 * higher cap lets them go sooner (a narrower one the claim enforces anyway). Returns how many.
 * The policy is recorded as applied by the transaction that reschedules the last calls, so a
 * worker that stops halfway leaves the work to the next one to start.
 */
export async function applyPolicyChange(sql: Sql, queue: Queues, calling: CallingPolicy): Promise<number> {
  const hash = policyHash(calling)
  const { policyHash: before } = await readSettings(sql)
  if (before === hash) return 0
  let moved = 0
  for (let after: string | undefined; ; ) {
    const batch = await sql.begin(async (tx) => {
      // The first policy recorded: every waiting call was computed with it.
      const calls = before === null ? [] : await rescheduleForPolicy(tx, queue, calling, after)
      if (calls.length < BATCH) await recordPolicyHash(tx, hash)
      return calls
    })
    moved += batch.length
    if (batch.length < BATCH) return moved
    after = batch.at(-1)!.id
  }
}

/** The next BATCH of calls waiting for a window or a cap after `after`, due again under `calling`. */
async function rescheduleForPolicy(tx: Tx, queue: Queues, calling: CallingPolicy, after: string | undefined): Promise<CallRow[]> {
  await lockClaimsShared(tx)
  const calls = await t.waitingForPolicy(tx, after, BATCH)
  const now = await t.databaseNow(tx)
  for (const call of calls) {
    const due = await dueTime(tx, calling, call, now)
    if (due) await rescheduleCall(tx, queue.calls, call, due.at, due.waitingFor)
  }
  return calls
}
