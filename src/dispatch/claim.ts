import { requeueCall } from '../calls/jobs.ts'
import type { CallRow } from '../calls/model.ts'
import { countInFlight, lockCall } from '../db/calls.ts'
import { lockClaims } from '../db/locks.ts'
import type { Sql, Tx } from '../db/sql.ts'
import * as t from '../db/transitions.ts'
import type { CallQueue } from '../db/queue.ts'

// Taking work: new calls under the semaphore, and the next request of calls already in flight.
// Whatever is taken here is held by the taking worker for `leaseMs`, long enough for one
// provider request to end (PROVIDER_TIMEOUT_MS) plus a margin; see the README's "Leases".

export interface DispatchPolicy {
  maxConcurrentCalls: number
  /** Dial requests per call, the first included (the spec's MAX_ATTEMPTS). */
  maxAttempts: number
  retryBaseSeconds: number
  retryMaxSeconds: number
  /** An in-flight call with no final word this long after its dial (or its last unanswered request) is FAILED. */
  callTimeoutSeconds: number
  /** How long a worker holds a call while one request is under way. */
  leaseMs: number
  /** Ask the provider about a dialed call this long after the dial and every this long after; null: never ask. */
  reconcileAfterSeconds: number | null
}

/** Time a worker may lose between taking a lease and sending; the lease covers the request plus this. */
export const LEASE_MARGIN_MS = 5_000

/**
 * The semaphore: under the exclusive claim lock, count the calls in flight everywhere and
 * claim at most the free slots (and at most `limit`) in this one transaction. READ COMMITTED
 * is stated, not inherited from the server's default: each statement after the lock takes a
 * fresh snapshot, so the count sees every claim committed while this one waited for the lock.
 * Under REPEATABLE READ the snapshot would predate the wait, and the count could come up short.
 */
export async function claimCalls(
  sql: Sql,
  queue: CallQueue,
  policy: DispatchPolicy,
  workerId: number,
  limit: number,
): Promise<{ claimed: CallRow[]; exhausted: boolean }> {
  return sql.begin('isolation level read committed', async (tx) => {
    await lockClaims(tx)
    const free = Math.min(limit, policy.maxConcurrentCalls - (await countInFlight(tx)))
    if (free <= 0) return { claimed: [], exhausted: true }
    const jobs = await queue.fetch(tx, free)
    const claimed = await t.claimPending(tx, jobs, workerId, policy.leaseMs)
    if (claimed.length < jobs.length) {
      const taken = new Set(claimed.map((c) => c.id))
      await settleUnclaimable(tx, queue, jobs.filter((j) => !taken.has(j.callId)))
    }
    // More may be ready only if the batch came back full and left slots unused.
    return { claimed, exhausted: jobs.length < free || claimed.length === jobs.length }
  })
}

/**
 * Jobs fetched whose call could not be claimed. A job that no longer carries its call, or
 * whose call has ended, is completed (fetching made it active, which blocks its phone). A call
 * that has aged out is expired here, never dialed. A call that is PENDING but blocked (its
 * phone is in flight: only possible if the two drifted apart) gets a fresh job a second from
 * now, so it is neither lost nor dialed now.
 */
async function settleUnclaimable(tx: Tx, queue: CallQueue, jobs: Array<{ callId: string; jobId: string }>) {
  for (const job of jobs) {
    const call = await lockCall(tx, job.callId)
    if (!call || call.status !== 'PENDING' || call.job_id !== job.jobId) {
      await queue.complete(tx, job.jobId)
      continue
    }
    if (await t.expirePending(tx, call.id)) {
      await queue.delete(tx, job.jobId)
      continue
    }
    await requeueCall(tx, queue, call, 1)
  }
}

/** In-flight calls whose next request under the same key is due (backoff over, or a lease lapsed). */
export async function takeResends(sql: Sql, policy: DispatchPolicy, workerId: number, limit: number): Promise<t.DueResend[]> {
  return sql.begin((tx) => t.takeDueResends(tx, workerId, policy.leaseMs, policy.maxAttempts, limit))
}
