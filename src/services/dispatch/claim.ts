import { completeJob, deleteJob, requeueCall, rescheduleCall } from '../calls/jobs.ts'
import type { CallRow } from '../../domain/call.ts'
import { NO_POLICY, policyRestricts, type CallingPolicy } from '../../domain/policy.ts'
import { dueTime } from '../calls/due.ts'
import { countInFlight, lockCall, lockCalls } from '../../store/calls.ts'
import { lockClaims } from '../../store/locks.ts'
import { emitCallEvents } from '../events/outbox.ts'
import { readSettings } from '../../store/settings.ts'
import { suppressedAmongCalls, suppressPendingCalls } from '../../store/suppressions.ts'
import type { Sql, Tx } from '../../store/sql.ts'
import * as t from '../../store/transitions.ts'
import type { Queues } from '../../store/queues.ts'

// Taking work: new calls under the semaphore, and the next request of calls already in flight.
// Whatever is taken here is held by the taking worker for `leaseMs`, long enough for one
// provider request to end (PROVIDER_TIMEOUT_MS) plus a margin; see docs/dispatch.md.

export interface DispatchPolicy {
  maxConcurrentCalls: number
  /** Requests per dial, the first included (MAX_ATTEMPTS). */
  maxAttempts: number
  retryBaseSeconds: number
  retryMaxSeconds: number
  /** An in-flight call with no final report this long after its dial (or its last unanswered request) is FAILED. */
  callTimeoutSeconds: number
  /** How long a worker holds a call while one request is under way. */
  leaseMs: number
  /** Ask the provider about a dialed call this long after the dial and every this long after; null: never ask. */
  reconcileAfterSeconds: number | null
  /** Windows, caps and outcome retries; none when absent. */
  calling?: CallingPolicy | undefined
  /** How long callbacks and sent events are kept (seconds); kept for ever when absent. */
  retention?: { callbackSeconds: number; eventSeconds: number } | undefined
}

/** Time a worker may lose between taking a lease and sending; the lease covers the request plus this. */
export const LEASE_MARGIN_MS = 5_000

/**
 * The semaphore: under the exclusive claim lock, read the operators' settings (paused, the
 * limit), count the calls in flight everywhere and claim at most the free slots (and at most
 * `limit`) in this one transaction, after the calling policy has had its say. READ COMMITTED
 * is stated, not inherited from the server's default: each statement after the lock takes a
 * fresh snapshot, so the count sees every claim committed while this one waited for the lock.
 * Under REPEATABLE READ the snapshot would predate the wait, and the count could come up short.
 */
export async function claimCalls(
  sql: Sql,
  queue: Queues,
  policy: DispatchPolicy,
  workerId: number,
  limit: number,
): Promise<{ claimed: CallRow[]; exhausted: boolean; ended: Ended; nextDueMs: number | null }> {
  const ended: Ended = { suppressed: [], expired: [] }
  // Most wake-ups find every slot taken (every worker hears each freed slot, one fills it):
  // those end here, one read, no lock, no transaction.
  const hint = await t.claimHint(sql)
  const none = { claimed: [], exhausted: true, ended, nextDueMs: hint.nextDueMs }
  if (hint.paused || hint.inFlight >= (hint.maxConcurrentCalls ?? policy.maxConcurrentCalls)) return none
  return sql.begin('isolation level read committed', async (tx) => {
    // The lock first, then the reads it guards, each with a snapshot taken once it is held.
    await lockClaims(tx)
    const settings = await readSettings(tx)
    const inFlight = await countInFlight(tx)
    if (settings.paused) return none
    const max = settings.maxConcurrentCalls ?? policy.maxConcurrentCalls
    const free = Math.min(limit, max - inFlight)
    if (free <= 0) return none
    const jobs = await queue.calls.fetch(tx, free)
    const allowed = await admit(tx, queue, policy.calling ?? NO_POLICY, jobs, ended)
    const claimed = await t.claimPending(tx, allowed, workerId, policy.leaseMs)
    if (claimed.length < allowed.length) {
      const taken = new Set(claimed.map((c) => c.id))
      await settleUnclaimable(tx, queue, allowed.filter((j) => !taken.has(j.callId)), ended)
    }
    // When the soonest waiting call is due, read after the claim (its leases count).
    const nextDueMs = await t.msUntilNextDue(tx)
    // More may be ready only if the batch came back full and left slots unused.
    return { claimed, exhausted: jobs.length < free || claimed.length === jobs.length, ended, nextDueMs }
  })
}

