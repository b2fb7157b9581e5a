import { createHash } from 'node:crypto'
import type { CallRow } from '../domain/call.ts'
import { lockClaimsShared } from './locks.ts'
import { PgError, pgErrorCode, type Sql, type Tx } from './sql.ts'

// The callbacks table: every report from the provider about a call's end (a webhook delivery or
// a status look-up), with what we did with it.

export type Verdict = 'applied' | 'corrected' | 'duplicate' | 'already_final' | 'stale' | 'unknown_call' | 'rejected'

/**
 * How a delivery is known again (sql/012_callback_repeats.sql). A report that changed a call is
 * stored under `changed`: any later delivery of its webhook-id repeats it. Any other under
 * `exact`: only the same body under the same id does. An API-key callback has no id: both are
 * the SHA-256 of its body.
 */
export interface DeliveryKeys {
  changed: string
  exact: string
}

export function deliveryKeys(webhookId: string | null, body: string): DeliveryKeys {
  const hash = `sha256:${createHash('sha256').update(body).digest('hex')}`
  return webhookId === null ? { changed: hash, exact: hash } : { changed: webhookId, exact: `${webhookId} ${hash}` }
}

const keyOf = (e: Pick<CallbackEntry, 'keys' | 'verdict'>) =>
  e.keys === null ? null : e.verdict === 'applied' || e.verdict === 'corrected' ? e.keys.changed : e.keys.exact

export interface CallbackEntry {
  source: 'webhook' | 'reconcile'
  webhookId: string | null
  /** How a repeat of it is told; null for a status look-up, which is never repeated. */
  keys: DeliveryKeys | null
  callId: string | null
  dial: number | null
  providerCallId: string | null
  providerStatus: string | null
  verdict: Verdict
  reason: string | null
  /** The raw body, cut to 4 KiB; null for a malformed one (kept without its body). */
  body: string | null
}

/** Stores a report and what was done with it. A key already stored fails the statement (23505): the caller's transaction changed something it must not keep. */
export async function recordCallback(db: Sql | Tx, e: CallbackEntry): Promise<void> {
  await db`
    INSERT INTO callbacks (source, webhook_id, dedupe_key, call_id, dial, provider_call_id, provider_status, verdict, reason, body)
    VALUES (${e.source}, ${e.webhookId}, ${keyOf(e)}, ${e.callId}, ${e.dial}, ${e.providerCallId}, ${e.providerStatus}, ${e.verdict},
            ${e.reason}, ${e.body === null ? null : e.body.slice(0, 4096)})`
}

/** Stores a report that changed nothing (refused after authentication); a key already stored is counted as a repeat instead. */
export async function keepCallback(db: Sql | Tx, e: CallbackEntry): Promise<void> {
  await db`
    INSERT INTO callbacks (source, webhook_id, dedupe_key, call_id, dial, provider_call_id, provider_status, verdict, reason, body)
    VALUES (${e.source}, ${e.webhookId}, ${keyOf(e)}, ${e.callId}, ${e.dial}, ${e.providerCallId}, ${e.providerStatus}, ${e.verdict},
            ${e.reason}, ${e.body === null ? null : e.body.slice(0, 4096)})
    ON CONFLICT (dedupe_key) DO UPDATE SET repeats = callbacks.repeats + 1, last_repeat_at = now()`
}

/** A report whose key another delivery stored first, found by the unique index (two raced past countRepeat). */
export const isRepeatedDelivery = (err: unknown): boolean =>
  pgErrorCode(err) === PgError.uniqueViolation && (err as { constraint_name?: string }).constraint_name === 'callbacks_dedupe_key'

/** A delivery stored before (under either key): counted on its row. False when it is new. */
export async function countRepeat(db: Sql | Tx, keys: DeliveryKeys): Promise<boolean> {
  const rows = await db`
    UPDATE callbacks SET repeats = repeats + 1, last_repeat_at = now()
    WHERE id = (SELECT id FROM callbacks WHERE dedupe_key IN (${keys.changed}, ${keys.exact}) ORDER BY id LIMIT 1)
    RETURNING id`
  return rows.length > 0
}

/** A call locked for the provider's report about it, and whether the report was delivered before. */
export interface LockedForReport {
  call: CallRow
  /** The report's key is stored already: a delivery of it has been dealt with. */
  repeated: boolean
}

/**
 * What applying a report starts with: the call's row (FOR UPDATE), then whether the report's
 * key is stored already. That look runs after the row lock is granted, so a repeated delivery
 * that waited on the first one's lock sees it committed. Undefined when there is no such call.
 *
 * Most reports are about a call in flight, which no claim locks (claims lock waiting jobs and
 * PENDING calls, src/store/locks.ts): its row alone is enough, and such a report neither waits
 * for claims nor makes them wait. Any other call is locked under the claim lock shared, taken
 * before the row; the row locked first, in a savepoint, is let go before that lock is waited
 * for, so a claim waiting for the row is never waited for in turn.
 */
export async function lockForReport(tx: Tx, callId: string, keys: DeliveryKeys | null): Promise<LockedForReport | undefined> {
  const call = (await lockInFlight(tx, callId)) ?? (await lockUnderClaimLock(tx, callId))
  if (!call) return undefined
  if (keys === null) return { call, repeated: false }
  const seen = await tx`SELECT 1 FROM callbacks WHERE dedupe_key IN (${keys.changed}, ${keys.exact})`
  return { call, repeated: seen.length > 0 }
}

const NOT_IN_FLIGHT = Symbol('not in flight')

/** The call's row locked, if the call is in flight once locked; otherwise nothing is kept locked. */
async function lockInFlight(tx: Tx, callId: string): Promise<CallRow | undefined> {
  try {
    return await tx.savepoint(async (sp) => {
      const [call] = await sp<CallRow[]>`SELECT * FROM calls WHERE id = ${callId} FOR UPDATE`
      if (call?.status !== 'IN_PROGRESS') throw NOT_IN_FLIGHT // rolled back to the savepoint: the row lock goes with it
      return call
    })
  } catch (err) {
    if (err === NOT_IN_FLIGHT) return undefined
    throw err
  }
}

async function lockUnderClaimLock(tx: Tx, callId: string): Promise<CallRow | undefined> {
  await lockClaimsShared(tx)
  const [call] = await tx<CallRow[]>`SELECT * FROM calls WHERE id = ${callId} FOR UPDATE`
  return call
}
