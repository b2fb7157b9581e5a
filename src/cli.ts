import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { parseArgs, parseEnv } from 'node:util'
import * as v from 'valibot'
import { checkModeConfig, ConfigError, configVariables } from './config.ts'
import { loadSettings, type Settings } from './settings.ts'
import { toResource } from './domain/call.ts'
import { DomainError } from './domain/errors.ts'
import { CallId, RetryCallBody } from './http/schemas.ts'
import { createLogger } from './platform/log.ts'
import { embeddedDir, operatorDatabase, runCallAction, startOrchestrator, type CallAction, type Mode } from './runtime.ts'
import { stopEmbeddedPostgres } from './store/embedded.ts'

// bin/orchestrator <mode>: the single entry point. Exit codes: 0 clean stop, 1 failure while
// running, 2 bad usage, 78 bad configuration (EX_CONFIG).

const MODES: Record<Mode, string> = {
  api: 'the HTTP API (REST, metrics, health, provider callbacks)',
  worker: 'a dispatch worker: claims calls, dials the provider, retries, sweeps; run as many as you like',
  all: 'api + worker in one process; with PROVIDER_BASE_URL unset it also runs the provider simulator',
  migrate: 'apply database migrations (ours and pg-boss\'s), then exit',
  simulator: 'a fake AI-call provider on SIMULATOR_PORT, for local runs and load tests',
}

const DB_COMMAND = '  db stop                                 stop the embedded PostgreSQL of EMBEDDED_PG_DIR, whoever started it'
const PSQL_COMMAND = '  psql [--url]                            psql on the database (the embedded one with its password), or its URL'

const CALL_COMMANDS = [
  '  calls cancel <id>                       a PENDING call → CANCELLED, as POST /calls/:id/cancel',
  '  calls retry <id> [--expires-at <time>]  a FAILED or EXPIRED call → PENDING for a new dial, as POST /calls/:id/retry',
]

function help(): string {
  const example = readFileSync(new URL('../.env.example', import.meta.url), 'utf8')
  return [
    'usage: bin/orchestrator <mode>',
    '       bin/orchestrator calls <cancel|retry> <id> [--expires-at <ISO 8601 time>]',
    '       bin/orchestrator psql [--url]',
    '       bin/orchestrator db stop',
    '',
    'modes:',
    ...Object.entries(MODES).map(([mode, text]) => `  ${mode.padEnd(10)} ${text}`),
    '',
    'commands (each prints the call as the API shows it, or says why it was refused, exit 1):',
    ...CALL_COMMANDS,
    PSQL_COMMAND,
    DB_COMMAND,
    '',
    'Configuration comes from the environment (and from .env in the working directory, if present).',
    'Every variable, its default and its meaning (from .env.example):',
    '',
    example.trim(),
    '',
  ].join('\n')
}

function environment(): Record<string, string | undefined> {
  // Real environment variables win over .env, as with docker compose and most tools.
  const fromFile = existsSync('.env') ? parseEnv(readFileSync('.env', 'utf8')) : {}
  return { ...fromFile, ...process.env }
}

/** The configuration, or undefined after saying what is wrong with it (exit 78). */
function configuration(check: (config: Settings) => void = () => {}): Settings | undefined {
  try {
    const config = loadSettings(environment())
    check(config)
    return config
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    process.stderr.write(`bin/orchestrator: ${err.message}\nSee bin/orchestrator --help for every variable (${configVariables.length} in all).\n`)
    return undefined
  }
}

/** bin/orchestrator calls <cancel|retry> <id> [--expires-at <time>]. */
async function callCommand(argv: string[]): Promise<number> {
  const usage = (why: string) => {
    process.stderr.write(`bin/orchestrator calls: ${why}\nusage:\n${CALL_COMMANDS.join('\n')}\n`)
    return 2
  }
  let parsed
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options: { 'expires-at': { type: 'string' } } })
  } catch (err) {
    return usage((err as Error).message)
  }
  const [action, id, ...extra] = parsed.positionals
  if ((action !== 'cancel' && action !== 'retry') || id === undefined || extra.length > 0) return usage('give an action (cancel or retry) and one call id')
  if (!v.is(CallId, id)) return usage(`"${id}" is not a call id (a UUID)`)
  const expires = v.safeParse(RetryCallBody, { expiresAt: parsed.values['expires-at'] })
  if (!expires.success) return usage(`--expires-at ${expires.issues[0].message}`)
  if (action === 'cancel' && expires.output.expiresAt) return usage('--expires-at goes with retry only')
  const config = configuration()
  if (!config) return 78
  const log = createLogger(config.logLevel, { mode: 'calls' }, { format: config.logFormat })
  const command: CallAction = action === 'cancel' ? { action, id } : { action, id, expiresAt: expires.output.expiresAt }
  try {
    const call = await runCallAction(config, log, command)
    process.stdout.write(`${JSON.stringify(toResource(call), null, 2)}\n`)
    return 0
  } catch (err) {
    const why = err instanceof DomainError ? `${err.message} (${err.code})` : (err as Error).message
    process.stderr.write(`bin/orchestrator calls ${action}: ${why}\n`)
    return 1
  }
}

