import type { PgBoss } from 'pg-boss'
import { BOSS_SCHEMA, onTx } from './boss.ts'
import type { Sql, Tx } from './sql.ts'
import { retryDelayMs } from '../domain/backoff.ts'

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

/** The scope a job's data names (a key it does not carry is null). */
const scopeOf = (data: DeliveryScope): DeliveryScope => ({ endpointId: data.endpointId, callId: data.callId ?? null, batchId: data.batchId ?? null })

export interface DeliveryJob extends DeliveryScope {
  jobId: string
  /** How many times this job was retried before this attempt. */
  retryCount: number
  /** How many retries it may have. */
  retryLimit: number
}

export class DeliveryJobs {
  readonly #boss: PgBoss
  readonly #options: { retryLimit: number; retryDelay: number; retryBackoff: true; retryDelayMax: number; expireInSeconds: number }

  constructor(boss: PgBoss, options: { deliveryRetry?: DeliveryRetry; deliveryTimeoutMs?: number }) {
    this.#boss = boss
    const retry = options.deliveryRetry ?? DEFAULT_DELIVERY_RETRY
    this.#options = {
      retryLimit: retry.limit,
      retryDelay: retry.baseSeconds,
      retryBackoff: true,
      retryDelayMax: retry.maxSeconds,
      expireInSeconds: deliveryExpireSeconds(options.deliveryTimeoutMs ?? 10_000),
    }
  }

  async createQueue(): Promise<void> {
    // Every delivery job carries its own retry settings (enqueue), so the queue's defaults, set
    // by the first process to create it, decide nothing.
    await this.#boss.createQueue(DELIVERIES_QUEUE, { policy: 'key_strict_fifo', ...this.#options })
  }

  /** Delivery jobs for these scopes, in the caller's transaction (the outbox); due now, or at `startAfter`. */
  async enqueue(tx: Tx, scopes: DeliveryScope[], startAfter?: Date): Promise<void> {
    if (scopes.length === 0) return
    await this.#boss.insert(
      DELIVERIES_QUEUE,
      scopes.map((d) => ({
        data: { endpointId: d.endpointId, callId: d.callId, batchId: d.batchId },
        singletonKey: `${d.endpointId}:${d.callId ?? `batch:${d.batchId}`}`,
        group: { id: d.endpointId },
        ...this.#options,
        ...(startAfter ? { startAfter } : {}),
      })),
      { db: onTx(tx) },
    )
  }

  /**
   * Up to `limit` delivery jobs due, at most `perEndpoint` in flight per endpoint. pg-boss counts
   * a group's active jobs and then claims, so two fetches at once could both see room; the fetches
   * take turns under an advisory lock, which makes the count exact across every worker.
   */
  async fetch(sql: Sql, limit: number, perEndpoint: number): Promise<DeliveryJob[]> {
    const jobs = await sql.begin(async (tx) => {
      await tx`SELECT pg_advisory_xact_lock(${DELIVERY_FETCH_LOCK})`
      return this.#boss.fetch<DeliveryScope>(DELIVERIES_QUEUE, { batchSize: limit, groupConcurrency: perEndpoint, includeMetadata: true, db: onTx(tx) })
    })
    return jobs.map((job) => ({ jobId: job.id, ...scopeOf(job.data), retryCount: job.retryCount, retryLimit: job.retryLimit }))
  }

  /** Settled: fenced to the attempt that was fetched, so a late settle of an expired attempt changes nothing. */
  async complete(tx: Tx, job: DeliveryJob): Promise<void> {
    await this.#boss.complete(DELIVERIES_QUEUE, { id: job.jobId, retryCount: job.retryCount }, null, { db: onTx(tx) })
  }

  /** Fails an attempt so pg-boss retries it after its backoff; returns when the next try is due. */
  async retry(tx: Tx, job: DeliveryJob, error: string): Promise<Date | null> {
    await this.#boss.fail(DELIVERIES_QUEUE, { id: job.jobId, retryCount: job.retryCount }, { error }, { db: onTx(tx) })
    const [row] = await tx<{ start_after: Date }[]>`
      SELECT start_after FROM ${tx(BOSS_SCHEMA)}.job WHERE name = ${DELIVERIES_QUEUE} AND id = ${job.jobId} AND state = 'retry'`
    return row?.start_after ?? null
  }

  /**
   * Failed delivery jobs, handed on. pg-boss fails a job for good when it expires on its last
   * retry (its worker died, or lost the database, mid-send), and under key_strict_fifo a failed
   * job holds back every later job of its scope. Each is deleted and its scope goes on in a fresh
   * job; its events keep their own tries (event_deliveries), so none is tried past its limit.
   * This reads pg-boss's job table directly; pg-boss offers no query for it.
   */
  async reviveFailed(tx: Tx, limit: number): Promise<number> {
    const rows = await tx<{ id: string; data: DeliveryScope }[]>`
      SELECT id, data FROM ${tx(BOSS_SCHEMA)}.job
      WHERE name = ${DELIVERIES_QUEUE} AND state = 'failed'
      LIMIT ${limit} FOR UPDATE SKIP LOCKED`
    if (rows.length === 0) return 0
    await this.#boss.deleteJob(DELIVERIES_QUEUE, rows.map((r) => r.id), { db: onTx(tx) })
    await this.enqueue(tx, rows.map(({ data }) => scopeOf(data)))
    return rows.length
  }

  /**
   * Like `retry`, for a job with no retries left for pg-boss to run while its event has some:
   * the job's retries went to earlier events of its scope (one job carries them all). The job is
   * completed and the scope goes on in a fresh one, due after the backoff of the event's `tries`.
   */
  async retryInFreshJob(tx: Tx, job: DeliveryJob, tries: number): Promise<Date> {
    const delayMs = retryDelayMs(tries, { baseSeconds: this.#options.retryDelay, maxSeconds: this.#options.retryDelayMax })
    const [row] = await tx<{ at: Date }[]>`SELECT now() + make_interval(secs => ${delayMs}::int / 1000.0) AS at`
    await this.enqueue(tx, [job], row!.at)
    await this.complete(tx, job)
    return row!.at
  }

}
