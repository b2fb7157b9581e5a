import type { PgBoss } from 'pg-boss'
import { MAX_WAIT_SECONDS } from '../domain/call.ts'
import { BOSS_SCHEMA, onTx } from './boss.ts'
import type { Tx } from './sql.ts'

// The pg-boss side of a call. Each waiting or in-flight call has exactly one job on the
// "calls" queue, keyed by its phone number. The queue's key_strict_fifo policy makes fetch()
// return at most one job per phone and skip every phone that already has an active job, checked
// live in the fetch query (the "singleton" policy relies on a cache that can be stale, so it
// could let two jobs of one phone go active at once). Every pg-boss call here runs inside the
// caller's transaction; src/services/calls/jobs.ts pairs them with the change to the call row.

export const CALLS_QUEUE = 'calls'

// A job stays active for as long as its call is in flight, waiting for the provider's final
// callback. pg-boss would retry (re-dial!) a job that outlives expireInSeconds, so the expiry is
// pg-boss's maximum and our own call timeout (CALL_TIMEOUT_SECONDS, at most 20 h) normally
// completes the job first; retryLimit 0 means pg-boss never re-runs a job by itself. A job
// that does expire is failed, and the sweep deletes it once its call has ended.
const JOB_EXPIRE_SECONDS = 24 * 3600

// pg-boss deletes a queued job once `start_after + retention` passes, and a call without its
// job is never dialed; so calls wait at most MAX_WAIT_SECONDS and queued jobs are kept a day more.
const JOB_RETENTION_SECONDS = MAX_WAIT_SECONDS + 24 * 3600

export interface CallJob {
  jobId: string
  callId: string
}

export class CallJobs {
  readonly #boss: PgBoss
  constructor(boss: PgBoss) {
    this.#boss = boss
  }

  async createQueue(): Promise<void> {
    const options = {
      retryLimit: 0,
      expireInSeconds: JOB_EXPIRE_SECONDS,
      retentionSeconds: JOB_RETENTION_SECONDS,
      deleteAfterSeconds: 7 * 24 * 3600,
    }
    await this.#boss.createQueue(CALLS_QUEUE, { policy: 'key_strict_fifo', ...options })
    // createQueue leaves an existing queue as it is; a queue made by an older version had a
    // shorter retention. Jobs already queued keep the keep_until they were given.
    await this.#boss.updateQueue(CALLS_QUEUE, options)
  }

  /** Jobs for new calls, many at once (one statement); their ids are given. */
  async enqueueMany(tx: Tx, calls: Array<{ id: string; jobId: string; phone: string; startAfter: Date | null }>): Promise<void> {
    if (calls.length === 0) return
    await this.#boss.insert(
      CALLS_QUEUE,
      calls.map((c) => ({ id: c.jobId, data: { callId: c.id }, singletonKey: c.phone, ...(c.startAfter ? { startAfter: c.startAfter } : {}) })),
      { db: onTx(tx) },
    )
  }

  /** The call's job, in the caller's transaction. */
  async enqueue(tx: Tx, call: { id: string; phone: string; startAfter?: Date | null }): Promise<string> {
    const jobId = await this.#boss.send(CALLS_QUEUE, { callId: call.id }, {
      singletonKey: call.phone,
      ...(call.startAfter ? { startAfter: call.startAfter } : {}),
      db: onTx(tx),
    })
    if (!jobId) throw new Error(`pg-boss refused the job for call ${call.id}`)
    return jobId
  }

  /** Up to `limit` ready jobs, at most one per phone, none for a phone with a job in flight. */
  async fetch(tx: Tx, limit: number): Promise<CallJob[]> {
    const jobs = await this.#boss.fetch<{ callId: string }>(CALLS_QUEUE, { batchSize: limit, db: onTx(tx) })
    return jobs.map((job) => ({ jobId: job.id, callId: job.data.callId }))
  }

  /** Marks the job done: the call it carried is final (or was never this job's any more). */
  async complete(tx: Tx, jobId: string): Promise<void> {
    await this.#boss.complete(CALLS_QUEUE, jobId, null, { db: onTx(tx), includeQueued: true })
  }

  /**
   * Failed jobs that no longer carry a live call. A job only fails if pg-boss expired it (every
   * worker down for longer than JOB_EXPIRE_SECONDS), and under key_strict_fifo a failed job
   * blocks its phone for good, so the sweep removes these once the call has moved on.
   * This reads pg-boss's job table directly; pg-boss offers no query for it (pinned to 12.35).
   */
  async failedJobsWithoutLiveCall(tx: Tx, limit: number): Promise<string[]> {
    const rows = await tx<{ id: string }[]>`
      SELECT j.id FROM ${tx(BOSS_SCHEMA)}.job j
      LEFT JOIN calls c ON c.job_id = j.id AND c.status IN ('PENDING', 'IN_PROGRESS')
      WHERE j.name = ${CALLS_QUEUE} AND j.state = 'failed' AND c.id IS NULL
      LIMIT ${limit}`
    return rows.map((r) => r.id)
  }

  /**
   * PENDING calls whose job is gone or no longer waiting (deleted by hand, or by pg-boss's
   * retention before waits were bounded): without a job a call is never dialed. Walks the
   * PENDING calls in keyset order from `after`, `limit` at a time, so each sweep stays small.
   */
  async pendingWithoutLiveJob(
    tx: Tx,
    after: string | undefined,
    limit: number,
  ): Promise<{ orphans: Array<{ id: string; phone: string; job_id: string | null; job_state: string | null }>; last?: string }> {
    const rows = await tx<Array<{ id: string; phone: string; created_at: Date; job_id: string | null; job_state: string | null }>>`
      SELECT c.id, c.phone, c.created_at, c.job_id, j.state AS job_state
      FROM (SELECT id, phone, created_at, job_id FROM calls
            WHERE status = 'PENDING'
              -- Compared in SQL: created_at has microseconds, a JS Date only milliseconds.
              ${after ? tx`AND (created_at, id) < (SELECT created_at, id FROM calls WHERE id = ${after})` : tx``}
            ORDER BY created_at DESC, id DESC
            LIMIT ${limit}) c
      LEFT JOIN ${tx(BOSS_SCHEMA)}.job j ON j.name = ${CALLS_QUEUE} AND j.id = c.job_id
      ORDER BY c.created_at DESC, c.id DESC`
    const end = rows.at(-1)
    return {
      orphans: rows.filter((r) => r.job_state !== 'created' && r.job_state !== 'retry'),
      ...(rows.length === limit && end ? { last: end.id } : {}),
    }
  }

  async delete(tx: Tx, jobId: string): Promise<void> {
    await this.#boss.deleteJob(CALLS_QUEUE, jobId, { db: onTx(tx) })
  }
}
