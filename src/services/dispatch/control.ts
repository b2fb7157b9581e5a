import { lockClaims } from '../../store/locks.ts'
import { changeSettings, readSettings, type DispatchSettings } from '../../store/settings.ts'
import type { Sql } from '../../store/sql.ts'

// Pausing, resuming and the concurrency limit, changed at run time for every worker at once.
// A change takes the claim lock exclusively, so it waits for a claim under way and every later
// claim sees it: once the API has answered, no new call starts against it. Calls in flight are
// never touched: pausing stops new dials, a lower limit lets the in-flight count drain to it.

export interface DispatchView {
  paused: boolean
  /** The limit in force: the one set here, else MAX_CONCURRENT_CALLS. */
  maxConcurrentCalls: number
  /** Whether maxConcurrentCalls was set here (null falls back to the environment). */
  maxConcurrentCallsSet: boolean
  updatedAt: string
}

export interface DispatchControl {
  settings(): Promise<DispatchView>
  change(change: { paused?: boolean; maxConcurrentCalls?: number | null }): Promise<DispatchView>
}

export function createDispatchControl(deps: { sql: Sql; maxConcurrentCalls: number }): DispatchControl {
  const view = (s: DispatchSettings): DispatchView => ({
    paused: s.paused,
    maxConcurrentCalls: s.maxConcurrentCalls ?? deps.maxConcurrentCalls,
    maxConcurrentCallsSet: s.maxConcurrentCalls !== null,
    updatedAt: s.updatedAt.toISOString(),
  })
  return {
    settings: async () => view(await readSettings(deps.sql)),
    change: (change) =>
      deps.sql.begin(async (tx) => {
        await lockClaims(tx)
        return view(await changeSettings(tx, change))
      }),
  }
}
