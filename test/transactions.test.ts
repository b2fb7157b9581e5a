import t from 'tap'
import postgres from 'postgres'
import { connect, type Sql, type Tx } from '../src/store/sql.ts'
import { createTestDatabase } from './support/db.ts'

// The driver's side of "a transaction changes everything or nothing" (src/store/sql.ts, Tx). With
// postgres.js 3.4, a statement made on a transaction's handle after the transaction had failed
// ran on its own, outside any transaction, and committed; these probes failed 20 of 20 there.
// postgres.js 4 refuses such statements. Then what else 4.x changed that this service relies on.

const errorOf = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e as { code?: string; message: string })

async function table(sql: Sql, name: string) {
  await sql.unsafe(`CREATE TABLE ${name} (n int PRIMARY KEY)`)
  await sql.unsafe(`INSERT INTO ${name} VALUES (1)`)
  return async () => (await sql.unsafe<{ n: number }[]>(`SELECT n FROM ${name} ORDER BY n`)).map((r) => r.n)
}

t.test('a statement made after its transaction failed is refused, and nothing of it is kept (20 of 20)', async (t) => {
  const db = await createTestDatabase(t)
  const rows = await table(db.sql, 'late_after_failure')
  for (let run = 0; run < 20; run++) {
    let handle: Tx | undefined
    const err = await errorOf(
      db.sql.begin(async (tx) => {
        handle = tx
        await tx`INSERT INTO late_after_failure VALUES (1)` // a duplicate: the transaction fails here
      }),
    )
    t.equal(err?.code, '23505', 'the transaction fails with the duplicate')
    // A path that runs late, as an async function in a Promise.all did: it makes its statement
    // on the transaction's handle once the transaction has failed and rolled back.
    const lateErr = await errorOf(handle!`INSERT INTO late_after_failure VALUES (${100 + run})`)
    t.ok(lateErr, `the late statement was refused (${lateErr?.code})`)
  }
  t.same(await rows(), [1], 'no late statement ran outside the transaction')
})

t.test('a statement made after the callback returned (fire and forget) is refused, and the rest commits', async (t) => {
  const db = await createTestDatabase(t)
  const rows = await table(db.sql, 'fire_and_forget')
  let handle: Tx | undefined
  await db.sql.begin(async (tx) => {
    handle = tx
    await tx`INSERT INTO fire_and_forget VALUES (2)`
  })
  const lateErr = await errorOf(handle!`INSERT INTO fire_and_forget VALUES (3)`)
  t.equal(lateErr?.code, 'UNSAFE_TRANSACTION', 'refused: the transaction has ended')
  t.same(await rows(), [1, 2], 'what the transaction did, and nothing after it')
})

t.test('a failure caught inside the callback still rolls the whole transaction back', async (t) => {
  const db = await createTestDatabase(t)
  const rows = await table(db.sql, 'caught_failure')
  const err = await errorOf(
    db.sql.begin(async (tx) => {
      await tx`INSERT INTO caught_failure VALUES (2)`
      await tx`INSERT INTO caught_failure VALUES (1)`.catch(() => 'swallowed')
      await tx`INSERT INTO caught_failure VALUES (3)`.catch(() => 'swallowed too')
    }),
  )
  t.equal(err?.code, '23505', 'the swallowed failure fails the transaction')
  t.same(await rows(), [1], 'nothing of it was kept')
})

t.test('after a failed transaction its connection is outside any transaction', async (t) => {
  const db = await createTestDatabase(t)
  const rows = await table(db.sql, 'after_failure')
  const one = connect(db.url, { max: 1 })
  t.teardown(() => one.end({ timeout: 1 }))
  t.equal((await errorOf(one.begin((tx) => tx`INSERT INTO after_failure VALUES (1)`)))?.code, '23505')
  await one`INSERT INTO after_failure VALUES (2)`
  const [a] = await one<{ x: string }[]>`SELECT txid_current()::text AS x`
  const [b] = await one<{ x: string }[]>`SELECT txid_current()::text AS x`
  t.not(a!.x, b!.x, 'two statements, two transactions: autocommit')
  t.same(await rows(), [1, 2])
})

