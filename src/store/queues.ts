import { PgBoss } from 'pg-boss'
import { throttled, type Logger } from '../platform/log.ts'
import { isDatabaseUnavailable } from './sql.ts'
import { CallJobs } from './call-jobs.ts'
import { DeliveryJobs, type DeliveryRetry } from './delivery-jobs.ts'
import { BOSS_SCHEMA } from './boss.ts'

// pg-boss, which keeps two queues for us: a call's job (./call-jobs.ts) and event deliveries
// (./delivery-jobs.ts). One PgBoss instance (one small pool, on the `pg` driver) serves both;
// every statement they send runs inside the caller's transaction, through onTx.

export class Queues {
  readonly boss: PgBoss
  /** The calls queue: one job per waiting or in-flight call. */
  readonly calls: CallJobs
  /** The event-deliveries queue. */
  readonly deliveries: DeliveryJobs
  readonly #log: Logger
  #stopping = false

  /**
   * `deliveryRetry` and `deliveryTimeoutMs`: how the event deliveries this process writes are
   * retried and how long one attempt may take (EVENT_RETRY_*, EVENT_TIMEOUT_MS).
   */
  /** `max`: connections in pg-boss's pool (3 unless given: the process's budget decides, src/config.ts connectionBudget). */
  constructor(databaseUrl: string, log: Logger, options: { supervise: boolean; deliveryRetry?: DeliveryRetry; deliveryTimeoutMs?: number; max?: number }) {
    this.#log = log
    this.boss = new PgBoss({
      connectionString: databaseUrl,
      schema: BOSS_SCHEMA,
      application_name: 'call-orchestrator/pg-boss',
      max: options.max ?? 3,
      supervise: options.supervise,
      // How soon an abandoned delivery job (its worker died) is seen expired and retried.
      superviseIntervalSeconds: 10,
      schedule: false,
      migrate: true,
    })
    // In an outage pg-boss reports each failed poll and supervision round: an expected outage,
    // told once per cause every 10 s, at warn.
    const outage = throttled(log, 10_000)
    this.boss.on('error', (err) => {
      // While we stop, the database may be stopping too (an embedded one is stopped right after
      // us): its sessions ending is expected then, not an error.
      const sessionEnded = ['57P01', '57P02', '57P03'].includes((err as { code?: string }).code ?? '')
      if (this.#stopping && sessionEnded) this.#log.debug('pg-boss error', { err })
      else if (isDatabaseUnavailable(err)) outage.warn('database unavailable to pg-boss; it retries', { err })
      else this.#log.error('pg-boss error', { err })
    })
    this.calls = new CallJobs(this.boss)
    this.deliveries = new DeliveryJobs(this.boss, options)
  }

  /** Installs or upgrades pg-boss's schema and creates both queues (all idempotent). */
  async start(): Promise<void> {
    await this.boss.start()
    await this.calls.createQueue()
    await this.deliveries.createQueue()
  }

  async stop(): Promise<void> {
    this.#stopping = true
    await this.boss.stop({ graceful: true, close: true, timeout: 5_000 })
  }
}
