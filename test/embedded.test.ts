import t from 'tap'
import { chmod, mkdtemp, readFile, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import postgres from 'postgres'
import { passwordFile, startEmbeddedPostgres } from '../src/store/embedded.ts'
import { silentLogger } from '../src/platform/log.ts'
import { freePort, runBinary } from './support/processes.ts'

// The embedded PostgreSQL (npm start without DATABASE_URL) runs as a superuser on 127.0.0.1:
// its password is made at random with its data directory and kept beside it in a file only its
// owner reads, never a fixed one any local user could log in with.

async function dataDir(t: { teardown(fn: () => Promise<void>): void }) {
  const parent = await mkdtemp(join(tmpdir(), 'orchestrator-embedded-'))
  await chmod(parent, 0o755) // as root, Postgres runs as "postgres" and must reach its data directory
  t.teardown(() => rm(parent, { recursive: true, force: true }))
  return join(parent, 'data')
}

const logsIn = async (url: string) => {
  const sql = postgres(url, { max: 1, connect_timeout: 5, onnotice: () => {} })
  try {
    await sql`SELECT 1`
    return true
  } catch {
    return false
  } finally {
    await sql.end({ timeout: 1 })
  }
}

t.test('a new data directory gets a random password, in a file only its owner reads', async (t) => {
  const dir = await dataDir(t)
  const port = await freePort()
  const db = await startEmbeddedPostgres({ dir, port }, silentLogger)
  t.teardown(() => db.stop())
  const password = (await readFile(passwordFile(dir), 'utf8')).trim()
  t.ok(password.length >= 32, 'a long one')
  t.equal((await stat(passwordFile(dir))).mode & 0o777, 0o600, 'mode 0600')
  t.ok(db.url.includes(encodeURIComponent(password)), 'the service connects with it')
  t.ok(await logsIn(db.url))
  t.notOk(await logsIn(`postgres://postgres:orchestrator@127.0.0.1:${port}/postgres`), 'the old fixed password is refused')
})

t.test('a data directory from before, with the fixed password: it gets a random one at start', async (t) => {
  const dir = await dataDir(t)
  const port = await freePort()
  const first = await startEmbeddedPostgres({ dir, port }, silentLogger)
  // As an older version left it: the fixed password, and no file beside it.
  const admin = postgres(first.url, { max: 1, onnotice: () => {} })
  await admin.unsafe(`ALTER ROLE postgres PASSWORD 'orchestrator'`)
  await admin.end()
  await first.stop()
  await rm(passwordFile(dir))

  const again = await startEmbeddedPostgres({ dir, port }, silentLogger)
  t.teardown(() => again.stop())
  const password = (await readFile(passwordFile(dir), 'utf8')).trim()
  t.not(password, 'orchestrator')
  t.ok(await logsIn(again.url), 'the new one works')
  t.notOk(await logsIn(`postgres://postgres:orchestrator@127.0.0.1:${port}/postgres`), 'the fixed one no longer does')
})

t.test('bin/orchestrator psql --url gives the embedded database’s URL, with its password', async (t) => {
  const dir = await dataDir(t)
  const port = await freePort()
  const proc = runBinary(t, 'psql', { EMBEDDED_PG_DIR: dir, EMBEDDED_PG_PORT: String(port), LOG_LEVEL: 'warn' }, ['--url'])
  t.equal(await proc.exited, 0, proc.output())
  const password = (await readFile(passwordFile(dir), 'utf8')).trim()
  t.equal(proc.output().trim(), `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/orchestrator`)
})