t.test('a COMMIT the server answers with ROLLBACK fails the transaction', async (t) => {
  const db = await createTestDatabase(t)
  const rows = await table(db.sql, 'rolled_back')
  // A deferred constraint fails at COMMIT, so the server rolls back there.
  await db.sql`CREATE TABLE rolled_back_ref (n int REFERENCES rolled_back (n) DEFERRABLE INITIALLY DEFERRED)`
  const err = await errorOf(
    db.sql.begin(async (tx) => {
      await tx`INSERT INTO rolled_back VALUES (2)`
      await tx`INSERT INTO rolled_back_ref VALUES (99)`
    }),
  )
  t.equal(err?.code, '23503', 'the foreign key, checked at COMMIT')
  t.same(await rows(), [1])
})

// What else postgres.js 4 changed (its README, "Upgrading from v3"): the server decides every
// parameter's type. These are the shapes this service's SQL uses.

t.test('no column of ours has a type whose meaning changed: no timestamp without time zone, date or time', async (t) => {
  const db = await createTestDatabase(t)
  const columns = await db.sql<{ table_name: string; column_name: string; data_type: string }[]>`
    SELECT table_name, column_name, data_type FROM information_schema.columns
    WHERE table_schema = 'public' AND data_type IN ('timestamp without time zone', 'date', 'time without time zone')`
  t.same(columns, [], 'every time is a timestamptz, so a Date is stored as the instant it is')
})

t.test('Dates keep their instant in any session time zone, as columns, casts and COALESCE', async (t) => {
  const db = await createTestDatabase(t)
  const when = new Date('2030-03-31T01:30:00.123Z')
  for (const zone of ['UTC', 'America/New_York', 'Asia/Kathmandu']) {
    const sql = postgres(db.url, { max: 1, onnotice: () => {}, connection: { TimeZone: zone } })
    t.teardown(() => sql.end({ timeout: 1 }))
    await sql`CREATE TEMP TABLE times (at timestamptz)`
    await sql`INSERT INTO times VALUES (${when})`
    const [row] = await sql<{ at: Date; cast: Date; coalesced: Date; later: boolean; compared: boolean }[]>`
      SELECT at, ${when}::timestamptz AS cast, COALESCE(${when}, now()) AS coalesced,
             ${when}::timestamptz + interval '1 second' > at AS later, at = ${when} AS compared
      FROM times`
    t.same([row!.at, row!.cast, row!.coalesced].map((d) => d.toISOString()), Array(3).fill(when.toISOString()), zone)
    t.same([row!.later, row!.compared], [true, true], `${zone}: arithmetic and comparison`)
  }
})

t.test('booleans in CASE and OR, arrays with a cast, numbers, JSON and null are written as the query needs', async (t) => {
  const db = await createTestDatabase(t)
  const [row] = await db.sql<{ flag: string; either: boolean; ids: string[]; n: number; doc: { a: number[] }; none: null }[]>`
    SELECT CASE WHEN ${true} THEN 'yes' ELSE 'no' END AS flag,
           (${false} OR 1 = 1) AS either,
           ${['a', 'b']}::text[] AS ids,
           ${41} + 1 AS n,
           ${db.sql.json({ a: [1, 2] } as never)}::jsonb AS doc,
           ${null}::text AS none`
  t.same(row, { flag: 'yes', either: true, ids: ['a', 'b'], n: 42, doc: { a: [1, 2] }, none: null })
  const [uuids] = await db.sql<{ n: number }[]>`SELECT cardinality(${['3f0e4c1a-7b2d-4e8f-9a61-0c5d2b7e8f10']}::uuid[]) AS n`
  t.equal(uuids!.n, 1)
  // A value that is only selected back, with no type from the query, comes back as text: the
  // service always casts such values (the bigint of count(*) too, with ::int).
  const [text] = await db.sql<{ x: unknown; c: unknown }[]>`SELECT ${true} AS x, count(*) AS c FROM (VALUES (1)) v`
  t.same(text, { x: 'true', c: '1' })
})