/** bin/orchestrator psql [--url]: psql on the service's database, or its URL for another client. */
async function psqlCommand(argv: string[]): Promise<number> {
  if (argv.length > 1 || (argv.length === 1 && argv[0] !== '--url')) {
    process.stderr.write(`bin/orchestrator psql: unknown arguments: ${argv.join(' ')}\nusage:\n${PSQL_COMMAND}\n`)
    return 2
  }
  const config = configuration()
  if (!config) return 78
  const log = createLogger(config.logLevel === 'debug' ? 'debug' : 'warn', { mode: 'psql' }, { format: config.logFormat })
  const db = await operatorDatabase(config, log)
  try {
    const psql = argv[0] === '--url' ? undefined : spawnSync('psql', [db.url], { stdio: 'inherit' })
    if (!psql || psql.error) {
      if (psql?.error) process.stderr.write('bin/orchestrator psql: psql is not installed here; connect with this URL:\n')
      process.stdout.write(`${db.url}\n`)
      return psql?.error ? 1 : 0
    }
    return psql.status ?? 1
  } finally {
    await db.stop()
  }
}

/** bin/orchestrator db stop: for the rare case a server outlived every process (they stop it themselves). */
async function dbCommand(argv: string[]): Promise<number> {
  if (argv.length !== 1 || argv[0] !== 'stop') {
    process.stderr.write(`bin/orchestrator db: unknown arguments: ${argv.join(' ')}\nusage:\n${DB_COMMAND}\n`)
    return 2
  }
  const config = configuration()
  if (!config) return 78
  if (config.databaseUrl) {
    process.stderr.write('bin/orchestrator db stop: DATABASE_URL is set; only the embedded PostgreSQL (without it) is ours to stop\n')
    return 1
  }
  const dir = embeddedDir(config)
  const pid = await stopEmbeddedPostgres(dir)
  process.stdout.write(pid ? `stopped the embedded PostgreSQL (pid ${pid}) of ${dir}\n` : `no embedded PostgreSQL runs on ${dir}\n`)
  return 0
}

async function main(argv: string[]): Promise<number> {
  const mode = argv[0]
  if (mode === undefined || mode === '--help' || mode === '-h' || mode === 'help') {
    process.stdout.write(help())
    return mode === undefined ? 2 : 0
  }
  if (mode === 'calls') return callCommand(argv.slice(1))
  if (mode === 'psql') return psqlCommand(argv.slice(1))
  if (mode === 'db') return dbCommand(argv.slice(1))
  if (!(mode in MODES) || argv.length > 1) {
    process.stderr.write(`bin/orchestrator: unknown mode or extra arguments: ${argv.join(' ')}\n\n${help()}`)
    return 2
  }
  const config = configuration((c) => checkModeConfig(mode as Mode, c))
  if (!config) return 78
  const log = createLogger(config.logLevel, { mode }, { format: config.logFormat })
  // Signals are handled from here on, so a process still waiting for its database stops
  // cleanly too. The first one stops gracefully; a second one exits at once.
  const starting = new AbortController()
  let running: Awaited<ReturnType<typeof startOrchestrator>> | undefined
  let stopRequested: ((code: number) => void) | undefined
  const stopped = new Promise<number>((resolve) => (stopRequested = resolve))
  let stopping = false
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      log.warn('second signal: exiting now', { signal })
      process.exit(130)
    }
    stopping = true
    log.info('stopping', { signal })
    if (!running) return starting.abort()
    running.stop().then(
      () => stopRequested!(0),
      (err) => {
        log.error('error while stopping', { err })
        stopRequested!(1)
      },
    )
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  // Closing the terminal: stop as for Ctrl-C, so nothing (the embedded PostgreSQL above all) is left behind.
  process.on('SIGHUP', onSignal)

  try {
    running = await startOrchestrator(mode as Mode, config, log, starting.signal)
  } catch (err) {
    if (starting.signal.aborted) return 0
    log.error('start-up failed', { err })
    return 1
  }
  if (stopping) {
    await running.stop()
    return 0
  }
  if (mode === 'migrate') {
    await running.stop()
    log.info('migrations up to date')
    return 0
  }
  return stopped
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`bin/orchestrator: ${(err as Error).stack ?? String(err)}\n`)
    process.exit(1)
  },
)
