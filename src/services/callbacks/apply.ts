import type { CallResult, CallRow } from '../../domain/call.ts'
import { countRepeat, recordCallback, type DeliveryKeys, type LockedForReport, type Verdict } from '../../store/callbacks.ts'
import { completeJob, jobForNextDial } from '../calls/jobs.ts'
import { NO_POLICY, type CallingPolicy } from '../../domain/policy.ts'
import { dueTime } from '../calls/due.ts'
import { dialsEndedWith, endDials, markDialAccepted, recordResult } from '../../store/dials.ts'
import { wakeWorkers } from '../../store/notify.ts'
import { eventOf } from '../../domain/events.ts'
import { emitCallEvents } from '../events/outbox.ts'
import type { Tx } from '../../store/sql.ts'
import { applyProviderFinal, databaseNow, finalReportApplies, markDialedByReport, retryAfterOutcome, type FinalStatus } from '../../store/transitions.ts'
import type { FinalProviderStatus } from '../../provider/client.ts'
import type { Queues } from '../../store/queues.ts'
import { metrics } from '../../platform/metrics.ts'
import { retryDelayMs } from '../../domain/backoff.ts'

// The provider's final report on a call, from its webhook or from a status look-up, and what it
// may change. A report is bound to one dial of one call: the webhook URL names them (with a token
// only we can make, checked before this), and once we know the provider's id for that dial the
// report must name the same id. A report for an earlier dial is kept and changes nothing; a report
// that contradicts the binding is refused.

export interface ProviderReport {
  source: 'webhook' | 'reconcile'
  webhookId: string | null
  /** How a repeat of it is told (src/store/callbacks.ts); null for a look-up. */
  keys: DeliveryKeys | null
  /** The dial the report is about: the one its webhook URL named, or the one a look-up asked about. */
  dial: number
  providerCallId: string
  providerStatus: FinalProviderStatus
  durationSec: number | null
  completedAt: Date | null
  body: string
  /** The provider says it never placed the call (its concurrency limit): a new dial after the backoff, not a failure. */
  notPlaced?: boolean | undefined
  /** The provider's own word for the end (Vapi's endedReason, Retell's disconnection_reason). */
  endReason?: string | null | undefined
  /** What the call ended with besides (transcript, recording, summary, analysis), when the provider sends it. */
  result?: Omit<CallResult, 'endReason'> | undefined
}

/** The backoff of a new dial after the provider refused to place one (RETRY_BASE_SECONDS, RETRY_MAX_SECONDS). */
export interface RefusalBackoff {
  baseSeconds: number
  maxSeconds: number
}

const DEFAULT_BACKOFF: RefusalBackoff = { baseSeconds: 5, maxSeconds: 300 }

export interface ReportOutcome {
  verdict: Verdict
  /** The call's status before the report. */
  before: CallRow['status']
  call: CallRow
  reason?: string | undefined
}

/**
 * Counts a report once its transaction has committed: by verdict; the call's duration and, for a
 * webhook, how late it came; a new dial when it scheduled one.
 */
export function countProviderReport(report: Pick<ProviderReport, 'source' | 'durationSec' | 'completedAt'>, outcome: ReportOutcome, receivedAt = Date.now()): void {
  metrics.callbacks.inc({ source: report.source, verdict: outcome.verdict })
  if (outcome.verdict !== 'applied' && outcome.verdict !== 'corrected') return
  if (outcome.call.status === 'PENDING') metrics.retries.inc({ kind: 'outcome' })
  if (report.durationSec !== null) metrics.callDuration.observe(report.durationSec)
  if (report.source === 'webhook' && report.completedAt) metrics.callbackLag.observe(Math.max(0, receivedAt - report.completedAt.getTime()) / 1000)
}

/**
 * Applies `report` to the call the caller's transaction has locked for it (lockForReport). With an
 * outcome retry policy (`calling.retries`), a BUSY, NO_ANSWER or FAILED report on an in-flight
 * call sends it back to PENDING for a new dial instead of ending it.
 */
