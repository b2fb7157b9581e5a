import type { CallRow } from '../calls/model.ts'
import { lockClaimsShared } from './locks.ts'
import type { Sql, Tx } from './sql.ts'

// The callbacks table: every word from the provider about a call's end (a webhook delivery or
// a status look-up), with what we did with it.

export type Verdict = 'applied' | 'corrected' | 'duplicate' | 'already_final' | 'stale' | 'unknown_call' | 'rejected'

export interface CallbackEntry {
  source: 'webhook' | 'reconcile'
  webhookId: string | null
  callId: string | null
  dial: number | null
  providerCallId: string | null
  providerStatus: string | null
  verdict: Verdict
  reason: string | null
  /** The raw body, cut to 4 KiB; null for a malformed one (kept without its body). */
  body: string | null
}

export async function recordCallback(db: Sql | Tx, e: CallbackEntry): Promise<void> {
  await db`
    INSERT INTO callbacks (source, webhook_id, call_id, dial, provider_call_id, provider_status, verdict, reason, body)
    VALUES (${e.source}, ${e.webhookId}, ${e.callId}, ${e.dial}, ${e.providerCallId}, ${e.providerStatus}, ${e.verdict},
            ${e.reason}, ${e.body === null ? null : e.body.slice(0, 4096)})`
}

/** A call locked for the provider's word about it, and whether the word's webhook-id has been used. */
export interface LockedForWord {
  call: CallRow
  /** A webhook-id counts as used once it changed a call. */
  webhookIdUsed: boolean
}

/**
 * What applying a word starts with: the claim lock shared (src/db/locks.ts), then the call's
 * row (FOR UPDATE), then whether `webhookId` has already changed a call. That look runs after
 * the row lock is granted, so a duplicate delivery that waited on the first one's lock sees it
 * committed. Undefined when there is no such call.
 */
export async function lockForWord(tx: Tx, callId: string, webhookId: string | null): Promise<LockedForWord | undefined> {
  await lockClaimsShared(tx)
  const [call] = await tx<CallRow[]>`SELECT * FROM calls WHERE id = ${callId} FOR UPDATE`
  if (!call) return undefined
  if (webhookId === null) return { call, webhookIdUsed: false }
  const used = await tx`SELECT 1 FROM callbacks WHERE webhook_id = ${webhookId} AND verdict IN ('applied', 'corrected')`
  return { call, webhookIdUsed: used.length > 0 }
}
