import { applyProviderReport, countProviderReport, type RefusalBackoff, type ReportOutcome } from '../callbacks/apply.ts'
import type { CallingPolicy } from '../../domain/policy.ts'
import { metrics } from '../../platform/metrics.ts'
import type { CallRow } from '../../domain/call.ts'
import { lockForReport } from '../../store/callbacks.ts'
import type { Sql } from '../../store/sql.ts'
import * as t from '../../store/transitions.ts'
import { heldUntilTimeout } from '../../store/status.ts'
import type { Logger } from '../../platform/log.ts'
import type { DispatchPolicy } from './claim.ts'
import type { LookupResult, ProviderClient } from '../../provider/client.ts'
import type { Queues } from '../../store/queues.ts'

// Reconciliation: a dialed call whose final callback has not come within
// RECONCILE_AFTER_SECONDS (and every dialed call in flight when a process starts or gets the
// database back) is looked up at the provider. A final answer is applied exactly as a callback
// would be; a live one keeps the call waiting and pushes its timeout back; a provider without
// the endpoint leaves the call to CALL_TIMEOUT_SECONDS.

const CONCURRENCY = 4

/**
 * A status look-up's final answer about `call`'s dial, applied as a callback's would be (one
 * transaction); undefined when the call is gone or has moved on to another dial meanwhile.
 */
export async function applyLookedUpReport(
  sql: Sql,
  queue: Queues,
  call: Pick<CallRow, 'id' | 'dial'>,
  answer: Extract<LookupResult, { kind: 'final' }>,
  calling: CallingPolicy | undefined,
  backoff?: RefusalBackoff,
): Promise<ReportOutcome | undefined> {
  return sql.begin(async (tx) => {
    const locked = await lockForReport(tx, call.id, null)
    // Only the dial we asked about: the call may have moved on while we asked.
    if (!locked || locked.call.dial !== call.dial) return undefined
    return applyProviderReport(tx, queue, locked, {
      source: 'reconcile',
      webhookId: null,
      keys: null,
      dial: call.dial,
      providerCallId: answer.providerCallId,
      providerStatus: answer.status,
      durationSec: answer.durationSec,
      completedAt: answer.completedAt,
      notPlaced: answer.notPlaced,
      endReason: answer.endReason,
      result: answer.result,
      body: JSON.stringify({
        callId: answer.providerCallId,
        status: answer.status,
        durationSec: answer.durationSec,
        completedAt: answer.completedAt?.toISOString() ?? null,
      }),
    }, calling)
  })
}

export class Reconciler {
  readonly #sql: Sql
  readonly #queue: Queues
  readonly #provider: ProviderClient
  readonly #policy: DispatchPolicy
  readonly #log: Logger
  readonly #ratePerSecond: number
  #running: Promise<void> | undefined
  #pausedUntil = 0
  #warnedUnsupported = false

  constructor(deps: { sql: Sql; queue: Queues; provider: ProviderClient; policy: DispatchPolicy; log: Logger; ratePerSecond: number }) {
    this.#sql = deps.sql
    this.#queue = deps.queue
    this.#provider = deps.provider
    this.#policy = deps.policy
    this.#log = deps.log
    this.#ratePerSecond = deps.ratePerSecond
  }

  /** Starts a round of look-ups unless one is under way; errors are logged, never thrown. */
  kick(signal: AbortSignal): void {
    if (this.#running || this.#policy.reconcileAfterSeconds === null || Date.now() < this.#pausedUntil) return
    this.#running = this.runOnce(signal)
      .then(() => {})
      .catch((err) => this.#log.warn('reconciliation round failed', { err }))
      .finally(() => (this.#running = undefined))
  }

  /** Waits for a round under way, for a clean stop. */
  async settled(): Promise<void> {
    await this.#running
  }

  /** One round: take the calls due (each pushed ahead so no other worker asks too), ask, apply. */
  async runOnce(signal?: AbortSignal): Promise<{ asked: number; final: number; live: number }> {
    const after = this.#policy.reconcileAfterSeconds
    if (after === null) return { asked: 0, final: 0, live: 0 }
    // At most a few seconds' worth of look-ups per round, at the configured rate.
    const batch = Math.max(1, Math.min(100, this.#ratePerSecond * 5))
    const due = await this.#sql.begin((tx) => t.takeDueLookups(tx, after, batch))
    const counts = { asked: 0, final: 0, live: 0 }
    let unsupported = 0
    const spacingMs = 1000 / this.#ratePerSecond
    let next = 0
    const worker = async () => {
      for (let call = due[next++]; call; call = due[next++]) {
        if (signal?.aborted || Date.now() < this.#pausedUntil) return
        const started = Date.now()
        const answer = await this.#provider.lookup(call.provider_call_id!, signal)
        counts.asked++
        const kind = await this.#apply(call, answer)
        metrics.reconciliations.inc({ result: kind })
        if (kind === 'final') counts.final++
        if (kind === 'live') counts.live++
        if (kind === 'unsupported') unsupported++
        // Keep this worker's share of the rate.
        const wait = spacingMs * CONCURRENCY - (Date.now() - started)
        if (wait > 0) await new Promise((r) => setTimeout(r, wait))
      }
    }
    await Promise.all(Array.from({ length: Math.min(CONCURRENCY, due.length) }, worker))
    if (counts.asked) this.#log.info('reconciled', counts)
    if (unsupported > 0) {
      const held = await heldUntilTimeout(this.#sql)
      if (held) {
        this.#log.warn(`${held.calls} calls hold slots until ${held.until.toISOString().slice(11, 16)} UTC (CALL_TIMEOUT_SECONDS): the provider cannot be asked about them`, {
          calls: held.calls,
          until: held.until,
        })
      }
    }
    return counts
  }

  async #apply(call: CallRow, answer: LookupResult): Promise<LookupResult['kind']> {
    const log = this.#log.child({ callId: call.id, dial: call.dial, providerCallId: call.provider_call_id })
    switch (answer.kind) {
      case 'live':
        await t.extendLive(this.#sql, call.id, call.dial, this.#policy.callTimeoutSeconds)
        return 'live'
      case 'unsupported':
        if (!this.#warnedUnsupported) {
          this.#warnedUnsupported = true
          log.warn('the provider cannot be asked about a call; CALL_TIMEOUT_SECONDS decides for such calls', { error: answer.error })
        }
        await t.stopLookups(this.#sql, call.id)
        return 'unsupported'
      case 'error':
        if (answer.retryAfterMs) this.#pausedUntil = Date.now() + answer.retryAfterMs
        log.warn('status look-up failed; asking again later', { error: answer.error })
        return 'error'
      case 'final': {
        const outcome = await applyLookedUpReport(this.#sql, this.#queue, call, answer, this.#policy.calling, {
          baseSeconds: this.#policy.retryBaseSeconds,
          maxSeconds: this.#policy.retryMaxSeconds,
        })
        if (outcome) countProviderReport({ source: 'reconcile', durationSec: answer.durationSec, completedAt: answer.completedAt }, outcome)
        if (outcome?.verdict === 'applied' || outcome?.verdict === 'corrected') {
          log.info(`status look-up ${outcome.verdict}`, { providerStatus: answer.status, from: outcome.before, to: outcome.call.status })
        }
        return 'final'
      }
    }
  }
}
