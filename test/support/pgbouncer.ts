import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import postgres from 'postgres'
import { freePort, waitFor } from './processes.ts'

// Debian's PgBouncer in front of a test's database server, in transaction mode (what managed
// Postgres services offer), standing in for a pooler or a managed service's one endpoint.
// `retarget` points it at another server and reloads it, as a failover moves the endpoint.

export const PGBOUNCER = process.env.PGBOUNCER_PATH ?? '/usr/sbin/pgbouncer'

export interface Pgbouncer {
  port: number
  /** The URL of `database` through the pooler. */
  url(database: string): string
  /** Points every database at host:port, then reloads; new server connections go there. */
  retarget(host: string, port: number): Promise<void>
  /** PAUSE (wait for transactions to end, then hold new ones) or RESUME, on its admin console. */
  admin(command: string): Promise<unknown[]>
  /** Its log so far. */
  log(): Promise<string>
  stop(): Promise<void>
}

/** Starts PgBouncer for the server of `upstreamUrl`, in transaction mode unless told otherwise. */
export async function startPgbouncer(
  t: { teardown(fn: () => Promise<void> | void): void },
  upstreamUrl: string,
  options: { poolMode?: 'transaction' | 'session' } = {},
): Promise<Pgbouncer> {
  if (!existsSync(PGBOUNCER)) throw new Error(`PgBouncer at ${PGBOUNCER} (apt-get install pgbouncer; .ci/run does)`)
  const upstream = new URL(upstreamUrl)
  const user = decodeURIComponent(upstream.username || 'postgres')
  const password = decodeURIComponent(upstream.password)
  const dir = await mkdtemp(join(tmpdir(), 'orchestrator-pgbouncer-'))
  await chmod(dir, 0o777) // as root it runs as "postgres", which must write its log there
  const port = await freePort()
  const ini = (host: string, serverPort: number) => `[databases]
* = host=${host} port=${serverPort}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${port}
unix_socket_dir =
auth_type = trust
auth_file = ${join(dir, 'users.txt')}
admin_users = ${user}
pool_mode = ${options.poolMode ?? 'transaction'}
max_client_conn = 1000
default_pool_size = 20
server_login_retry = 1
ignore_startup_parameters = extra_float_digits,options
logfile = ${join(dir, 'pgbouncer.log')}
`
  await writeFile(join(dir, 'users.txt'), `"${user}" "${password.replace(/"/g, '""')}"\n`)
  await writeFile(join(dir, 'pgbouncer.ini'), ini(upstream.hostname, Number(upstream.port || 5432)))
  await chmod(join(dir, 'users.txt'), 0o644)
  await chmod(join(dir, 'pgbouncer.ini'), 0o644)
  // PgBouncer refuses to run as root.
  const asRoot = process.getuid?.() === 0
  const child: ChildProcess = spawn(asRoot ? 'runuser' : PGBOUNCER, asRoot ? ['-u', 'postgres', '--', PGBOUNCER, join(dir, 'pgbouncer.ini')] : [join(dir, 'pgbouncer.ini')], {
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  let stderr = ''
  child.stderr!.on('data', (c) => (stderr += c))
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()))
  const url = (database: string) => {
    const u = new URL(upstreamUrl)
    u.hostname = '127.0.0.1'
    u.port = String(port)
    u.pathname = `/${database}`
    return u.toString()
  }
  const admin = async (command: string) => {
    const console = postgres(url('pgbouncer'), { max: 1, prepare: false, onnotice: () => {}, fetch_types: false })
    try {
      return [...(await console.unsafe(command).simple())]
    } finally {
      await console.end({ timeout: 1 })
    }
  }
  await waitFor('PgBouncer', async () => {
    if (child.exitCode !== null) throw new Error(`PgBouncer exited: ${stderr}`)
    return admin('SHOW VERSION').then(() => true, () => false)
  }, 20_000)
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM')
      await exited
    }
    await rm(dir, { recursive: true, force: true })
  }
  t.teardown(stop)
  return {
    port,
    url,
    admin,
    async retarget(host, serverPort) {
      await writeFile(join(dir, 'pgbouncer.ini'), ini(host, serverPort))
      await admin('RELOAD')
    },
    log: () => readFile(join(dir, 'pgbouncer.log'), 'utf8').catch(() => ''),
    stop,
  }
}
