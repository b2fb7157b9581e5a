import type { CallResult, DialOutcome, DialRow } from '../domain/call.ts'
import type { Sql, Tx } from './sql.ts'

// The call_dials table: one row per dial (provider call) of a call, kept as it goes, so a
// person can see every attempt a call made and per-person caps can count them by phone.


type Db = Sql | Tx

export async function markDialAccepted(tx: Tx, callId: string, dial: number, providerCallId: string): Promise<void> {
  await tx`
    UPDATE call_dials SET dialed_at = COALESCE(dialed_at, now()), provider_call_id = COALESCE(provider_call_id, ${providerCallId})
    WHERE call_id = ${callId} AND dial = ${dial}`
}

/**
 * How these dials ended. A later report may overwrite `unknown` (our timeout) with the provider's
 * own outcome, as it corrects the call; the provider's report itself is never overwritten.
 */
export async function endDials(
  tx: Tx,
  ends: Array<{ callId: string; dial: number; outcome: DialOutcome; error?: string | null; providerCallId?: string | null }>,
): Promise<void> {
  if (ends.length === 0) return
  await tx`
    UPDATE call_dials d SET
      outcome = e.outcome, error = e.error, ended_at = now(),
      provider_call_id = COALESCE(d.provider_call_id, e.provider_call_id)
    FROM unnest(${ends.map((e) => e.callId)}::uuid[], ${ends.map((e) => e.dial)}::int[], ${ends.map((e) => e.outcome)}::text[],
                ${ends.map((e) => e.error ?? null)}::text[], ${ends.map((e) => e.providerCallId ?? null)}::text[])
      AS e(call_id, dial, outcome, error, provider_call_id)
    WHERE d.call_id = e.call_id AND d.dial = e.dial AND (d.outcome IS NULL OR d.outcome IN ('unknown', 'refused'))`
}

export async function dialsOf(db: Db, callIds: string[]): Promise<DialRow[]> {
  if (callIds.length === 0) return []
  return [...(await db<DialRow[]>`SELECT * FROM call_dials WHERE call_id = ANY(${callIds}::uuid[]) ORDER BY call_id, dial`)]
}

/** Dials of this call that ended with `outcome`: what an outcome retry policy counts. */
export async function dialsEndedWith(db: Db, callId: string, outcome: DialOutcome): Promise<number> {
  const [row] = await db<{ n: number }[]>`SELECT count(*)::int AS n FROM call_dials WHERE call_id = ${callId} AND outcome = ${outcome}`
  return row!.n
}

/**
 * When a phone may be dialed again under per-person caps (at most `perDay` dials in any 24
 * hours and `perWeek` in any 7 days, across all its calls; 0 means no cap): null if it may be
 * now. The cap-th newest dial must have left the window, so that is when it may.
 */
export async function capOpensAt(db: Db, phone: string, caps: { perDay: number; perWeek: number }): Promise<Date | null> {
  if (caps.perDay <= 0 && caps.perWeek <= 0) return null
  const [row] = await db<{ at: Date | null }[]>`
    SELECT GREATEST(
      ${caps.perDay > 0 ? db`(SELECT started_at + interval '24 hours' FROM call_dials
         WHERE phone = ${phone} AND started_at > now() - interval '24 hours'
         ORDER BY started_at DESC OFFSET ${caps.perDay - 1} LIMIT 1)` : db`NULL::timestamptz`},
      ${caps.perWeek > 0 ? db`(SELECT started_at + interval '7 days' FROM call_dials
         WHERE phone = ${phone} AND started_at > now() - interval '7 days'
         ORDER BY started_at DESC OFFSET ${caps.perWeek - 1} LIMIT 1)` : db`NULL::timestamptz`}) AS at`
  return row?.at ?? null
}

/** When the dial was first claimed (its first request went out after); undefined if it has no row. */
export async function dialStartedAt(db: Db, callId: string, dial: number): Promise<Date | undefined> {
  const [row] = await db<{ started_at: Date }[]>`SELECT started_at FROM call_dials WHERE call_id = ${callId} AND dial = ${dial}`
  return row?.started_at
}

/**
 * What the provider said a dial ended with, kept on its row if the report names that dial's
 * provider call. What it brings replaces what is there; what it leaves out keeps what an
 * earlier report brought. True when anything changed.
 */
export async function recordResult(tx: Tx, callId: string, dial: number, providerCallId: string, result: CallResult): Promise<boolean> {
  const rows = await tx`
    WITH next AS (
      SELECT d.call_id, d.dial,
        COALESCE(${result.endReason}, d.end_reason) AS end_reason,
        COALESCE(${result.transcript}, d.transcript) AS transcript,
        COALESCE(${result.recordingUrl}, d.recording_url) AS recording_url,
        COALESCE(${result.summary}, d.summary) AS summary,
        COALESCE(${result.analysis === null ? null : tx.json(result.analysis as never)}::jsonb, d.analysis) AS analysis
      FROM call_dials d
      WHERE d.call_id = ${callId} AND d.dial = ${dial} AND d.provider_call_id = ${providerCallId})
    UPDATE call_dials d SET end_reason = n.end_reason, transcript = n.transcript, recording_url = n.recording_url, summary = n.summary, analysis = n.analysis
    FROM next n
    WHERE d.call_id = n.call_id AND d.dial = n.dial
      AND (d.end_reason, d.transcript, d.recording_url, d.summary, d.analysis) IS DISTINCT FROM (n.end_reason, n.transcript, n.recording_url, n.summary, n.analysis)
    RETURNING 1`
  return rows.length > 0
}
