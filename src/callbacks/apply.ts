import type { CallRow } from '../calls/model.ts'
import { recordCallback, webhookIdUsed, type Verdict } from '../db/callbacks.ts'
import { completeJob } from '../calls/jobs.ts'
import { wakeWorkers } from '../db/locks.ts'
import type { Tx } from '../db/sql.ts'
import { applyProviderFinal } from '../db/transitions.ts'
import type { FinalProviderStatus } from '../dispatch/provider.ts'
import type { CallQueue } from '../db/queue.ts'

// The provider's final word on a call, from its webhook or from a status look-up, and what it
// may change. A word is bound to one dial of one call: the webhook URL names them (with a token
// only we can make, checked before this), and once we know the provider's id for that dial the
// word must name the same id. A word for an earlier dial is kept and changes nothing; a word
// that contradicts the binding is refused.

export interface ProviderWord {
  source: 'webhook' | 'reconcile'
  webhookId: string | null
  /** The dial the word is about: the one its webhook URL named, or the one a look-up asked about. */
  dial: number
  providerCallId: string
  providerStatus: FinalProviderStatus
  durationSec: number | null
  completedAt: Date | null
  body: string
}

export interface WordOutcome {
  verdict: Verdict
  call: CallRow
  reason?: string | undefined
}

/** Applies `word` to `call`, which the caller's transaction has locked (FOR UPDATE). */
export async function applyProviderWord(tx: Tx, queue: CallQueue, call: CallRow, word: ProviderWord): Promise<WordOutcome> {
  const record = (verdict: Verdict, reason: string | null) =>
    recordCallback(tx, {
      source: word.source,
      webhookId: word.webhookId,
      callId: call.id,
      dial: word.dial,
      providerCallId: word.providerCallId,
      providerStatus: word.providerStatus,
      verdict,
      reason,
      body: word.body,
    })
  const refuse = async (verdict: Verdict, reason: string): Promise<WordOutcome> => {
    await record(verdict, reason)
    return { verdict, call, reason }
  }

  if (word.webhookId && (await webhookIdUsed(tx, word.webhookId))) return refuse('duplicate', 'webhook-id already applied')
  if (word.dial < call.dial) {
    return refuse('stale', `for dial ${word.dial}; the call is on dial ${call.dial}`)
  }
  if (word.dial > call.dial) {
    return refuse('rejected', `names dial ${word.dial}, which the call never started (it is on dial ${call.dial})`)
  }
  if (call.provider_call_id !== null && call.provider_call_id !== word.providerCallId) {
    return refuse('rejected', `names provider call ${word.providerCallId}; dial ${call.dial} is provider call ${call.provider_call_id}`)
  }

  const row = await applyProviderFinal(tx, call.id, call.dial, {
    status: word.providerStatus === 'COMPLETED' ? 'COMPLETED' : 'FAILED',
    providerStatus: word.providerStatus,
    providerCallId: word.providerCallId,
    durationSec: word.durationSec,
    endedAt: word.completedAt,
  })
  if (!row) return refuse('already_final', `call was already ${call.status}`)
  const corrected = call.status === 'FAILED'
  if (!corrected) {
    await completeJob(tx, queue, call)
    await wakeWorkers(tx)
  }
  const reason = corrected ? `we had declared it FAILED (${call.last_error ?? 'no reason'}); the provider says ${word.providerStatus}` : null
  await record(corrected ? 'corrected' : 'applied', reason)
  return { verdict: corrected ? 'corrected' : 'applied', call: row, reason: reason ?? undefined }
}
