import type { CallRow } from '../calls/model.ts'
import { lockClaims, lockClaimsShared, wakeWorkers } from '../db/locks.ts'
import type { Sql, Tx } from '../db/sql.ts'
import * as t from '../db/transitions.ts'
import { countInFlight, lockCall } from '../db/calls.ts'
import { retryDelayMs } from './backoff.ts'
import type { DialResult } from './provider.ts'
import type { CallQueue } from './queue.ts'

// Claims and everything that follows a dial: each function is one transaction that changes
// the call and its pg-boss job together, and wakes waiting workers when a slot frees.

export interface DispatchPolicy {
  maxConcurrentCalls: number
  maxAttempts: number
  retryBaseSeconds: number
  retryMaxSeconds: number
  callTimeoutSeconds: number
}

/**
 * The semaphore: under the exclusive claim lock, count the calls in flight everywhere and
 * claim at most the free slots (and at most `limit`) in this one transaction.
 */
export async function claimCalls(
  sql: Sql,
  queue: CallQueue,
  policy: DispatchPolicy,
  workerId: number,
  limit: number,
): Promise<{ claimed: CallRow[]; exhausted: boolean }> {
  return sql.begin(async (tx) => {
    await lockClaims(tx)
    const free = Math.min(limit, policy.maxConcurrentCalls - (await countInFlight(tx)))
    if (free <= 0) return { claimed: [], exhausted: true }
    const jobs = await queue.fetch(tx, free)
    const claimed = await t.claimPending(tx, jobs, workerId)
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
 * whose call has ended, is settled. A call that has aged out is expired here, never dialed.
 * A call that is PENDING but blocked (its phone is in flight: only possible if the two drifted
 * apart) gets a fresh job, so it is neither lost nor dialed now.
 */
async function settleUnclaimable(tx: Tx, queue: CallQueue, jobs: Array<{ callId: string; jobId: string }>) {
  for (const job of jobs) {
    await queue.settle(tx, job.jobId)
    const call = await lockCall(tx, job.callId)
    if (!call || call.status !== 'PENDING' || call.job_id !== job.jobId) continue
    if (call.expires_at && call.expires_at <= new Date()) {
      await t.expirePending(tx, call.id)
      continue
    }
    const retryAt = new Date(Date.now() + 1000)
    const jobId = await queue.enqueue(tx, { id: call.id, phone: call.phone, startAfter: retryAt })
    await t.requeuePending(tx, call.id, jobId, retryAt)
  }
}

export type Outcome = 'dialed' | 'retry' | 'failed' | 'stale'

/** Records what the provider said about one attempt. */
export async function recordDialResult(
  sql: Sql,
  queue: CallQueue,
  policy: DispatchPolicy,
  call: CallRow,
  result: DialResult,
): Promise<{ outcome: Outcome; call?: CallRow | undefined }> {
  if (result.kind === 'accepted') {
    return sql.begin(async (tx) => {
      const row = await t.markDialed(tx, call.id, call.attempts, result.providerCallId)
      if (row) return { outcome: 'dialed' as const, call: row }
      // The final callback got here first (or the attempt was taken back): keep the id.
      await t.recordLateProviderId(tx, call.id, result.providerCallId)
      return { outcome: 'stale' as const }
    })
  }
  return sql.begin(async (tx) => {
    if (result.kind === 'retryable' && call.attempts < policy.maxAttempts) {
      const backoff = retryDelayMs(call.attempts, {
        baseSeconds: policy.retryBaseSeconds,
        maxSeconds: policy.retryMaxSeconds,
      })
      const nextAttemptAt = new Date(Date.now() + Math.max(backoff, result.retryAfterMs ?? 0))
      await lockClaimsShared(tx)
      const jobId = await queue.enqueue(tx, { id: call.id, phone: call.phone, startAfter: nextAttemptAt })
      const row = await t.scheduleRetry(tx, call.id, call.attempts, { error: result.error, nextAttemptAt, jobId })
      if (!row) {
        await queue.remove(tx, jobId)
        return { outcome: 'stale' as const }
      }
      if (call.job_id) await queue.settle(tx, call.job_id)
      await wakeWorkers(tx)
      return { outcome: 'retry' as const, call: row }
    }
    const error =
      result.kind === 'retryable' ? `${result.error} (attempt ${call.attempts} of ${policy.maxAttempts}; no attempts left)` : result.error
    const row = await t.failAttempt(tx, call.id, call.attempts, error)
    if (!row) return { outcome: 'stale' as const }
    if (call.job_id) await queue.settle(tx, call.job_id)
    await wakeWorkers(tx)
    return { outcome: 'failed' as const, call: row }
  })
}

/** The periodic safety sweeps. Orphans come back adopted by `workerId`, for it to dial. */
export async function sweep(
  sql: Sql,
  queue: CallQueue,
  policy: DispatchPolicy,
  workerId: number,
): Promise<{ expired: number; timedOut: number; unblocked: number; adopted: CallRow[] }> {
  const batch = 500
  const expired = await sql.begin(async (tx) => {
    await lockClaimsShared(tx)
    const rows = await t.expireDue(tx, batch)
    for (const row of rows) if (row.job_id) await queue.remove(tx, row.job_id)
    return rows.length
  })
  const timedOut = await sql.begin(async (tx) => {
    const rows = await t.timeOutSilent(tx, policy.callTimeoutSeconds, batch)
    for (const row of rows) if (row.job_id) await queue.settle(tx, row.job_id)
    if (rows.length) await wakeWorkers(tx)
    return rows.length
  })
  const unblocked = await sql.begin(async (tx) => {
    await lockClaimsShared(tx)
    const jobs = await queue.failedJobsWithoutLiveCall(tx, batch)
    for (const jobId of jobs) await queue.remove(tx, jobId)
    if (jobs.length) await wakeWorkers(tx)
    return jobs.length
  })
  const adopted = await sql.begin((tx) => t.adoptOrphans(tx, workerId, policy.maxConcurrentCalls))
  return { expired, timedOut, unblocked, adopted }
}
