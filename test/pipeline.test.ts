import t, { type Test } from 'tap'
import net from 'node:net'
import postgres from 'postgres'
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

// BEGIN sent with the transaction's first statements: patches/postgres+3.4.9.patch changes
// postgres.js's sql.begin, which otherwise waits for BEGIN's answer before running the callback.

/** A pool of one connection whose socket counts round trips: sends that follow an answer. Ended with the test. */
function countingPool(t: Test, url: string) {
  const { hostname, port } = new URL(url)
  const wire = { trips: 0, answered: true }
  const socket = () =>
    new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect(Number(port || 5432), hostname === 'localhost' ? '127.0.0.1' : hostname)
      const write = s.write.bind(s) as (...args: unknown[]) => boolean
      s.write = ((...args: unknown[]) => {
        if (wire.answered) wire.trips++
        wire.answered = false
        return write(...args)
      }) as typeof s.write
      s.on('data', () => (wire.answered = true))
      s.once('error', reject).once('connect', () => resolve(s))
    })
  // \`socket\` is a documented option the type definitions leave out.
  const sql = postgres(url, { max: 1, socket, onnotice: () => {} } as postgres.Options<{}>)
  t.teardown(() => sql.end({ timeout: 1 }))
  return { sql, wire }
}

/** Whether this pool's connection is outside any transaction: two statements, two transactions. */
async function autocommits(sql: postgres.Sql): Promise<boolean> {
  const [[first], [second]] = [await sql<{ x: string }[]>`SELECT txid_current()::text AS x`, await sql<{ x: string }[]>`SELECT txid_current()::text AS x`]
  return first!.x !== second!.x
}

t.test('a transaction sends BEGIN with its first statements, and COMMIT after them: two round trips', async (t) => {
  const db = await createTestDatabase(t)
  const { sql, wire } = countingPool(t, db.url)
  await sql`SELECT 1 AS x`
  await sql`SELECT 2 AS y`
  wire.trips = 0
  const [row] = await sql.begin((tx) => tx<{ x: number }[]>`SELECT 1 AS x`)
  t.equal(row!.x, 1)
  t.equal(wire.trips, 2, 'BEGIN and the SELECT in one, COMMIT in the other')
  wire.trips = 0
  const [a, b] = await sql.begin('isolation level read committed', (tx) => inOrder(tx<{ x: number }[]>`SELECT 1 AS x`, tx<{ y: number }[]>`SELECT 2 AS y`))
  t.same([a[0]!.x, b[0]!.y], [1, 2])
  t.equal(wire.trips, 2, 'with inOrder as well')
})

