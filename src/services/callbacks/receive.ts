import type { CallingPolicy } from '../../domain/policy.ts'
import { metrics } from '../../platform/metrics.ts'
import { countRepeat, isRepeatedDelivery, keepCallback, lockForReport, type DeliveryKeys } from '../../store/callbacks.ts'
import { isProviderCallIdTaken } from '../../store/calls.ts'
import type { Queues } from '../../store/queues.ts'
import type { Sql } from '../../store/sql.ts'
import { applyProviderReport, countProviderReport, type ProviderReport, type RefusalBackoff, type ReportOutcome } from './apply.ts'

// A webhook delivery of the provider's report, once the edge has authenticated it and checked
// its URL (src/http/routes/callbacks.ts): whether we had it before, keeping what cannot be
// applied, and applying the rest in one transaction (./apply.ts). What a race at the unique
// indexes means is decided here and in the store, not by the edge.

export interface ReceiveDeps {
  sql: Sql
  queue: Queues
  calling: CallingPolicy | undefined
  /** The backoff of a new dial after the provider refused to place one. */
  backoff?: RefusalBackoff | undefined
}

/** A webhook delivery about our call `callId`, authenticated and addressed to a URL we issued. */
export interface Delivery {
  callId: string
  dial: number
  webhookId: string | null
  keys: DeliveryKeys
  body: string
}

export type Received =
  /** Delivered before (a replay, or the provider trying again): counted on the first one's row. */
  | { kind: 'duplicate' }
  /** No call has the id its URL names: kept, nothing changed. */
  | { kind: 'unknown_call' }
  /** Its provider id is another call's: kept, nothing changed. */
  | { kind: 'provider_call_id_taken' }
  | { kind: 'judged'; outcome: ReportOutcome }

/** True when this delivery was had before; it is counted on the first one's row. */
export async function deliveredBefore(sql: Sql, keys: DeliveryKeys): Promise<boolean> {
  const repeat = await countRepeat(sql, keys)
  if (repeat) metrics.callbacks.inc({ source: 'webhook', verdict: 'duplicate' })
  return repeat
}

/** Keeps a delivery that cannot be applied (malformed, about no call, contradicting another): once, with why. */
export async function keepRefused(
  sql: Sql,
  delivery: Delivery,
  verdict: 'rejected' | 'unknown_call',
  reason: string,
  report: { providerCallId?: string; providerStatus?: string; body?: string } = {},
): Promise<void> {
  await keepCallback(sql, {
    source: 'webhook',
    webhookId: delivery.webhookId,
    keys: delivery.keys,
    callId: verdict === 'unknown_call' ? null : delivery.callId,
    dial: delivery.dial,
    providerCallId: report.providerCallId ?? null,
    providerStatus: report.providerStatus ?? null,
    verdict,
    reason,
    body: report.body ?? null,
  })
  metrics.callbacks.inc({ source: 'webhook', verdict })
}

/** Applies a well-formed report: to its call's current dial, once, or not at all. */
export async function receiveReport(
  deps: ReceiveDeps,
  delivery: Delivery,
  report: Pick<ProviderReport, 'providerCallId' | 'providerStatus' | 'durationSec' | 'completedAt' | 'notPlaced' | 'endReason' | 'result'>,
  receivedAt = Date.now(),
): Promise<Received> {
  const full: ProviderReport = { source: 'webhook', webhookId: delivery.webhookId, keys: delivery.keys, dial: delivery.dial, body: delivery.body, ...report }
  const kept = { providerCallId: report.providerCallId, providerStatus: report.providerStatus, body: delivery.body }
  try {
    const outcome = await deps.sql.begin(async (tx) => {
      const locked = await lockForReport(tx, delivery.callId, delivery.keys)
      if (!locked) return undefined
      return applyProviderReport(tx, deps.queue, locked, full, deps.calling, deps.backoff)
    })
    if (!outcome) {
      await keepRefused(deps.sql, delivery, 'unknown_call', `no call ${delivery.callId}`, kept)
      return { kind: 'unknown_call' }
    }
    if (outcome.verdict === 'duplicate') {
      metrics.callbacks.inc({ source: 'webhook', verdict: 'duplicate' })
      return { kind: 'duplicate' }
    }
    countProviderReport(full, outcome, receivedAt)
    return { kind: 'judged', outcome }
  } catch (err) {
    // Two deliveries of one key raced past the look for a repeat: the index kept one.
    if (isRepeatedDelivery(err)) {
      await countRepeat(deps.sql, delivery.keys)
      metrics.callbacks.inc({ source: 'webhook', verdict: 'duplicate' })
      return { kind: 'duplicate' }
    }
    if (isProviderCallIdTaken(err)) {
      await keepRefused(deps.sql, delivery, 'rejected', `provider callId ${report.providerCallId} already belongs to another call`, kept)
      return { kind: 'provider_call_id_taken' }
    }
    throw err
  }
}
