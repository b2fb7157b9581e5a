import { hostname } from 'node:os'
import { performance } from 'node:perf_hooks'
import { setTimeout as delay } from 'node:timers/promises'
import type { CallRow } from '../domain/call.ts'
import { NO_POLICY } from '../domain/policy.ts'
import { isDatabaseUnavailable, type Sql } from '../store/sql.ts'
import { reconcileAllNow } from '../store/transitions.ts'
import { registerWorker, touchAndTakeSweepTurn, touchWorker } from '../store/workers.ts'
import { failureStreak, type Logger } from '../platform/log.ts'
import { readWake } from '../store/notify.ts'
import { carryOutRequestedActions } from '../services/calls/requests.ts'
import { metrics } from '../platform/metrics.ts'
import { observeEnded } from '../services/calls/observe.ts'
import { claimCalls, LEASE_MARGIN_MS, takeResends, type DispatchPolicy, type Ended } from '../services/dispatch/claim.ts'
import type { DialResult, FoundDial, ProviderClient } from '../provider/client.ts'
import type { Queues } from '../store/queues.ts'
import { Reconciler } from '../services/dispatch/reconcile.ts'
import { recordDialResult } from '../services/dispatch/record.ts'
import { applyPolicyChange, sweep } from '../services/dispatch/sweeps.ts'
import { WakeListener } from '../store/listener.ts'
import { dialStartedAt } from '../store/dials.ts'

// One worker process's loop: wait for a wake-up (NOTIFY, the next due time, or the safety
// poll), send the requests that are due again, claim as many new calls as there are free
// slots, send each without waiting for the others, record each answer. Any number of these run
// against one database. Losing the database is routine: the loop backs off and resumes, and
// whatever it held when it lost the database is re-sent by whoever finds its lease lapsed.

export interface DispatcherOptions extends DispatchPolicy {
  pollMs: number
  shutdownTimeoutMs: number
  /** Status look-ups per second, at most, from this worker. */
  reconcileRatePerSecond: number
  /**
   * With a provider that has no idempotency keys: how long a create that may have placed a call
   * can take to show in the provider's list (PROVIDER_TIMEOUT_MS). A dial after an unknown
   * outcome looks, waits this long, looks again, and only then sends; its lease covers all four.
   */
  settleMs?: number
}

/** How far the provider's clock may be from ours when we ask for the calls created since a dial began. */
const CLOCK_SKEW_MS = 5 * 60_000

/** How long a worker keeps trying to record one answer while the database is away. */
const RECORD_PATIENCE_MS = 60_000

export class Dispatcher {
  readonly #sql: Sql
  readonly #queue: Queues
  readonly #provider: ProviderClient
  readonly #options: DispatcherOptions
  readonly #log: Logger
  readonly #listener: WakeListener
  readonly #reconciler: Reconciler
  #state: 'new' | 'running' | 'stopping' | 'stopped' = 'new'
  #workerId = 0
  #wakeRequested = false
  #wakeUp: (() => void) | undefined
  #wakeups = 0
  #idleWaiters: Array<() => void> = []
  #loop: Promise<void> | undefined
  #dueTimer: NodeJS.Timeout | undefined
  #lastSweep = 0
  /** The claim loop's failures since it last got through: counted, and logged when they are news. */
  readonly #failures = failureStreak(50)
  readonly #sweepCursor: { pending?: string | undefined } = {}
  readonly #inFlight = new Set<Promise<void>>()
  /** When slots were freed (database clock, ms), as heard since the last claim. */
  #freedAt: number[] = []
  /** An operator filed a cancel or retry from SQL (call_actions): carry it out on the next turn. */
  #actionsFiled = true
  readonly #abort = new AbortController()

