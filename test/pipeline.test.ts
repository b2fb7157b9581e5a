import t from 'tap'
import { inOrder } from '../src/db/sql.ts'
import { createTestDatabase } from './support/db.ts'

// inOrder (src/db/sql.ts): statements of one transaction sent together, run as if awaited one
// by one. The claim's semaphore and the callback's lock order depend on it.

t.test('each statement sees what the ones before it did, and answers come back in order', async (t) => {
  const db = await createTestDatabase(t)
  const answers = await db.sql.begin(async (tx) => {
    await tx`CREATE TEMP TABLE seen (n int) ON COMMIT DROP`
    return inOrder(
      tx`INSERT INTO seen VALUES (1)`,
      tx<{ n: number }[]>`SELECT count(*)::int AS n FROM seen`,
      tx`INSERT INTO seen VALUES (2), (3)`,
      tx<{ n: number }[]>`SELECT count(*)::int AS n FROM seen`,
    )
  })
  t.equal(answers[1][0]!.n, 1)
  t.equal(answers[3][0]!.n, 3)
})

t.test('a read after a lock in the same pipeline takes its snapshot once the lock is granted', async (t) => {
  const db = await createTestDatabase(t)
  await db.sql`CREATE TABLE pipeline_rows (n int)`
  const KEY = 424242
  // Another session holds the lock and writes a row it commits only when it lets go.
  const holder = await db.sql.reserve()
  await holder`BEGIN`
  await holder`SELECT pg_advisory_xact_lock(${KEY})`
  await holder`INSERT INTO pipeline_rows VALUES (1)`
  const counted = db.sql.begin('isolation level read committed', (tx) =>
    inOrder(tx`SELECT pg_advisory_xact_lock(${KEY})`.execute(), tx<{ n: number }[]>`SELECT count(*)::int AS n FROM pipeline_rows`),
  )
  // The pipeline is waiting on the lock (its backend shows it), then the holder commits.
  for (let i = 0; i < 200; i++) {
    const [w] = await db.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`
    if (w!.n > 0) break
    await new Promise((r) => setTimeout(r, 10))
  }
  await holder`COMMIT`
  holder.release()
  const [, [row]] = await counted
  t.equal(row!.n, 1, 'the count ran after the lock, so it saw the holder’s committed row')
})

t.test('the first failure rejects it and the transaction rolls back', async (t) => {
  const db = await createTestDatabase(t)
  await db.sql`CREATE TABLE pipeline_unique (n int PRIMARY KEY)`
  await db.sql`INSERT INTO pipeline_unique VALUES (1)`
  const err = await db.sql
    .begin((tx) => inOrder(tx`INSERT INTO pipeline_unique VALUES (2)`, tx`INSERT INTO pipeline_unique VALUES (1)`, tx`INSERT INTO pipeline_unique VALUES (3)`))
    .catch((e: unknown) => e)
  t.equal((err as { code?: string }).code, '23505', 'the duplicate, not the aborted statement after it')
  const rows = await db.sql<{ n: number }[]>`SELECT n FROM pipeline_unique ORDER BY n`
  t.same(rows.map((r) => r.n), [1], 'nothing of it was kept')
})

t.test('a query sent when made, listed after one only built, is refused: it went out first', async (t) => {
  const db = await createTestDatabase(t)
  const err = await db.sql
    .begin((tx) => inOrder(tx`SELECT 1`, tx`SELECT 2`.execute()))
    .catch((e: unknown) => e)
  t.match(String(err), /out of the order written/)
  // Sent ones first, then built ones: the order written.
  const [a, b] = await db.sql.begin((tx) => inOrder(tx<{ x: number }[]>`SELECT 1 AS x`.execute(), tx<{ x: number }[]>`SELECT 2 AS x`))
  t.same([a[0]!.x, b[0]!.x], [1, 2])
})
