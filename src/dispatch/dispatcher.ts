import { hostname } from 'node:os'
import type { CallRow } from '../calls/model.ts'
import { WAKE_CHANNEL, WORKER_LOCK_CLASS } from '../db/locks.ts'
import type { Sql } from '../db/sql.ts'
import { nextDueAt } from '../db/transitions.ts'
import type { Logger } from '../log.ts'
import { claimCalls, recordDialResult, sweep, type DispatchPolicy } from './outcomes.ts'
import type { DialResult, ProviderClient } from './provider.ts'
import type { CallQueue } from './queue.ts'

// One worker process's loop: wait for a wake-up (NOTIFY, the next backoff deadline, or the
// safety poll), claim as many calls as there are free slots, dial each without waiting for
// the others, record each outcome. Any number of these run against one database.

export interface DispatcherOptions extends DispatchPolicy {
  pollMs: number
  shutdownTimeoutMs: number
}

export class Dispatcher {
  readonly #sql: Sql
  readonly #queue: CallQueue
  readonly #provider: ProviderClient
  readonly #options: DispatcherOptions
  readonly #log: Logger
  #state: 'new' | 'running' | 'stopping' | 'stopped' = 'new'
  #workerId = 0
  #lockConnection: Awaited<ReturnType<Sql['reserve']>> | undefined
  #unlisten: (() => Promise<void>) | undefined
  #wakeRequested = false
  #wakeUp: (() => void) | undefined
  #loop: Promise<void> | undefined
  #dueTimer: NodeJS.Timeout | undefined
  #lastSweep = 0
  readonly #inFlight = new Set<Promise<void>>()
  readonly #abort = new AbortController()

  constructor(deps: { sql: Sql; queue: CallQueue; provider: ProviderClient; options: DispatcherOptions; log: Logger }) {
    this.#sql = deps.sql
    this.#queue = deps.queue
    this.#provider = deps.provider
    this.#options = deps.options
    this.#log = deps.log
  }

