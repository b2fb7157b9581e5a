import { PgBoss } from 'pg-boss'
import type { Db as IDatabase } from 'pg-boss'
import { MAX_WAIT_SECONDS } from '../domain/call.ts'
import type { Logger } from '../platform/log.ts'
import type { Sql, Tx } from './sql.ts'

// The pg-boss side of a call. Each waiting or in-flight call has exactly one job on the
// "calls" queue, keyed by its phone number. The queue's key_strict_fifo policy makes fetch()
// return at most one job per phone and skip every phone that already has an active job, checked
// live in the fetch query (the "singleton" policy relies on a cache that can be stale, so it
// could let two jobs of one phone go active at once). Every pg-boss call here runs inside the
// caller's transaction; src/services/calls/jobs.ts pairs them with the change to the call row.

export const CALLS_QUEUE = 'calls'
export const BOSS_SCHEMA = 'pgboss'

// Event deliveries. A job names an endpoint and an event's scope (its call, or its batch); it
// sends every undelivered event of that scope to that endpoint, oldest first (see
// src/services/events/deliver.ts). Jobs are keyed by endpoint and scope, so key_strict_fifo never runs two
// of one scope at once, and grouped by endpoint, so only a few are in flight per endpoint. A
// failed attempt is retried by pg-boss with exponential backoff and jitter (the n-th retry
// after base × 2^n × a random 0.5 to 1, at most max): by default 10 s doubling up to 2 h, 20
// times, about a day. A job sends at most EVENTS_PER_JOB events, each within EVENT_TIMEOUT_MS;
// one that runs longer (its worker died) expires and is retried, and until then it holds back
// its call's later events.
export const DELIVERIES_QUEUE = 'event-deliveries'
export interface DeliveryRetry {
  limit: number
  baseSeconds: number
  maxSeconds: number
}
export const DEFAULT_DELIVERY_RETRY: DeliveryRetry = { limit: 20, baseSeconds: 10, maxSeconds: 7200 }
export const EVENTS_PER_JOB = 5
const deliveryExpireSeconds = (timeoutMs: number) => Math.ceil((EVENTS_PER_JOB * timeoutMs) / 1000) + 15
/** Serializes delivery fetches, so the per-endpoint limit holds across every worker. */
const DELIVERY_FETCH_LOCK = 7_261_003

/** What one delivery job sends: the undelivered events of one call (or batch) to one endpoint. */
export interface DeliveryScope {
  endpointId: string
  callId: string | null
  batchId: string | null
}

export interface DeliveryJob extends DeliveryScope {
  jobId: string
  /** How many times this job was retried before this attempt. */
  retryCount: number
  /** How many retries it may have. */
  retryLimit: number
}

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

/**
 * Runs pg-boss statements on a postgres.js transaction. Prepared, as our own statements are:
 * postgres.js sends an unprepared statement with parameters in two round trips (it asks for the
 * parameters' types first), and holds back the statements queued behind it meanwhile. pg-boss's
 * statements are a few fixed texts per queue, so each connection prepares each once.
 */
function onTx(tx: Tx): IDatabase {
  return {
    async executeSql(text, values) {
      const rows = await tx.unsafe(text, (values ?? []) as never[], { prepare: true })
      return { rows: [...rows] }
    },
  }
}

export class CallQueue {
  readonly boss: PgBoss
  readonly #log: Logger
  #stopping = false
  readonly #deliveryOptions: { retryLimit: number; retryDelay: number; retryBackoff: true; retryDelayMax: number; expireInSeconds: number }