  constructor(deps: { sql: Sql; listenUrl: string; queue: Queues; provider: ProviderClient; options: DispatcherOptions; log: Logger }) {
    this.#sql = deps.sql
    this.#queue = deps.queue
    this.#provider = deps.provider
    this.#options = deps.options
    this.#log = deps.log
    this.#listener = new WakeListener(deps.listenUrl, (payload) => this.#woken(payload), deps.log)
    this.#reconciler = new Reconciler({
      sql: deps.sql,
      queue: deps.queue,
      provider: deps.provider,
      policy: deps.options,
      log: deps.log,
      ratePerSecond: deps.options.reconcileRatePerSecond,
    })
  }

  get workerId(): number {
    return this.#workerId
  }

  /** Safe to call again after it failed (the database went away during start-up). */
  async start(): Promise<void> {
    if (this.#state !== 'new') return
    this.#workerId ||= await registerWorker(this.#sql, hostname(), process.pid, this.#options.pollMs)
    const moved = await applyPolicyChange(this.#sql, this.#queue, this.#options.calling ?? NO_POLICY)
    if (moved) this.#log.info('calling policy changed: waiting calls rescheduled', { worker: this.#workerId, calls: moved })
    await this.#listener.start()
    if (this.#state !== 'new') return // stopped while starting
    this.#state = 'running'
    this.#log.info('worker started', { worker: this.#workerId })
    this.#loop = this.#run()
  }

  /** Stops claiming, lets requests under way finish and be recorded (bounded), then lets go. */
  async stop(): Promise<void> {
    if (this.#state === 'new') {
      this.#state = 'stopped'
      await this.#listener.stop()
    }
    if (this.#state !== 'running') return
    this.#state = 'stopping'
    this.wake()
    clearTimeout(this.#dueTimer)
    await this.#loop
    await this.#listener.stop()
    const drained = await Promise.race([
      Promise.allSettled([...this.#inFlight, this.#reconciler.settled()]).then(() => true),
      new Promise<false>((resolve) => setTimeout(resolve, this.#options.shutdownTimeoutMs, false).unref()),
    ])
    if (!drained) {
      // What is left keeps its lease until it lapses; then another worker re-sends it under
      // the same Idempotency-Key.
      this.#log.warn('shutdown timeout: leaving requests under way to other workers', { worker: this.#workerId, requests: this.#inFlight.size })
      this.#abort.abort()
    }
    await touchWorker(this.#sql, this.#workerId, true).catch(() => {})
    this.#state = 'stopped'
    this.#log.info('worker stopped', { worker: this.#workerId })
  }

  /**
   * A NOTIFY. One meant for another worker is left to it (a freed slot or a new call wakes one
   * worker). A slot freed says when, for the refill-time histogram.
   */
  #woken(payload: string): void {
    const wake = readWake(payload)
    if (wake.target !== undefined && wake.target !== this.#workerId) return
    if (wake.freedAt !== undefined && this.#freedAt.length < 1_000) this.#freedAt.push(wake.freedAt)
    if (wake.actionFiled) this.#actionsFiled = true
    this.wake()
  }

  wake(): void {
    this.#wakeups++
    this.#wakeRequested = true
    this.#wakeUp?.()
  }

  /** Wake-ups asked for so far (NOTIFY, timers, the loop itself). */
  get wakeups(): number {
    return this.#wakeups
  }

  /** Resolves once the loop has nothing to do and waits for a wake-up (now, if it already does). */
  idle(): Promise<void> {
    if (this.#wakeUp && !this.#wakeRequested) return Promise.resolve()
    return new Promise((resolve) => this.#idleWaiters.push(resolve))
  }

  async #run(): Promise<void> {
    while (this.#state === 'running') {
      try {
        if (Date.now() - this.#lastSweep >= this.#options.pollMs) await this.#sweep()
        this.#wakeRequested = false
        if (this.#actionsFiled) await this.#carryOutActions()
        for (const call of await takeResends(this.#sql, this.#options, this.#workerId, this.#options.maxConcurrentCalls)) {
          metrics.claims.inc()
          this.#send(call, performance.now(), call.lapsed)
        }
        const freed = this.#freedAt.splice(0)
        const claimStarted = performance.now()
        const { claimed, exhausted, ended, nextDueMs } = await claimCalls(this.#sql, this.#queue, this.#options, this.#workerId, this.#options.maxConcurrentCalls)
        metrics.claimDuration.observe((performance.now() - claimStarted) / 1000)
        const takenAt = performance.now()
        this.#claimed(claimed, ended, freed)
        for (const call of claimed) this.#send(call, takenAt, false)
        if (this.#failures.count > 0) await this.#recovered()
        if (!exhausted) continue
        this.#armDueTimer(nextDueMs)
      } catch (err) {
        if (this.#state !== 'running') break
        if (this.#failures.failed(err)) {
          const unavailable = isDatabaseUnavailable(err)
          this.#log[unavailable ? 'warn' : 'error'](unavailable ? 'database unavailable; retrying' : 'claim loop error', {
            worker: this.#workerId,
            failures: this.#failures.count,
            err,
          })
        }
        await this.#sleep(Math.min(this.#options.pollMs, 100 * 2 ** Math.min(this.#failures.count, 6)))
        continue
      }
      await this.#sleep(this.#options.pollMs)
    }
  }

  /** Metrics and a log line for what a claim did. */
  #claimed(claimed: CallRow[], ended: Ended, freed: number[]): void {
    metrics.claims.inc(claimed.length)
    // The slots freed before this claim that it filled (the rest went to other workers, or no
    // call was waiting): oldest first, against the claim's own time, both on the database's clock.
    freed.sort((a, b) => a - b)
    claimed.forEach((call, i) => {
      const at = call.started_at!.getTime()
      if (i < freed.length && freed[i]! <= at) metrics.slotRefill.observe((at - freed[i]!) / 1000)
      if (call.dial === 1 && call.dial_requests === 1) metrics.queueWait.observe(Math.max(0, at - call.created_at.getTime()) / 1000)
      this.#log.info('call claimed', { worker: this.#workerId, callId: call.id, phone: call.phone, dial: call.dial, attempt: call.attempts, from: 'PENDING', to: 'IN_PROGRESS' })
    })
    observeEnded(this.#log, ended.suppressed, 'SUPPRESSED', { worker: this.#workerId })
    observeEnded(this.#log, ended.expired, 'EXPIRED', { worker: this.#workerId })
  }

  async #sweep(): Promise<void> {
    this.#lastSweep = Date.now()
    // A request filed while no worker was listening is found here.
    this.#actionsFiled = true
    // Seen alive at every poll; the sweeps themselves once per poll interval between all workers.
    if (await touchAndTakeSweepTurn(this.#sql, this.#workerId, this.#options.pollMs)) {
      const result = await sweep(this.#sql, this.#queue, this.#options, this.#sweepCursor, this.#log.child({ worker: this.#workerId }))
      const { pruned, ...counts } = result
      if (Object.values(counts).some((n) => n > 0) || pruned.callbacks + pruned.events > 0) this.#log.info('sweep', { worker: this.#workerId, ...counts, pruned })
    }
    this.#reconciler.kick(this.#abort.signal)
  }

  /** Cancels and retries filed from SQL, carried out with the API's own code. */
  async #carryOutActions(): Promise<void> {
    this.#actionsFiled = false
    const results = await carryOutRequestedActions(this.#sql, { queue: this.#queue, calling: this.#options.calling ?? NO_POLICY })
    for (const r of results) {
      this.#log.info(`requested ${r.request.action} ${r.outcome}`, {
        worker: this.#workerId,
        callId: r.request.call_id,
        requestedBy: r.request.requested_by,
        request: r.request.id,
        detail: r.detail,
      })
    }
    // A full round may have left more behind it.
    if (results.length === 20) this.#actionsFiled = true
  }

  /** The database is back after an outage: callbacks may have been lost meanwhile, so ask about every dialed call. */
  async #recovered(): Promise<void> {
    const asked = await reconcileAllNow(this.#sql)
    this.#log.info('database reachable again', { worker: this.#workerId, failures: this.#failures.count, reconciling: asked })
    this.#failures.reset()
    this.#reconciler.kick(this.#abort.signal)
  }

  /** A wake-up when the soonest waiting call is due (as the claim read it), if that comes before the next poll. */
  #armDueTimer(untilDue: number | null): void {
    clearTimeout(this.#dueTimer)
    if (untilDue === null) return
    const delay = Math.max(0, untilDue) + 5
    if (delay < this.#options.pollMs) this.#dueTimer = setTimeout(() => this.wake(), delay).unref()
  }

  #sleep(ms: number): Promise<void> {
    if (this.#wakeRequested || this.#state !== 'running') return Promise.resolve()
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms)
      const self = this
      function done() {
        clearTimeout(timer)
        self.#wakeUp = undefined
        resolve()
      }
      this.#wakeUp = done
      for (const resolveIdle of this.#idleWaiters.splice(0)) resolveIdle()
    })
  }

  /**
   * Sends one request for `call` and records the answer. The lease taken for it runs for
   * PROVIDER_TIMEOUT_MS plus LEASE_MARGIN_MS from the database's commit; the request is sent only
   * if little of the margin is gone, and ends by its own deadline, so it is over before the
   * lease lapses and another worker may send the next one.
   */
  #send(call: CallRow, takenAt: number, lapsed: boolean): void {
    const log = this.#log.child({ worker: this.#workerId, callId: call.id, dial: call.dial, attempt: call.attempts })
    if (lapsed) log.warn('previous request never recorded; re-sending under the same key')
    const task = (async () => {
      if (performance.now() - takenAt > LEASE_MARGIN_MS / 2) {
        log.warn('lease too old to send on; leaving it to lapse')
        return
      }
      let result: DialResult
      // An earlier request of this dial may have placed the call, and the provider cannot tell
      // a create sent again from a new one: look for it first.
      const provider = this.#provider
      const settled = !provider.idempotent && (lapsed || call.outcome_unknown_at) ? await this.#lookFirst(provider, call, log) : undefined
      const sentAt = performance.now()
      if (settled) {
        result = settled
      } else {
        try {
          result = await this.#provider.dial(
            { callId: call.id, dial: call.dial, to: call.phone, scriptId: call.script_id, metadata: call.metadata },
            this.#abort.signal,
          )
        } catch (err) {
          result = { kind: 'unknown', error: `dial failed: ${(err as Error).message}` }
        }
      }
      if (!settled) {
        // A call adopted (or held) after a look sent no create; orchestrator_provider_lookups_total counts the look.
        const outcome = result.kind === 'not_placed' && !result.retry ? 'refused' : result.kind
        metrics.providerRequests.inc({ outcome })
        metrics.providerLatency.observe({ outcome }, (performance.now() - sentAt) / 1000)
      }
      if (this.#abort.signal.aborted) return
      await this.#record(call, result, log)
    })()
    this.#inFlight.add(task)
    void task.finally(() => this.#inFlight.delete(task))
  }

  /**
   * For a provider without idempotency keys, after an unknown outcome: the call an earlier
   * request of this dial placed, found by our ids and adopted; or an unknown outcome again when
   * the look itself fails (the call is held, as after any unknown outcome); or undefined when
   * two looks, settleMs apart, found nothing: then it is sent again.
   */
  async #lookFirst(provider: Extract<ProviderClient, { idempotent: false }>, call: CallRow, log: Logger): Promise<DialResult | undefined> {
    let since: Date
    try {
      since = new Date(((await dialStartedAt(this.#sql, call.id, call.dial)) ?? call.created_at).getTime() - CLOCK_SKEW_MS)
    } catch (err) {
      return { kind: 'unknown', error: `could not read when dial ${call.dial} began: ${(err as Error).message}` }
    }
    for (let look = 1; look <= 2; look++) {
      let found: FoundDial
      try {
        found = await provider.findDialed({ callId: call.id, dial: call.dial, since }, this.#abort.signal)
      } catch (err) {
        found = { kind: 'error', error: (err as Error).message }
      }
      metrics.lookups.inc({ result: found.kind })
      if (found.kind === 'found') {
        log.info('an earlier request placed the call; adopting it', { providerCallId: found.providerCallId, look })
        return { kind: 'accepted', providerCallId: found.providerCallId }
      }
      if (found.kind === 'error') {
        log.warn('could not look for a call an earlier request may have placed; holding it', { error: found.error })
        return { kind: 'unknown', error: `could not look for the call an earlier request may have placed: ${found.error}` }
      }
      // A worker that stops cuts the wait short and records nothing after it: its lease lapses.
      if (look === 1) await delay(this.#options.settleMs ?? 0, undefined, { signal: this.#abort.signal }).catch(() => {})
    }
    log.info('no call placed by an earlier request; sending again')
    return undefined
  }

  /**
   * Records an answer, retrying while the database is away. If it never can, nothing is stuck:
   * the lease lapses and the next request under the same key brings the same answer back.
   */
  async #record(call: CallRow, result: DialResult, log: Logger): Promise<void> {
    const giveUpAt = Date.now() + Math.max(RECORD_PATIENCE_MS, this.#options.leaseMs)
    for (let tries = 1; ; tries++) {
      try {
        const { outcome, call: after } = await recordDialResult(this.#sql, this.#queue, this.#options, call, result)
        log.info(`dial ${outcome}`, {
          result: result.kind,
          from: 'IN_PROGRESS',
          to: after?.status ?? 'IN_PROGRESS',
          ...(result.kind === 'accepted' ? { providerCallId: result.providerCallId } : { error: result.error }),
          ...(after?.next_attempt_at ? { nextAttemptAt: after.next_attempt_at.toISOString() } : {}),
        })
        if (outcome === 'resend') {
          metrics.retries.inc({ kind: 'request' })
          this.wake() // so the loop arms its timer for the re-send
        }
        return
      } catch (err) {
        if (Date.now() >= giveUpAt || this.#abort.signal.aborted) {
          log.error('could not record the dial answer; its lease will lapse and the request be re-sent', { err, result: result.kind })
          return
        }
        if (tries === 1) log.warn('recording the dial answer failed; retrying', { err })
        await new Promise((r) => setTimeout(r, Math.min(5_000, 100 * 2 ** tries)))
      }
    }
  }
}