  async start(): Promise<void> {
    if (this.#state !== 'new') return
    this.#state = 'running'
    const [row] = await this.#sql<{ id: number }[]>`
      INSERT INTO workers (host, pid) VALUES (${hostname()}, ${process.pid}) RETURNING id`
    this.#workerId = row!.id
    this.#log.info('worker started', { worker: this.#workerId })
    await this.#holdLivenessLock()
    const listener = await this.#sql.listen(WAKE_CHANNEL, () => this.wake(), () => this.wake())
    this.#unlisten = () => listener.unlisten()
    this.#loop = this.#run()
  }

  /** Stops claiming, lets dials under way finish (bounded), then lets go of the database. */
  async stop(): Promise<void> {
    if (this.#state === 'new') this.#state = 'stopped'
    if (this.#state !== 'running') return
    this.#state = 'stopping'
    this.wake()
    clearTimeout(this.#dueTimer)
    await this.#loop
    await this.#unlisten?.().catch(() => {})
    const drained = await Promise.race([
      Promise.allSettled([...this.#inFlight]).then(() => true),
      new Promise<false>((resolve) => setTimeout(resolve, this.#options.shutdownTimeoutMs, false).unref()),
    ])
    if (!drained) {
      // Abandoned dials stay IN_PROGRESS without a provider id; once our lock is gone another
      // worker adopts them and re-dials them under the same Idempotency-Key.
      this.#log.warn('shutdown timeout: leaving dials under way to other workers', { worker: this.#workerId, dials: this.#inFlight.size })
      this.#abort.abort()
    }
    await this.#sql`UPDATE workers SET stopped_at = now() WHERE id = ${this.#workerId}`.catch(() => {})
    this.#lockConnection?.release()
    this.#lockConnection = undefined
    this.#state = 'stopped'
    this.#log.info('worker stopped', { worker: this.#workerId })
  }

  wake(): void {
    this.#wakeRequested = true
    this.#wakeUp?.()
  }

  async #holdLivenessLock(): Promise<void> {
    const connection = await this.#sql.reserve()
    await connection`SELECT pg_advisory_lock(${WORKER_LOCK_CLASS}, ${this.#workerId})`
    this.#lockConnection = connection
  }

  /** The liveness lock's connection still answers; if it was lost, take the lock again. */
  async #checkLivenessLock(): Promise<boolean> {
    try {
      if (!this.#lockConnection) await this.#holdLivenessLock()
      await this.#lockConnection!`SELECT 1`
      return true
    } catch (err) {
      this.#log.error('worker liveness connection lost; not claiming until it is back', { worker: this.#workerId, err })
      this.#lockConnection?.release()
      this.#lockConnection = undefined
      return false
    }
  }

  async #run(): Promise<void> {
    while (this.#state === 'running') {
      try {
        if (Date.now() - this.#lastSweep >= this.#options.pollMs) {
          this.#lastSweep = Date.now()
          if (!(await this.#checkLivenessLock())) {
            await this.#sleep()
            continue
          }
          const { expired, timedOut, unblocked, adopted } = await sweep(this.#sql, this.#queue, this.#options, this.#workerId)
          if (expired || timedOut || unblocked || adopted.length) {
            this.#log.info('sweep', { worker: this.#workerId, expired, timedOut, unblocked, adopted: adopted.length })
          }
          for (const call of adopted) this.#dial(call)
        }
        this.#wakeRequested = false
        const { claimed, exhausted } = await claimCalls(
          this.#sql,
          this.#queue,
          this.#options,
          this.#workerId,
          this.#options.maxConcurrentCalls,
        )
        for (const call of claimed) this.#dial(call)
        if (!exhausted) continue
        await this.#armDueTimer()
      } catch (err) {
        if (this.#state !== 'running') break
        this.#log.error('claim loop error', { worker: this.#workerId, err })
      }
      await this.#sleep()
    }
  }

  async #armDueTimer(): Promise<void> {
    const due = await this.#sql.begin((tx) => nextDueAt(tx))
    clearTimeout(this.#dueTimer)
    if (!due) return
    const delay = Math.max(0, due.getTime() - Date.now()) + 5
    if (delay < this.#options.pollMs) this.#dueTimer = setTimeout(() => this.wake(), delay).unref()
  }

  #sleep(): Promise<void> {
    if (this.#wakeRequested || this.#state !== 'running') return Promise.resolve()
    return new Promise((resolve) => {
      const timer = setTimeout(done, this.#options.pollMs)
      const self = this
      function done() {
        clearTimeout(timer)
        self.#wakeUp = undefined
        resolve()
      }
      this.#wakeUp = done
    })
  }

  #dial(call: CallRow): void {
    const log = this.#log.child({ worker: this.#workerId, callId: call.id, attempt: call.attempts })
    const task = (async () => {
      let result: DialResult
      try {
        result = await this.#provider.dial(
          { callId: call.id, attempt: call.attempts, to: call.phone, scriptId: call.script_id, metadata: call.metadata },
          this.#abort.signal,
        )
      } catch (err) {
        result = { kind: 'retryable', error: `dial failed: ${(err as Error).message}` }
      }
      if (this.#abort.signal.aborted) return
      for (let tries = 1; ; tries++) {
        try {
          const { outcome, call: after } = await recordDialResult(this.#sql, this.#queue, this.#options, call, result)
          log.info(`dial ${outcome}`, {
            result: result.kind,
            ...(result.kind === 'accepted' ? { providerCallId: result.providerCallId } : { error: result.error }),
            ...(after?.next_attempt_at ? { nextAttemptAt: after.next_attempt_at.toISOString() } : {}),
          })
          return
        } catch (err) {
          // The database hiccupped: the call is still IN_PROGRESS and ours, so try again a few
          // times; if we give up, the orphan sweep (once we are gone) or the timeout resolves it.
          if (tries >= 5 || this.#abort.signal.aborted) {
            log.error('could not record dial result', { err })
            return
          }
          await new Promise((r) => setTimeout(r, 200 * tries))
        }
      }
    })()
    this.#inFlight.add(task)
    void task.finally(() => this.#inFlight.delete(task))
  }
}
