import { randomBytes, randomUUID } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import postgres from 'postgres'
import t from 'tap'
import { migrate, readMigrations } from '../src/store/migrate.ts'
import { connect, pgErrorCode } from '../src/store/sql.ts'
import { createTestDatabase } from './support/db.ts'
import { withDatabase } from './support/template.ts'

t.test('migrate() on an up-to-date database applies nothing', async (t) => {
  const db = await createTestDatabase(t)
  const all = await readMigrations()
  t.ok(all.length >= 2)
  const before = await db.sql<{ version: number }[]>`SELECT version FROM schema_migrations ORDER BY version`
  t.same(before.map((r) => r.version), all.map((m) => m.version), 'the template is fully migrated')
  t.same(await migrate(db.sql), [])
  t.same(await migrate(db.sql), [])
  const after = await db.sql<{ version: number }[]>`SELECT version FROM schema_migrations ORDER BY version`
  t.same(after.map((r) => r.version), all.map((m) => m.version))
})

t.test('concurrent migrate() on an empty database applies each version exactly once', async (t) => {
  const server = process.env.TEST_SERVER_URL
  if (!server) throw new Error('run with npm test')
  const name = `orchestrator_test_empty_${randomBytes(6).toString('hex')}`
  const admin = postgres(withDatabase(server, 'postgres'), { max: 1, onnotice: () => {} })
  await admin.unsafe(`CREATE DATABASE ${name}`)
  const pools = Array.from({ length: 5 }, () => connect(withDatabase(server, name), { max: 2 }))
  t.teardown(async () => {
    await Promise.all(pools.map((p) => p.end({ timeout: 5 })))
    await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
    await admin.end()
  })

  const expected = (await readMigrations()).map((m) => m.version)
  // The first run on a fresh database races on CREATE TABLE schema_migrations too.
  const results = await Promise.all(pools.map((pool) => migrate(pool)))
  const applied = results.flat().sort((a, b) => a - b)
  t.same(applied, expected, 'every version applied once across all callers')
  t.equal(results.filter((r) => r.length > 0).length, 1, 'one caller applied everything, the others nothing')

  const rows = await pools[0]!<{ version: number }[]>`SELECT version FROM schema_migrations ORDER BY version`
  t.same(rows.map((r) => r.version), expected)
  const [tbl] = await pools[0]!<{ n: number }[]>`SELECT count(*)::int AS n FROM information_schema.tables WHERE table_name IN ('calls', 'workers', 'callbacks')`
  t.equal(tbl!.n, 3)
  t.same(await migrate(pools[1]!), [], 'and a later run applies nothing')
})

t.test('readMigrations', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'orchestrator-migrations-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))

  await writeFile(join(dir, '001_a.sql'), 'SELECT 1;')
  await writeFile(join(dir, '003_b.sql'), 'SELECT 3;')
  await t.rejects(readMigrations(dir + '/'), /003_b\.sql.*expected number 002/)

  await writeFile(join(dir, '002_c.sql'), 'SELECT 2;')
  const ok = await readMigrations(dir + '/')
  t.same(
    ok.map((m) => [m.version, m.name, m.text]),
    [
      [1, 'a', 'SELECT 1;'],
      [2, 'c', 'SELECT 2;'],
      [3, 'b', 'SELECT 3;'],
    ],
  )

  await writeFile(join(dir, '004_Bad-Name.sql'), 'SELECT 4;')
  await t.rejects(readMigrations(dir + '/'), /004_Bad-Name\.sql.*NNN_lowercase_words/)
})

