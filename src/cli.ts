import { existsSync, readFileSync } from 'node:fs'
import { parseEnv } from 'node:util'
import { checkModeConfig, ConfigError, configVariables, loadConfig } from './config.ts'
import { createLogger } from './log.ts'
import { startOrchestrator, type Mode } from './runtime.ts'

// bin/orchestrator <mode>: the single entry point. Exit codes: 0 clean stop, 1 failure while
// running, 2 bad usage, 78 bad configuration (EX_CONFIG).

const MODES: Record<Mode, string> = {
  api: 'the HTTP API (REST, metrics, health, provider callbacks)',
  worker: 'a dispatch worker: claims calls, dials the provider, retries, sweeps; run as many as you like',
  all: 'api + worker in one process; with PROVIDER_BASE_URL unset it also runs the provider simulator',
  migrate: 'apply database migrations (ours and pg-boss\'s), then exit',
  simulator: 'a fake AI-call provider on SIMULATOR_PORT, for local runs and load tests',
}

function help(): string {
  const example = readFileSync(new URL('../.env.example', import.meta.url), 'utf8')
  return [
    'usage: bin/orchestrator <mode>',
    '',
    'modes:',
    ...Object.entries(MODES).map(([mode, text]) => `  ${mode.padEnd(10)} ${text}`),
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

async function main(argv: string[]): Promise<number> {
  const mode = argv[0]
  if (mode === undefined || mode === '--help' || mode === '-h' || mode === 'help') {
    process.stdout.write(help())
    return mode === undefined ? 2 : 0
  }
  if (!(mode in MODES) || argv.length > 1) {
    process.stderr.write(`bin/orchestrator: unknown mode or extra arguments: ${argv.join(' ')}\n\n${help()}`)
    return 2
  }
  let config
  try {
    config = loadConfig(environment())
    checkModeConfig(mode as Mode, config)
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    process.stderr.write(`bin/orchestrator: ${err.message}\nSee bin/orchestrator --help for every variable (${configVariables.length} in all).\n`)
    return 78
  }
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
