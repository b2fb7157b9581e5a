import { wakeWorkers } from './notify.ts'
import type { Sql, Tx } from './sql.ts'

// dispatch_settings: what operators change at run time (pause, the concurrency limit). One row,
// read by every claim inside its own transaction, so every worker obeys a change at once.

type Db = Sql | Tx

export interface DispatchSettings {
  paused: boolean
  /** Null: MAX_CONCURRENT_CALLS from the environment. */
  maxConcurrentCalls: number | null
  policyHash: string | null
  updatedAt: Date
}

export async function readSettings(db: Db): Promise<DispatchSettings> {
  const [row] = await db<{ paused: boolean; max_concurrent_calls: number | null; policy_hash: string | null; updated_at: Date }[]>`
    SELECT paused, max_concurrent_calls, policy_hash, updated_at FROM dispatch_settings`
  return { paused: row!.paused, maxConcurrentCalls: row!.max_concurrent_calls, policyHash: row!.policy_hash, updatedAt: row!.updated_at }
}

/** Changes what is given, and wakes every worker to act on it when the transaction commits. */
export async function changeSettings(tx: Tx, change: { paused?: boolean; maxConcurrentCalls?: number | null }): Promise<DispatchSettings> {
  await tx`
    UPDATE dispatch_settings SET
      paused = COALESCE(${change.paused ?? null}::boolean, paused),
      max_concurrent_calls = CASE WHEN ${change.maxConcurrentCalls !== undefined} THEN ${change.maxConcurrentCalls ?? null}::int ELSE max_concurrent_calls END,
      -- When the change took effect: callers hold the claim lock by now, and may have waited
      -- for a claim that started before them (now() would be the earlier start of this transaction).
      updated_at = clock_timestamp()`
  await wakeWorkers(tx)
  return readSettings(tx)
}

/** Records the calling policy waiting calls are now computed with. */
export async function recordPolicyHash(tx: Tx, hash: string): Promise<void> {
  await tx`UPDATE dispatch_settings SET policy_hash = ${hash}`
}