t.test('transactions waiting for the only connection each run whole, one after the other', async (t) => {
  const db = await createTestDatabase(t)
  await db.sql`CREATE TABLE pipeline_turns (tx int, n int)`
  const { sql } = countingPool(t, db.url)
  // Ten at once on one connection: nine wait for it with BEGIN queued. Each writes twice with a
  // pause between and counts what the others committed: whole transactions only, never half.
  const seen = await Promise.all(
    Array.from({ length: 10 }, (_, i) =>
      sql.begin(async (tx) => {
        const [before] = await tx<{ n: number }[]>`SELECT count(*)::int AS n FROM pipeline_turns`
        await tx`INSERT INTO pipeline_turns VALUES (${i}, 1)`
        await new Promise((r) => setTimeout(r, 5))
        await tx`INSERT INTO pipeline_turns VALUES (${i}, 2)`
        return before!.n
      }),
    ),
  )
  t.same([...seen].sort((x, y) => x - y), Array.from({ length: 10 }, (_, i) => 2 * i), 'each saw only whole transactions before it')
  const [row] = await db.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM pipeline_turns`
  t.equal(row!.n, 20)
})

t.test('a failed first statement rolls back, and the connection is left outside any transaction', async (t) => {
  const db = await createTestDatabase(t)
  await db.sql`CREATE TABLE pipeline_first (n int PRIMARY KEY)`
  await db.sql`INSERT INTO pipeline_first VALUES (1)`
  const { sql } = countingPool(t, db.url)
  const err = await sql.begin((tx) => tx`INSERT INTO pipeline_first VALUES (1)`).catch((e: unknown) => e)
  t.equal((err as { code?: string }).code, '23505')
  // The same (only) connection: in an aborted transaction this would fail with 25P02, and
  // inside an open one the insert below would vanish with it.
  await sql`INSERT INTO pipeline_first VALUES (2)`
  t.ok(await autocommits(sql), 'autocommit: each statement a transaction of its own')
  const rows = await db.sql<{ n: number }[]>`SELECT n FROM pipeline_first ORDER BY n`
  t.same(rows.map((r) => r.n), [1, 2])
})

// tx.commit() (the same patch): COMMIT sent behind the last statements, not after their answers.

t.test('a transaction that sends its own COMMIT behind its statements takes one round trip', async (t) => {
  const db = await createTestDatabase(t)
  await db.sql`CREATE TABLE pipeline_commit (n int PRIMARY KEY)`
  const { sql, wire } = countingPool(t, db.url)
  await sql`SELECT 1`
  wire.trips = 0
  const [inserted] = await sql.begin((tx) => inOrder(tx<{ n: number }[]>`INSERT INTO pipeline_commit VALUES (1) RETURNING n`, tx.commit()))
  t.equal(inserted[0]!.n, 1)
  t.equal(wire.trips, 1, 'BEGIN, the INSERT and COMMIT in one')
  const rows = await db.sql<{ n: number }[]>`SELECT n FROM pipeline_commit`
  t.same(rows.map((r) => r.n), [1], 'committed, as seen from another connection')
})

t.test('a failed statement ahead of the COMMIT rejects with its own error and keeps nothing', async (t) => {
  const db = await createTestDatabase(t)
  await db.sql`CREATE TABLE pipeline_commit (n int PRIMARY KEY)`
  await db.sql`INSERT INTO pipeline_commit VALUES (1)`
  const { sql } = countingPool(t, db.url)
  const err = await sql
    .begin((tx) => inOrder(tx`INSERT INTO pipeline_commit VALUES (2)`, tx`INSERT INTO pipeline_commit VALUES (1)`, tx.commit()))
    .catch((e: unknown) => e)
  t.equal((err as { code?: string }).code, '23505', 'the duplicate, not the aborted COMMIT behind it')
  t.ok(await autocommits(sql), 'the only connection is back outside any transaction')
  const rows = await db.sql<{ n: number }[]>`SELECT n FROM pipeline_commit ORDER BY n`
  t.same(rows.map((r) => r.n), [1], 'the first insert rolled back with the rest')
})

t.test('a failure the callback swallowed still fails the transaction, COMMIT or not', async (t) => {
  const db = await createTestDatabase(t)
  await db.sql`CREATE TABLE pipeline_commit (n int PRIMARY KEY)`
  await db.sql`INSERT INTO pipeline_commit VALUES (1)`
  const err = await db.sql
    .begin((tx) =>
      inOrder(
        tx`INSERT INTO pipeline_commit VALUES (2)`.execute(),
        tx`INSERT INTO pipeline_commit VALUES (1)`.catch(() => 'ignored'),
        tx.commit(),
      ),
    )
    .catch((e: unknown) => e)
  t.equal((err as { code?: string }).code, '23505', 'rejected with the failure it swallowed: no COMMIT is taken for success')
  const rows = await db.sql<{ n: number }[]>`SELECT n FROM pipeline_commit ORDER BY n`
  t.same(rows.map((r) => r.n), [1])
})

t.test('nothing can be sent after the COMMIT: it would run outside the transaction', async (t) => {
  const db = await createTestDatabase(t)
  await db.sql`CREATE TABLE pipeline_commit (n int PRIMARY KEY)`
  const err = await db.sql
    .begin(async (tx) => {
      await inOrder(tx`INSERT INTO pipeline_commit VALUES (1)`, tx.commit())
      await tx`INSERT INTO pipeline_commit VALUES (2)`
    })
    .catch((e: unknown) => e)
  t.equal((err as { code?: string }).code, 'COMMIT_SENT')
  const rows = await db.sql<{ n: number }[]>`SELECT n FROM pipeline_commit ORDER BY n`
  t.same(rows.map((r) => r.n), [1], 'the committed part stays; the late statement never ran')
})
