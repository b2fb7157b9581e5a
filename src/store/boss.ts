import type { Db as IDatabase } from 'pg-boss'
import type { Tx } from './sql.ts'

// What both of our pg-boss queues share: its schema, and running its statements in our transactions.

export const BOSS_SCHEMA = 'pgboss'

/**
 * Runs pg-boss statements on a postgres.js transaction. Prepared, as our own statements are:
 * postgres.js sends an unprepared statement with parameters in two round trips (it asks for the
 * parameters' types first), and holds back the statements queued behind it meanwhile. pg-boss's
 * statements are a few fixed texts per queue, so each connection prepares each once.
 */
export function onTx(tx: Tx): IDatabase {
  return {
    async executeSql(text, values) {
      const rows = await tx.unsafe(text, (values ?? []) as never[], { prepare: true })
      return { rows: [...rows] }
    },
  }
}

