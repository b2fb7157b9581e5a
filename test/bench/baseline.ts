import { PgBoss } from 'pg-boss'
import { BOSS_SCHEMA } from '../../src/store/boss.ts'

// The yardstick: pg-boss by itself on the same database, in pg-boss's own schema as ours is,
// on a queue of its own with pg-boss's defaults (no per-phone key, no call rows). What the
// service adds on top of it is what a ratio against it measures.

export const BASELINE_QUEUE = 'bench-baseline'

export async function startBareBoss(url: string, poolMax: number): Promise<PgBoss> {
  const boss = new PgBoss({ connectionString: url, schema: BOSS_SCHEMA, max: poolMax, supervise: false, schedule: false, migrate: true })
  boss.on('error', (err) => console.error('baseline pg-boss error', err))
  await boss.start()
  await boss.createQueue(BASELINE_QUEUE)
  return boss
}
