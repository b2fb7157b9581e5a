import type { CallRow } from '../../domain/call.ts'
import { completeJob } from '../calls/jobs.ts'
import { lockCall } from '../../store/calls.ts'
import { endDials, markDialAccepted } from '../../store/dials.ts'
import { emitCallEvents } from '../events/outbox.ts'
import { wakeWorkers } from '../../store/notify.ts'
import type { Sql } from '../../store/sql.ts'
import * as t from '../../store/transitions.ts'
import { retryDelayMs } from '../../domain/backoff.ts'
import type { DispatchPolicy } from './claim.ts'
import type { DialResult } from '../../provider/client.ts'
import type { Queues } from '../../store/queues.ts'

// What one dial request's answer does to its call. The rule (docs/dispatch.md):
// only the provider's acceptance or a refusal moves a call on; a request that may have placed
// the call keeps its slot and phone, and the next request goes out under the same key.

export type Recorded = 'dialed' | 'resend' | 'held' | 'failed' | 'stale'

/** The call as it was when this request was taken: `attempts` names the request, `dial` the provider call. */
export type SentRequest = Pick<CallRow, 'id' | 'attempts' | 'dial' | 'job_id'>

export async function recordDialResult(
  sql: Sql,
  queue: Queues,
  policy: DispatchPolicy,
  sent: SentRequest,
  result: DialResult,
): Promise<{ outcome: Recorded; call?: CallRow | undefined }> {
  return sql.begin(async (tx) => {
    if (result.kind === 'accepted') {
      // Any request of the dial may report the acceptance: they are all the same provider call.
      // The call, then its dial row: the order every transaction locks them in.
      const row = await t.markDialed(tx, sent.id, sent.dial, result.providerCallId, {
        timeoutSeconds: policy.callTimeoutSeconds,
        reconcileAfterSeconds: policy.reconcileAfterSeconds,
      })
      await markDialAccepted(tx, sent.id, sent.dial, result.providerCallId)
      if (row) {
        await emitCallEvents(tx, queue.deliveries, 'call.dialed', [row])
        return { outcome: 'dialed' as const, call: row }
      }
      // Its final report got here first: keep the provider's id all the same.
      await t.recordLateProviderId(tx, sent.id, sent.dial, result.providerCallId)
      return { outcome: 'stale' as const }
    }

    const call = await lockCall(tx, sent.id)
    // Another request has replaced this one (its lease lapsed), or the call has moved on.
    if (!call || call.status !== 'IN_PROGRESS' || call.attempts !== sent.attempts || call.dialed_at) {
      return { outcome: 'stale' as const }
    }
    const fail = async (error: string) => {
      const row = await t.failAttempt(tx, call.id, call.attempts, error)
      await endDials(tx, [{ callId: call.id, dial: call.dial, outcome: 'refused', error }])
      await completeJob(tx, queue.calls, call)
      await wakeWorkers(tx, true)
      // After endDials: the event's resource shows the dial refused.
      if (row) await emitCallEvents(tx, queue.deliveries, 'call.failed', [row])
      return { outcome: 'failed' as const, call: row }
    }

    if (result.kind === 'not_placed' && !result.retry) return fail(result.error)
    const unknown = result.kind === 'unknown'
    // MAX_ATTEMPTS bounds the requests of one dial; `attempts` counts them across dials.
    if (call.dial_requests < policy.maxAttempts) {
      const backoff = retryDelayMs(call.dial_requests, { baseSeconds: policy.retryBaseSeconds, maxSeconds: policy.retryMaxSeconds })
      const row = await t.scheduleResend(tx, call.id, call.attempts, {
        error: result.error,
        delayMs: Math.max(backoff, result.retryAfterMs ?? 0),
        unknown,
      })
      return { outcome: 'resend' as const, call: row }
    }
    const last = `${result.error} (attempt ${call.dial_requests} of ${policy.maxAttempts}; no attempts left)`
    if (unknown || call.outcome_unknown_at) {
      const row = await t.holdUnknown(tx, call.id, call.attempts, { error: last, unknown, timeoutSeconds: policy.callTimeoutSeconds })
      return { outcome: 'held' as const, call: row }
    }
    // Every request of the dial was refused: it was never placed, so the slot can go.
    return fail(last)
  })
}