export async function applyProviderReport(
  tx: Tx,
  queue: Queues,
  locked: LockedForReport,
  report: ProviderReport,
  calling: CallingPolicy = NO_POLICY,
  backoff: RefusalBackoff = DEFAULT_BACKOFF,
): Promise<ReportOutcome> {
  const { call } = locked
  const record = (verdict: Verdict, reason: string | null) =>
    recordCallback(tx, {
      source: report.source,
      webhookId: report.webhookId,
      keys: report.keys,
      callId: call.id,
      dial: report.dial,
      providerCallId: report.providerCallId,
      providerStatus: report.providerStatus,
      verdict,
      reason,
      body: report.body,
    })
  const refuse = async (verdict: Verdict, reason: string): Promise<ReportOutcome> => {
    await record(verdict, reason)
    return { verdict, before: call.status, call, reason }
  }

  // What the report tells of how the dial ended, kept on the dial it names (when that is its
  // provider call): true when it brought anything new.
  const keep = async (): Promise<boolean> => {
    if (report.endReason == null && !report.result) return false
    const result = { endReason: report.endReason ?? null, transcript: null, recordingUrl: null, summary: null, analysis: null, ...report.result }
    return recordResult(tx, call.id, report.dial, report.providerCallId, result)
  }

  // Delivered before (a replay, or the provider trying again): counted on the first one's row.
  if (locked.repeated) {
    await countRepeat(tx, report.keys!)
    return { verdict: 'duplicate', before: call.status, call }
  }
  if (report.dial < call.dial) {
    await keep() // an earlier dial's transcript or analysis, come late, is still that dial's
    return refuse('stale', `for dial ${report.dial}; the call is on dial ${call.dial}`)
  }
  if (report.dial > call.dial) {
    return refuse('rejected', `names dial ${report.dial}, which the call never started (it is on dial ${call.dial})`)
  }
  if (call.provider_call_id !== null && call.provider_call_id !== report.providerCallId) {
    return refuse('rejected', `names provider call ${report.providerCallId}; dial ${call.dial} is provider call ${call.provider_call_id}`)
  }

  const final: FinalStatus = {
    status: report.providerStatus === 'COMPLETED' ? 'COMPLETED' : 'FAILED',
    providerStatus: report.providerStatus,
    providerCallId: report.providerCallId,
    durationSec: report.durationSec,
    endedAt: report.completedAt,
  }
  if (call.status === 'IN_PROGRESS' && !call.dialed_at) {
    // Its 202 is not recorded yet (the worker records it next, as stale): the report shows the
    // provider placed the call, so the events tell it was dialed before they tell how it ended.
    const dialed = await markDialedByReport(tx, call.id, call.dial, report.providerCallId)
    if (dialed) {
      await markDialAccepted(tx, call.id, call.dial, report.providerCallId)
      await emitCallEvents(tx, queue.deliveries, 'call.dialed', [dialed])
    }
  }
  const retried =
    call.status !== 'IN_PROGRESS'
      ? undefined
      : report.notPlaced
        ? await dialAgainAfterRefusal(tx, queue, call, final, report.endReason ?? null, calling, backoff, keep)
        : await retryAfter(tx, queue, call, final, calling, keep)
  if (retried) {
    await record('applied', retried.last_error)
    return { verdict: 'applied', before: call.status, call: retried, reason: retried.last_error ?? undefined }
  }
  // The call is locked, so whether the update changes it is known now.
  if (!finalReportApplies(call)) {
    // A later report of the dial that ended the call (Retell's call_analyzed, Vapi's report after
    // its status-update) may bring what the first did not: kept, and told as call.analyzed.
    if (call.status !== 'PENDING' && (await keep())) {
      // The call's row is as locked; its dials, which the event shows, are read fresh.
      await emitCallEvents(tx, queue.deliveries, 'call.analyzed', [call])
      return refuse('already_final', `call was already ${call.status}; its result was added to`)
    }
    return refuse('already_final', `call was already ${call.status}`)
  }
  const corrected = call.status === 'FAILED'
  const reason = corrected ? `we had declared it FAILED (${call.last_error ?? 'no reason'}); the provider says ${report.providerStatus}` : null
  const row = await applyProviderFinal(tx, call.id, call.dial, final)
  if (!row) throw new Error(`call ${call.id} was locked as ${call.status} on dial ${call.dial}, yet its final update changed nothing`)
  await endDials(tx, [
    {
      callId: call.id,
      dial: call.dial,
      outcome: report.providerStatus,
      error: final.status === 'FAILED' ? `provider reported ${report.providerStatus}` : null,
      providerCallId: report.providerCallId,
    },
  ])
  await keep()
  await record(corrected ? 'corrected' : 'applied', reason)
  if (!corrected) {
    await completeJob(tx, queue.calls, call)
    await wakeWorkers(tx, true)
  }
  // After endDials, so the event's resource shows how the dial ended. A correction is reported
  // too: the event of the status the call now has.
  await emitCallEvents(tx, queue.deliveries, eventOf, [row])
  return { verdict: corrected ? 'corrected' : 'applied', before: call.status, call: row, reason: reason ?? undefined }
}

