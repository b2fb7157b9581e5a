import t from 'tap'
import { touchAndTakeSweepTurn } from '../src/store/workers.ts'
import { createTestDatabase } from './support/db.ts'
import { registerWorker } from './support/harness.ts'

// The safety sweeps run once per poll interval between all workers, not once per worker
// (sql/021_sweep_turns.sql): eight workers used to do eight times the sweeping for the same
// work. Every worker is still seen alive at every poll.

t.test('ten workers asking at once: one gets the turn, every one is seen, and the next turn comes after the interval', async (t) => {
  const db = await createTestDatabase(t)
  const workers = await Promise.all(Array.from({ length: 10 }, () => registerWorker(db)))
  await db.sql`UPDATE workers SET last_seen_at = now() - interval '1 hour'`
  const ask = () => Promise.all(workers.map((id) => touchAndTakeSweepTurn(db.sql, id, 60_000)))

  const first = await ask()
  t.equal(first.filter(Boolean).length, 1, 'one turn among ten at once')
  const [turn] = await db.sql<{ worker_id: number }[]>`SELECT worker_id FROM sweep_turns`
  t.equal(turn!.worker_id, workers[first.indexOf(true)], 'the row names the worker that took it')
  const stale = await db.sql`SELECT id FROM workers WHERE last_seen_at < now() - interval '1 minute'`
  t.equal(stale.length, 0, 'every worker that asked was seen')

  t.equal((await ask()).filter(Boolean).length, 0, 'none again within the interval')
  await db.sql`UPDATE sweep_turns SET last_at = last_at - interval '61 seconds'`
  t.equal((await ask()).filter(Boolean).length, 1, 'one once the interval has passed')
})

t.test('the interval is the asking worker\'s own, and a turn taken by a worker that then stopped passes to the next to ask', async (t) => {
  const db = await createTestDatabase(t)
  const [a, b] = [await registerWorker(db), await registerWorker(db)]
  t.ok(await touchAndTakeSweepTurn(db.sql, a, 60_000), 'a takes the first turn (and then stops)')
  await db.sql`UPDATE sweep_turns SET last_at = now() - interval '2 seconds'`
  t.notOk(await touchAndTakeSweepTurn(db.sql, b, 5_000), 'b, polling every 5 s, waits for its interval')
  t.ok(await touchAndTakeSweepTurn(db.sql, b, 1_000), 'b, polling every second, sweeps in its place')
})