t.test('a gap stops migrate() before it touches the database', async (t) => {
  const db = await createTestDatabase(t)
  const dir = await mkdtemp(join(tmpdir(), 'orchestrator-migrations-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  await writeFile(join(dir, '001_a.sql'), 'CREATE TABLE gap_a (x int);')
  await writeFile(join(dir, '003_b.sql'), 'CREATE TABLE gap_b (x int);')
  await t.rejects(migrate(db.sql, dir + '/'), /no gaps/)
  const [row] = await db.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM information_schema.tables WHERE table_name LIKE 'gap_%'`
  t.equal(row!.n, 0)
})

t.test('a database newer than the build is refused', async (t) => {
  const db = await createTestDatabase(t)
  const dir = await mkdtemp(join(tmpdir(), 'orchestrator-migrations-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  await writeFile(join(dir, '001_a.sql'), 'SELECT 1;')
  await t.rejects(migrate(db.sql, dir + '/'), /newer version/)
})

t.test('constraints reject rows that contradict themselves', async (t) => {
  const db = await createTestDatabase(t)
  const sql = db.sql
  const code = async (p: Promise<unknown>) => {
    try {
      await p
      return 'ok'
    } catch (err) {
      return pgErrorCode(err)
    }
  }
  const constraint = async (p: Promise<unknown>) => {
    try {
      await p
      return 'ok'
    } catch (err) {
      return (err as { constraint_name?: string }).constraint_name
    }
  }

  // A valid baseline in each state, to show the failures below come from the one broken field.
  t.equal(await code(sql`INSERT INTO calls (phone, script_id) VALUES ('+15550000001', 's')`), 'ok')
  t.equal(
    await code(sql`INSERT INTO calls (phone, script_id, status, attempts, dial, dial_requests, started_at, next_attempt_at) VALUES ('+15550000002', 's', 'IN_PROGRESS', 1, 1, 1, now(), now())`),
    'ok',
  )
  t.equal(
    await code(sql`INSERT INTO calls (phone, script_id, status, attempts, dial, dial_requests, started_at, ended_at) VALUES ('+15550000003', 's', 'COMPLETED', 1, 1, 1, now(), now())`),
    'ok',
  )
  t.equal(
    await code(sql`INSERT INTO calls (phone, script_id, status, attempts, dial, dial_requests, started_at, ended_at, last_error) VALUES ('+15550000003', 's', 'FAILED', 1, 1, 1, now(), now(), 'busy')`),
    'ok',
  )

  // One call in flight per phone.
  t.equal(
    await code(sql`INSERT INTO calls (phone, script_id, status, attempts, dial, dial_requests, started_at, next_attempt_at) VALUES ('+15550000002', 's', 'IN_PROGRESS', 1, 1, 1, now(), now())`),
    '23505',
    'two IN_PROGRESS calls for one phone',
  )
  t.equal(
    await constraint(sql`INSERT INTO calls (phone, script_id, status, attempts, dial, dial_requests, started_at, next_attempt_at) VALUES ('+15550000002', 's', 'IN_PROGRESS', 1, 1, 1, now(), now())`),
    'calls_one_in_flight_per_phone',
  )
  // …and the same via UPDATE of a PENDING call for that phone.
  const [pending] = await sql<{ id: string }[]>`INSERT INTO calls (phone, script_id) VALUES ('+15550000002', 's') RETURNING id`
  t.equal(
    await code(sql`UPDATE calls SET status = 'IN_PROGRESS', attempts = 1, dial = 1, dial_requests = 1, started_at = now(), next_attempt_at = now() WHERE id = ${pending!.id}`),
    '23505',
  )

  // Where a row breaks two constraints, Postgres reports either one.
  const checks: Array<[string, Promise<unknown>, string | string[]]> = [
    [
      'IN_PROGRESS without started_at',
      sql`INSERT INTO calls (phone, script_id, status, attempts, dial, dial_requests, next_attempt_at) VALUES ('+15550000010', 's', 'IN_PROGRESS', 1, 1, 1, now())`,
      ['calls_started_iff_attempted', 'calls_in_progress_claimed'],
    ],
    [
      'IN_PROGRESS with no attempt',
      sql`INSERT INTO calls (phone, script_id, status, attempts, started_at, next_attempt_at) VALUES ('+15550000011', 's', 'IN_PROGRESS', 0, now(), now())`,
      ['calls_started_iff_attempted', 'calls_in_progress_claimed'],
    ],
    [
      'FAILED without last_error',
      sql`INSERT INTO calls (phone, script_id, status, attempts, dial, dial_requests, started_at, ended_at) VALUES ('+15550000012', 's', 'FAILED', 1, 1, 1, now(), now())`,
      'calls_failed_has_error',
    ],
    [
      'COMPLETED without ended_at',
      sql`INSERT INTO calls (phone, script_id, status, attempts, dial, dial_requests, started_at) VALUES ('+15550000013', 's', 'COMPLETED', 1, 1, 1, now())`,
      'calls_ended_iff_terminal',
    ],
    [
      'PENDING with ended_at',
      sql`INSERT INTO calls (phone, script_id, ended_at) VALUES ('+15550000014', 's', now())`,
      'calls_ended_iff_terminal',
    ],
    [
      'PENDING but dialed',
      sql`INSERT INTO calls (phone, script_id, attempts, dial, dial_requests, started_at, dialed_at) VALUES ('+15550000015', 's', 1, 1, 1, now(), now())`,
      'calls_dialed_only_in_flight',
    ],
    ['phone not E.164', sql`INSERT INTO calls (phone, script_id) VALUES ('0501234567', 's')`, 'calls_phone_e164'],
    ['empty script_id', sql`INSERT INTO calls (phone, script_id) VALUES ('+15550000016', '')`, 'calls_script_id_length'],
    [
      'metadata not an object',
      sql`INSERT INTO calls (phone, script_id, metadata) VALUES ('+15550000017', 's', '[1]'::jsonb)`,
      'calls_metadata_object',
    ],
    ['negative attempts', sql`INSERT INTO calls (phone, script_id, attempts) VALUES ('+15550000018', 's', -1)`, 'calls_attempts_nonnegative'],
    [
      'a dial without an attempt',
      sql`INSERT INTO calls (phone, script_id, dial) VALUES ('+15550000024', 's', 1)`,
      ['calls_dial_iff_attempted', 'calls_dial_requests_in_dial'],
    ],
    [
      'a request under way for a call the provider already accepted',
      sql`INSERT INTO calls (phone, script_id, status, attempts, dial, dial_requests, started_at, dialed_at, timeout_at, next_attempt_at, claimed_by)
          VALUES ('+15550000025', 's', 'IN_PROGRESS', 1, 1, 1, now(), now(), now(), now(), 1)`,
      'calls_sending_has_lease',
    ],
    [
      'a request under way without a lease',
      sql`INSERT INTO calls (phone, script_id, status, attempts, dial, dial_requests, started_at, claimed_by, outcome_unknown_at, timeout_at)
          VALUES ('+15550000026', 's', 'IN_PROGRESS', 1, 1, 1, now(), 1, now(), now())`,
      'calls_sending_has_lease',
    ],
    [
      'dialed and in flight without a timeout',
      sql`INSERT INTO calls (phone, script_id, status, attempts, dial, dial_requests, started_at, dialed_at)
          VALUES ('+15550000027', 's', 'IN_PROGRESS', 1, 1, 1, now(), now())`,
      'calls_dialed_has_timeout',
    ],
    [
      'in flight with nothing to send, not dialed, and no unknown outcome to wait out',
      sql`INSERT INTO calls (phone, script_id, status, attempts, dial, dial_requests, started_at, timeout_at)
          VALUES ('+15550000028', 's', 'IN_PROGRESS', 1, 1, 1, now(), now())`,
      'calls_held_has_timeout',
    ],
    [
      'idempotency key without hash',
      sql`INSERT INTO calls (phone, script_id, idempotency_key) VALUES ('+15550000019', 's', 'k')`,
      'calls_idempotency_has_hash',
    ],
  ]
  for (const [what, query, name] of checks) {
    const err = await query.then(
      () => undefined,
      (e: unknown) => e as { code?: string; constraint_name?: string },
    )
    t.equal(err?.code, '23514', `${what}: check violation`)
    const names = typeof name === 'string' ? [name] : name
    t.ok(names.includes(err?.constraint_name ?? ''), `${what}: ${names.join(' or ')} (got ${err?.constraint_name})`)
  }

  // Unique idempotency keys and provider call ids.
  t.equal(await code(sql`INSERT INTO calls (phone, script_id, idempotency_key, request_hash) VALUES ('+15550000020', 's', 'k1', 'h')`), 'ok')
  t.equal(await code(sql`INSERT INTO calls (phone, script_id, idempotency_key, request_hash) VALUES ('+15550000021', 's', 'k1', 'h')`), '23505')
  const pid = randomUUID()
  t.equal(await code(sql`INSERT INTO calls (phone, script_id, provider_call_id) VALUES ('+15550000022', 's', ${pid})`), 'ok')
  t.equal(await code(sql`INSERT INTO calls (phone, script_id, provider_call_id) VALUES ('+15550000023', 's', ${pid})`), '23505')

  const [count] = await sql<{ n: number }[]>`SELECT count(*)::int AS n FROM calls`
  t.equal(count!.n, 7, 'only the valid rows were written')
})

t.test('012 folds the duplicate rows stored before it into the row each repeated', async (t) => {
  const server = process.env.TEST_SERVER_URL
  if (!server) throw new Error('run with npm test')
  const name = `orchestrator_test_012_${randomBytes(6).toString('hex')}`
  const admin = postgres(withDatabase(server, 'postgres'), { max: 1, onnotice: () => {} })
  await admin.unsafe(`CREATE DATABASE ${name}`)
  const sql = connect(withDatabase(server, name), { max: 2 })
  const dir = await mkdtemp(join(tmpdir(), 'orchestrator-migrations-'))
  t.teardown(async () => {
    await sql.end({ timeout: 5 })
    await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
    await admin.end()
    await rm(dir, { recursive: true, force: true })
  })
  // The database as 011 left it, with callbacks as they were stored then.
  for (const m of (await readMigrations()).filter((m) => m.version <= 11)) {
    await writeFile(join(dir, `${String(m.version).padStart(3, '0')}_${m.name}.sql`), m.text)
  }
  await migrate(sql, `${dir}/`)
  await sql`
    INSERT INTO callbacks (received_at, source, webhook_id, verdict, reason) VALUES
      ('2026-01-01T10:00:00Z', 'webhook', 'msg_a', 'applied', NULL),
      ('2026-01-01T10:01:00Z', 'webhook', 'msg_a', 'duplicate', 'webhook-id already applied'),
      ('2026-01-01T10:02:00Z', 'webhook', 'msg_a', 'duplicate', 'webhook-id already applied'),
      ('2026-01-01T10:03:00Z', 'webhook', 'msg_b', 'stale', 'for dial 1'),
      ('2026-01-01T10:04:00Z', 'webhook', 'msg_b', 'stale', 'for dial 1'),
      ('2026-01-01T10:05:00Z', 'reconcile', NULL, 'applied', NULL)`
  const twelve = (await readMigrations()).find((m) => m.version === 12)!
  await writeFile(join(dir, `012_${twelve.name}.sql`), twelve.text)
  t.same(await migrate(sql, `${dir}/`), [12])
  const rows = await sql<{ webhook_id: string | null; verdict: string; dedupe_key: string | null; repeats: number; last_repeat_at: Date | null }[]>`
    SELECT webhook_id, verdict, dedupe_key, repeats, last_repeat_at FROM callbacks ORDER BY id`
  t.same(rows, [
    { webhook_id: 'msg_a', verdict: 'applied', dedupe_key: 'msg_a', repeats: 2, last_repeat_at: new Date('2026-01-01T10:02:00Z') },
    { webhook_id: 'msg_b', verdict: 'stale', dedupe_key: null, repeats: 0, last_repeat_at: null },
    { webhook_id: 'msg_b', verdict: 'stale', dedupe_key: null, repeats: 0, last_repeat_at: null },
    { webhook_id: null, verdict: 'applied', dedupe_key: null, repeats: 0, last_repeat_at: null },
  ], 'the duplicates counted on the applied row; rows that changed no call left as they were')
})