/**
 * The provider ended the dial without placing it (its account's concurrency limit): nothing
 * rang, so it is no outcome of the call. The dial ends `refused`, and a new one follows after
 * the backoff (growing with the refusals so far), within the calling policy's window; the call
 * waits PENDING as for any retry, and expires if the refusals outlast it. Undefined when the
 * window never opens again: then the report stands as FAILED.
 */
async function dialAgainAfterRefusal(
  tx: Tx,
  queue: Queues,
  call: CallRow,
  final: FinalStatus,
  endReason: string | null,
  calling: CallingPolicy,
  backoff: RefusalBackoff,
  keep: () => Promise<boolean>,
): Promise<CallRow | undefined> {
  const refusals = await dialsEndedWith(tx, call.id, 'refused')
  const now = await databaseNow(tx)
  const delayMs = retryDelayMs(refusals + 1, backoff)
  const due = await dueTime(tx, calling, call, now, { at: new Date(now.getTime() + delayMs), reason: 'retry' })
  if (!due) return undefined
  const error = `the provider placed nothing (${endReason ?? 'its concurrency limit'}); a new dial after ${Math.round(delayMs / 1000)} s`
  return toNextDial(tx, queue, call, final, due, { outcome: 'refused', dialError: error, callError: error }, keep)
}

/**
 * The tail of both ways to a new dial: the dial ends with `outcome` (and what the report tells
 * of it), the call goes back to PENDING with a job due at `due`, call.retry_scheduled is
 * written and the workers are woken (a slot and the phone went free).
 */
async function toNextDial(
  tx: Tx,
  queue: Queues,
  call: CallRow,
  final: FinalStatus,
  due: { at: Date; waitingFor: string | null },
  end: { outcome: 'refused' | 'BUSY' | 'NO_ANSWER' | 'FAILED'; dialError: string; callError: string },
  keep: () => Promise<boolean>,
): Promise<CallRow | undefined> {
  await endDials(tx, [{ callId: call.id, dial: call.dial, outcome: end.outcome, error: end.dialError, providerCallId: final.providerCallId }])
  await keep()
  const jobId = await jobForNextDial(tx, queue.calls, call, due.at, 'in flight')
  const row = await retryAfterOutcome(tx, call.id, call.dial, { final, jobId, dueAt: due.at, waitingFor: due.waitingFor, error: end.callError })
  if (row) await emitCallEvents(tx, queue.deliveries, 'call.retry_scheduled', [row])
  await wakeWorkers(tx, true)
  return row
}

/**
 * A new dial after BUSY, NO_ANSWER or FAILED, when the policy allows one more for that outcome:
 * that provider call has definitively ended, so the slot and the phone go free, and the call
 * waits PENDING for the retry's delay (and its window and caps). Undefined when no retry is due.
 */
async function retryAfter(tx: Tx, queue: Queues, call: CallRow, final: FinalStatus, calling: CallingPolicy, keep: () => Promise<boolean>): Promise<CallRow | undefined> {
  const outcome = final.providerStatus as 'BUSY' | 'NO_ANSWER' | 'FAILED' | 'COMPLETED'
  if (outcome === 'COMPLETED') return undefined
  const retry = calling.retries[outcome]
  if (!retry) return undefined
  const before = await dialsEndedWith(tx, call.id, outcome)
  if (before >= retry.limit) return undefined
  const now = await databaseNow(tx)
  const due = await dueTime(tx, calling, call, now, { at: new Date(now.getTime() + retry.delaySeconds * 1000), reason: 'retry' })
  if (!due) return undefined // its window never opens again: the outcome stands
  const error = `provider reported ${outcome}; retry ${before + 1} of ${retry.limit} after ${outcome}`
  return toNextDial(tx, queue, call, final, due, { outcome, dialError: `provider reported ${outcome}`, callError: error }, keep)
}
