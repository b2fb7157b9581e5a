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

/** A shared setting as another process recorded it. */
export interface RecordedSetting {
  value: unknown
  setBy: string
  setAt: Date
}

/**
 * Records `value` as this process's view of the shared setting `name` and answers the view
 * recorded before, when it differs (sql/016_shared_settings.sql). The last process to start
 * is the one recorded: the next to start compares with it.
 */
export async function recordSharedSetting(db: Db, name: string, value: unknown, setBy: string): Promise<RecordedSetting | undefined> {
  const [row] = await db<{ value: unknown; set_by: string; set_at: Date; differs: boolean }[]>`
    WITH before AS (SELECT value, set_by, set_at FROM shared_settings WHERE name = ${name}),
    recorded AS (
      INSERT INTO shared_settings (name, value, set_by) VALUES (${name}, ${db.json(value as never)}, ${setBy})
      ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, set_by = EXCLUDED.set_by, set_at = now()
    )
    SELECT value, set_by, set_at, value IS DISTINCT FROM ${db.json(value as never)}::jsonb AS differs FROM before`
  return row?.differs ? { value: row.value, setBy: row.set_by, setAt: row.set_at } : undefined
}