/** Calls a claim ended instead of dialing them. */
export interface Ended {
  suppressed: CallRow[]
  expired: CallRow[]
}

/**
 * The fetched jobs whose calls may be dialed now. The rest, decided here in the claim's own
 * transaction so that no number of workers can race past them: a number on the do-not-call
 * list ends its PENDING calls SUPPRESSED; a call before its notBefore, outside its calling
 * window or over its phone's caps gets a job due when it may go (it waits, it does not fail).
 * Stale jobs are left for claimPending and settleUnclaimable to sort out.
 */
async function admit(tx: Tx, queue: Queues, calling: CallingPolicy, jobs: Array<{ callId: string; jobId: string }>, ended: Ended) {
  if (jobs.length === 0) return jobs
  // The claim lock keeps the list from changing meanwhile.
  const ids = jobs.map((j) => j.callId)
  const locked = await lockCalls(tx, ids)
  const suppressed = await suppressedAmongCalls(tx, ids)
  const now = await t.databaseNow(tx)
  const calls = new Map(locked.map((c) => [c.id, c]))
  const allowed: typeof jobs = []
  for (const job of jobs) {
    const call = calls.get(job.callId)
    if (!call || call.status !== 'PENDING' || call.job_id !== job.jobId) {
      allowed.push(job) // stale: settleUnclaimable completes its job
      continue
    }
    if (suppressed.has(call.phone)) {
      const rows = await suppressPendingCalls(tx, [call.phone])
      for (const row of rows) await deleteJob(tx, queue.calls, row)
      await emitCallEvents(tx, queue.deliveries, 'call.suppressed', rows)
      ended.suppressed.push(...rows)
      continue
    }
    if (policyRestricts(calling, call)) {
      const due = await dueTime(tx, calling, call, now)
      // A window that never opens in every zone of the number (the policy changed since the call
      // was made): look again in a day; its expiry ends it if that comes first.
      const at = due?.at ?? new Date(now.getTime() + 86_400_000)
      if (at.getTime() > now.getTime()) {
        await rescheduleCall(tx, queue.calls, call, at, due?.waitingFor ?? 'calling_window')
        continue
      }
    }
    allowed.push(job)
  }
  return allowed
}

/**
 * Jobs fetched whose call could not be claimed. A job that no longer carries its call, or
 * whose call has ended, is completed (fetching made it active, which blocks its phone). A call
 * that has aged out is expired here, never dialed. A call that is PENDING but blocked (its
 * phone is in flight: only possible if the two drifted apart) gets a fresh job a second from
 * now, so it is neither lost nor dialed now.
 */
async function settleUnclaimable(tx: Tx, queue: Queues, jobs: Array<{ callId: string; jobId: string }>, ended: Ended) {
  for (const job of jobs) {
    const call = await lockCall(tx, job.callId)
    if (!call || call.status !== 'PENDING' || call.job_id !== job.jobId) {
      await completeJob(tx, queue.calls, { job_id: job.jobId })
      continue
    }
    const expired = await t.expirePending(tx, call.id)
    if (expired) {
      await deleteJob(tx, queue.calls, { job_id: job.jobId })
      await emitCallEvents(tx, queue.deliveries, 'call.expired', [expired])
      ended.expired.push(expired)
      continue
    }
    await requeueCall(tx, queue.calls, call, 1)
  }
}

/** In-flight calls whose next request under the same key is due (backoff over, or a lease lapsed). */
export async function takeResends(sql: Sql, policy: DispatchPolicy, workerId: number, limit: number): Promise<t.DueResend[]> {
  return t.takeDueResends(sql, workerId, policy.leaseMs, policy.maxAttempts, limit)
}
