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

/** A webhook-id counts as used once it changed a call. */
export async function webhookIdUsed(tx: Tx, webhookId: string): Promise<boolean> {
  const rows = await tx`SELECT 1 FROM callbacks WHERE webhook_id = ${webhookId} AND verdict IN ('applied', 'corrected')`
  return rows.length > 0
}
