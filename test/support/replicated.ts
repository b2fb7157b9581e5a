import { execFile } from 'node:child_process'
import { appendFile, chmod, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import postgres from 'postgres'
import { freePort, waitFor } from './processes.ts'

// A primary and a synchronous streaming replica made from it with pg_basebackup: PostgreSQL
// 15's own tools (Debian's /usr/lib/postgresql/15/bin), private to the test, never the machine's
// shared server. With synchronous_commit on and the replica named synchronous, every commit the
// primary acknowledged is on the replica: promoting it loses nothing, as a managed service's
// failover loses nothing.

const run = promisify(execFile)
export const PG_BIN = process.env.PG_BIN ?? '/usr/lib/postgresql/15/bin'

export interface ReplicatedPostgres {
  primary: { port: number }
  replica: { port: number }
  /** A URL of `database` on the server at `port`. */
  url(port: number, database?: string): string
  /** The primary's machine is lost: stopped at once, without a checkpoint. */
  losePrimary(): Promise<void>
  /** The replica becomes the primary (pg_ctl promote), and accepts writes once this resolves. */
  promoteReplica(): Promise<void>
}

/** As root, PostgreSQL runs as "postgres"; otherwise as whoever runs the test. */
const asPostgres = (command: string, args: string[]) =>
  process.getuid?.() === 0 ? run('runuser', ['-u', 'postgres', '--', join(PG_BIN, command), ...args]) : run(join(PG_BIN, command), args)

export async function startReplicatedPostgres(t: { teardown(fn: () => Promise<void> | void): void }): Promise<ReplicatedPostgres> {
  const dir = await mkdtemp(join(tmpdir(), 'orchestrator-replicated-'))
  await chmod(dir, 0o777)
  const primaryDir = join(dir, 'primary')
  const replicaDir = join(dir, 'replica')
  const primary = { port: await freePort() }
  const replica = { port: await freePort() }
  const stops: Array<() => Promise<unknown>> = []
  t.teardown(async () => {
    for (const stop of stops.reverse()) await stop().catch(() => {})
    await rm(dir, { recursive: true, force: true })
  })

  await asPostgres('initdb', ['-D', primaryDir, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--locale=C.UTF-8'])
  await appendFile(
    join(primaryDir, 'postgresql.conf'),
    `
listen_addresses = '127.0.0.1'
port = ${primary.port}
unix_socket_directories = '${dir}'
max_connections = 200
wal_level = replica
max_wal_senders = 5
synchronous_standby_names = '*'
synchronous_commit = on
fsync = off
full_page_writes = on
logging_collector = off
`,
  )
  await appendFile(join(primaryDir, 'pg_hba.conf'), 'host replication all 127.0.0.1/32 trust\n')
  const start = async (data: string, log: string) => {
    await asPostgres('pg_ctl', ['-D', data, '-l', log, '-w', '-t', '60', 'start'])
    stops.push(() => asPostgres('pg_ctl', ['-D', data, '-m', 'immediate', 'stop']))
  }
  await start(primaryDir, join(dir, 'primary.log'))

  await asPostgres('pg_basebackup', ['-h', '127.0.0.1', '-p', String(primary.port), '-U', 'postgres', '-D', replicaDir, '-R', '-X', 'stream', '-c', 'fast'])
  await writeFile(join(replicaDir, 'postgresql.auto.conf'), `primary_conninfo = 'host=127.0.0.1 port=${primary.port} user=postgres application_name=replica'\n`)
  // Once promoted it has no standby of its own: it must not wait for one to commit.
  await appendFile(join(replicaDir, 'postgresql.conf'), `\nport = ${replica.port}\nhot_standby = on\nsynchronous_standby_names = ''\n`)
  await start(replicaDir, join(dir, 'replica.log'))

  const url = (port: number, database = 'postgres') => `postgres://postgres@127.0.0.1:${port}/${database}`
  const admin = postgres(url(primary.port), { max: 1, onnotice: () => {} })
  await waitFor('the replica to stream synchronously', async () => {
    const [row] = await admin<{ state: string }[]>`SELECT sync_state AS state FROM pg_stat_replication`
    return row?.state === 'sync'
  }, 60_000)
  await admin.end({ timeout: 1 })

  return {
    primary,
    replica,
    url,
    async losePrimary() {
      await asPostgres('pg_ctl', ['-D', primaryDir, '-m', 'immediate', 'stop'])
    },
    async promoteReplica() {
      await asPostgres('pg_ctl', ['-D', replicaDir, '-w', 'promote'])
      const check = postgres(url(replica.port), { max: 1, onnotice: () => {} })
      await waitFor('the replica to accept writes', async () => {
        const [row] = await check<{ recovering: boolean }[]>`SELECT pg_is_in_recovery() AS recovering`
        return row?.recovering === false
      }, 60_000)
      await check.end({ timeout: 1 })
    },
  }
}
