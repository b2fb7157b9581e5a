import { BOSS_SCHEMA } from './boss.ts'
import { ANALYZE_LOCK } from './locks.ts'
import type { Sql } from './sql.ts'

// The planner's statistics on our tables and pg-boss's, kept fresh when autovacuum does not.
// pg-boss's fetch under key_strict_fifo joins the queued jobs with themselves: planned on
// statistics taken while the queue was empty, after a batch of 20,000 calls it ran as nested
// loops over every pair of jobs, 8 s a claim under the claim lock, which stalled every worker
// and callback behind it (npm run bench -- --only large, on a server with autovacuum off; the
// same holds on any server until its autovacuum first gets to the table). ANALYZE takes a
// sample, not the table: tens of milliseconds.

/** A table is stale when this many rows, and a fifth of its rows, changed since it was last analyzed. */
const MIN_CHANGED = 1_000

/**
 * ANALYZEs the tables of ours and of pg-boss that changed by more than a fifth (and at least
 * MIN_CHANGED rows) since their last analysis, if that was over 30 s ago. One worker at a time
 * (the others skip). Returns the tables analyzed.
 */
export async function analyzeStale(sql: Sql): Promise<string[]> {
  return sql.begin(async (tx) => {
    const [turn] = await tx<{ ours: boolean }[]>`SELECT pg_try_advisory_xact_lock(${ANALYZE_LOCK}) AS ours`
    if (!turn!.ours) return []
    const stale = await tx<{ name: string }[]>`
      SELECT format('%I.%I', schemaname, relname) AS name FROM pg_stat_user_tables
      WHERE schemaname IN (current_schema(), ${BOSS_SCHEMA})
        AND n_mod_since_analyze >= greatest(${MIN_CHANGED}, n_live_tup / 5)
        AND coalesce(greatest(last_analyze, last_autoanalyze), '-infinity') < now() - interval '30 seconds'`
    for (const { name } of stale) await tx.unsafe(`ANALYZE ${name}`)
    return stale.map((t) => t.name)
  })
}