  /**
   * `deliveryRetry` and `deliveryTimeoutMs`: how the event deliveries this process writes are
   * retried and how long one attempt may take (EVENT_RETRY_*, EVENT_TIMEOUT_MS).
   */
  constructor(databaseUrl: string, log: Logger, options: { supervise: boolean; deliveryRetry?: DeliveryRetry; deliveryTimeoutMs?: number }) {
    this.#log = log
    const retry = options.deliveryRetry ?? DEFAULT_DELIVERY_RETRY
    this.#deliveryOptions = {
      retryLimit: retry.limit,
      retryDelay: retry.baseSeconds,
      retryBackoff: true,
      retryDelayMax: retry.maxSeconds,
      expireInSeconds: deliveryExpireSeconds(options.deliveryTimeoutMs ?? 10_000),
    }
    this.boss = new PgBoss({
      connectionString: databaseUrl,
      schema: BOSS_SCHEMA,
      application_name: 'call-orchestrator/pg-boss',
      max: 3,
      supervise: options.supervise,
      // How soon an abandoned delivery job (its worker died) is seen expired and retried.
      superviseIntervalSeconds: 10,
      schedule: false,
      migrate: true,
    })
    this.boss.on('error', (err) => {
      // While we stop, the database may be stopping too (an embedded one is stopped right after
      // us): its sessions ending is expected then, not an error.
      const sessionEnded = ['57P01', '57P02', '57P03'].includes((err as { code?: string }).code ?? '')
      this.#log[this.#stopping && sessionEnded ? 'debug' : 'error']('pg-boss error', { err })
    })
  }

  /** Installs or upgrades pg-boss's schema and creates the queue (both idempotent). */
  async start(): Promise<void> {
    await this.boss.start()
    const options = {
      retryLimit: 0,
      expireInSeconds: JOB_EXPIRE_SECONDS,
      retentionSeconds: JOB_RETENTION_SECONDS,
      deleteAfterSeconds: 7 * 24 * 3600,
    }
    await this.boss.createQueue(CALLS_QUEUE, { policy: 'key_strict_fifo', ...options })
    // createQueue leaves an existing queue as it is; a queue made by an older version had a
    // shorter retention. Jobs already queued keep the keep_until they were given.
    await this.boss.updateQueue(CALLS_QUEUE, options)
    // Every delivery job carries its own retry settings (enqueueDeliveries), so the queue's
    // defaults, set by the first process to create it, decide nothing.
    await this.boss.createQueue(DELIVERIES_QUEUE, { policy: 'key_strict_fifo', ...this.#deliveryOptions })
  }

  /** Jobs for new calls, many at once (one statement); their ids are given. */
  async enqueueMany(tx: Tx, calls: Array<{ id: string; jobId: string; phone: string; startAfter: Date | null }>): Promise<void> {
    if (calls.length === 0) return
    await this.boss.insert(
      CALLS_QUEUE,
      calls.map((c) => ({ id: c.jobId, data: { callId: c.id }, singletonKey: c.phone, ...(c.startAfter ? { startAfter: c.startAfter } : {}) })),
      { db: onTx(tx) },
    )
  }

  /** Delivery jobs for these scopes, in the caller's transaction (the outbox). */
  async enqueueDeliveries(tx: Tx, scopes: DeliveryScope[]): Promise<void> {
    if (scopes.length === 0) return
    await this.boss.insert(
      DELIVERIES_QUEUE,
      scopes.map((d) => ({
        data: { endpointId: d.endpointId, callId: d.callId, batchId: d.batchId },
        singletonKey: `${d.endpointId}:${d.callId ?? `batch:${d.batchId}`}`,
        group: { id: d.endpointId },
        ...this.#deliveryOptions,
      })),
      { db: onTx(tx) },
    )
  }

  /**
   * Up to `limit` delivery jobs due, at most `perEndpoint` in flight per endpoint. pg-boss counts
   * a group's active jobs and then claims, so two fetches at once could both see room; the fetches
   * take turns under an advisory lock, which makes the count exact across every worker.
   */
  async fetchDeliveries(sql: Sql, limit: number, perEndpoint: number): Promise<DeliveryJob[]> {
    const jobs = await sql.begin(async (tx) => {
      await tx`SELECT pg_advisory_xact_lock(${DELIVERY_FETCH_LOCK})`
      return this.boss.fetch<DeliveryScope>(DELIVERIES_QUEUE, { batchSize: limit, groupConcurrency: perEndpoint, includeMetadata: true, db: onTx(tx) })
    })
    return jobs.map((job) => ({
      jobId: job.id,
      endpointId: job.data.endpointId,
      callId: job.data.callId ?? null,
      batchId: job.data.batchId ?? null,
      retryCount: job.retryCount,
      retryLimit: job.retryLimit,
    }))
  }

  /** Settled: fenced to the attempt that was fetched, so a late settle of an expired attempt changes nothing. */
  async completeDelivery(tx: Tx, job: DeliveryJob): Promise<void> {
    await this.boss.complete(DELIVERIES_QUEUE, { id: job.jobId, retryCount: job.retryCount }, null, { db: onTx(tx) })
  }

  /** Fails an attempt so pg-boss retries it after its backoff; returns when the next try is due. */
  async retryDelivery(tx: Tx, job: DeliveryJob, error: string): Promise<Date | null> {
    await this.boss.fail(DELIVERIES_QUEUE, { id: job.jobId, retryCount: job.retryCount }, { error }, { db: onTx(tx) })
    const [row] = await tx<{ start_after: Date }[]>`
      SELECT start_after FROM ${tx(BOSS_SCHEMA)}.job WHERE name = ${DELIVERIES_QUEUE} AND id = ${job.jobId} AND state = 'retry'`
    return row?.start_after ?? null
  }

  async stop(): Promise<void> {
    this.#stopping = true
    await this.boss.stop({ graceful: true, close: true, timeout: 5_000 })
  }

  /** The call's job, in the caller's transaction. */
  async enqueue(tx: Tx, call: { id: string; phone: string; startAfter?: Date | null }): Promise<string> {
    const jobId = await this.boss.send(CALLS_QUEUE, { callId: call.id }, {
      singletonKey: call.phone,
      ...(call.startAfter ? { startAfter: call.startAfter } : {}),
      db: onTx(tx),
    })
    if (!jobId) throw new Error(`pg-boss refused the job for call ${call.id}`)
    return jobId
  }

  /** Up to `limit` ready jobs, at most one per phone, none for a phone with a job in flight. */
  async fetch(tx: Tx, limit: number): Promise<CallJob[]> {
    const jobs = await this.boss.fetch<{ callId: string }>(CALLS_QUEUE, { batchSize: limit, db: onTx(tx) })
    return jobs.map((job) => ({ jobId: job.id, callId: job.data.callId }))
  }

  /** Marks the job done: the call it carried is final (or was never this job's any more). */
  async complete(tx: Tx, jobId: string): Promise<void> {
    await this.boss.complete(CALLS_QUEUE, jobId, null, { db: onTx(tx), includeQueued: true })
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
    await this.boss.deleteJob(CALLS_QUEUE, jobId, { db: onTx(tx) })
  }
}
