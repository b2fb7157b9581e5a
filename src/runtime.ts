import { randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import { resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createCallbackRoute } from './http/routes/callbacks.ts'
import { urlTokenSecrets } from './domain/callback-token.ts'
import { createBatchService } from './services/calls/batches.ts'
import { createCallService } from './services/calls/service.ts'
import { createSuppressionService } from './services/calls/suppressions.ts'
import { createDispatchControl } from './services/dispatch/control.ts'
import { syncEnvEndpoint } from './store/events.ts'
import { EventDelivery } from './services/events/deliver.ts'
import { createEventService } from './services/events/endpoints.ts'
import { connectionBudget, type Config, type Mode } from './config.ts'
import { differences, sharedSettings, type Settings } from './settings.ts'
import { recordSharedSetting } from './store/settings.ts'
import { startEmbeddedPostgres, type EmbeddedDatabase } from './store/embedded.ts'
import { isMigrated, migrate, readMigrations } from './store/migrate.ts'
import { connect, isDatabaseUnavailable, type Sql } from './store/sql.ts'
import { readStatus } from './store/status.ts'
import { batchProgress, callTimeline, consoleCalls } from './store/console.ts'
import { reconcileAllNow } from './store/transitions.ts'
import { LEASE_MARGIN_MS } from './services/dispatch/claim.ts'
import { Dispatcher } from './worker/dispatcher.ts'
import { createProviderClient, type ProviderClient } from './provider/client.ts'
import { createVapiClient, createVapiWebhook } from './provider/vapi.ts'
import { createRetellClient, createRetellWebhook } from './provider/retell.ts'
import type { ProviderWebhook } from './provider/webhook.ts'
import { Queues } from './store/queues.ts'
import { createApp } from './http/app.ts'
import { sessionStore } from './http/auth.ts'
import { createWorkerApp } from './http/worker-app.ts'
import { listen, type RunningServer } from './platform/serve.ts'
import { failureStreak, throttled, type Logger } from './platform/log.ts'
import type { CallRow } from './domain/call.ts'
import { ProviderSimulator, type SimulatorStore } from './simulator/simulator.ts'
import { liveSimulatedCalls, prepareSimulatorCalls, simulatorSecret, recordSimulatedCall, simulatedCallById, simulatedCallByKey } from './store/simulator-calls.ts'

// Builds the parts a mode asks for, starts them in order, and stops them in reverse.

export type { Mode } from './config.ts'

export interface Running {
  apiPort?: number | undefined
  /** A worker-only process's /metrics and /healthz (METRICS_PORT). */
  metricsPort?: number | undefined
  simulatorUrl?: string | undefined
  stop(): Promise<void>
}

const projectRoot = fileURLToPath(new URL('..', import.meta.url))

/**
 * The status page's address as a person opens it: localhost for the loopback and wildcard
 * addresses (http://0.0.0.0:3000/ is not a page a browser opens), else the host as given.
 */
export function pageUrl(host: string, port: number): string {
  const local = ['0.0.0.0', '::', '127.0.0.1', '::1', 'localhost'].includes(host)
  return `http://${local ? 'localhost' : host.includes(':') ? `[${host}]` : host}:${port}/`
}

/**
 * The simulator as the configuration describes it: SIMULATOR_FLAVOR's provider (or `flavor`),
 * taking that provider's API key (or `apiKey`).
 */
export function simulatorFromConfig(
  config: Config,
  secret: string,
  log: Logger,
  options: { store?: SimulatorStore | undefined; flavor?: Config['simulator']['flavor']; apiKey?: string | undefined } = {},
): ProviderSimulator {
  const s = config.simulator
  const { store } = options
  const flavor = options.flavor ?? s.flavor
  const apiKey = 'apiKey' in options ? options.apiKey : flavor === 'generic' ? config.provider.apiKey : config.provider[flavor].apiKey
  return new ProviderSimulator(
    {
      secret,
      apiKey,
      ...(flavor !== 'generic' ? { flavor } : {}),
      minDurationMs: s.minDurationMs,
      maxDurationMs: s.maxDurationMs,
      statusMix: s.statusMix,
      rates: s.rates,
      slowAcceptMs: s.slowAcceptMs,
      statusLookup: s.statusLookup,
      store,
      forgetAfterMs: s.forgetAfterMs,
    },
    log.child({ part: 'simulator' }),
  )
}

/**
 * The built-in simulator's memory in our database (a schema of its own), so a restart of `all`
 * forgets no call it placed; without the right to make a schema, it remembers in memory only.
 */
export async function simulatorStore(sql: Sql, log: Logger): Promise<(SimulatorStore & { secret(fresh: string): Promise<string> }) | undefined> {
  try {
    await prepareSimulatorCalls(sql)
  } catch (err) {
    log.warn('the built-in simulator keeps its calls in memory only: it could not make its schema', { err: (err as Error).message })
    return undefined
  }
  return {
    placed: (call) => recordSimulatedCall(sql, call),
    byKey: (key) => simulatedCallByKey(sql, key),
    byId: (id) => simulatedCallById(sql, id),
    live: () => liveSimulatedCalls(sql),
    secret: (fresh) => simulatorSecret(sql, fresh),
  }
}

/** The provider's API as PROVIDER names it. `genericUrl`: PROVIDER_BASE_URL, or the built-in simulator's. */
function providerClient(config: Config, genericUrl: string | undefined, secret: string): ProviderClient {
  const { timeoutMs, voicemail, vapi } = config.provider
  if (config.provider.name === 'vapi') {
    return createVapiClient({ apiKey: vapi.apiKey!, phoneNumberId: vapi.phoneNumberId!, baseUrl: vapi.baseUrl, timeoutMs, publicBaseUrl: config.publicBaseUrl, callbackSecret: secret, voicemail })
  }
  if (config.provider.name === 'retell') {
    const { retell } = config.provider
    return createRetellClient({ apiKey: retell.apiKey!, fromNumber: retell.fromNumber!, baseUrl: retell.baseUrl, timeoutMs, publicBaseUrl: config.publicBaseUrl, callbackSecret: secret, voicemail })
  }
  if (!genericUrl) throw new Error('worker mode needs PROVIDER_BASE_URL (only "all" mode falls back to the simulator)')
  return createProviderClient({ baseUrl: genericUrl, apiKey: config.provider.apiKey, timeoutMs, publicBaseUrl: config.publicBaseUrl, callbackSecret: secret })
}

/** The provider's webhook, for the API's callback route; undefined: the generic contract's. */
function providerWebhook(config: Config, log: Logger): ProviderWebhook | undefined {
  const { vapi, voicemail } = config.provider
  if (config.provider.name === 'vapi') return createVapiWebhook({ secret: vapi.webhookSecret, token: vapi.webhookToken, voicemail, log: log.child({ provider: 'vapi' }) })
  if (config.provider.name === 'retell') return createRetellWebhook({ apiKey: config.provider.retell.apiKey, voicemail, log: log.child({ provider: 'retell' }) })
  return undefined
}

/** The key callback URL tokens are made with: CALLBACK_URL_SECRET, or else the first webhook secret. */
function callbackSecret(webhook: Config['webhook']): string {
  const secret = urlTokenSecrets(webhook)[0]
  if (!secret) throw new Error('callback URLs need WEBHOOK_SECRET or CALLBACK_URL_SECRET') // checkModeConfig refuses this first
  return secret
}

/**
 * Runs `step` until it gets through, for as long as the only trouble is a database that is not
 * there (not started yet, restarting, failing over): a process started during an outage waits
 * for it instead of exiting. Any other error, or `signal`, ends the wait.
 */
async function untilDatabaseAnswers<T>(what: string, step: () => Promise<T>, log: Logger, signal: AbortSignal): Promise<T> {
  const failures = failureStreak(12)
  for (;;) {
    signal.throwIfAborted()
    try {
      return await step()
    } catch (err) {
      if (!isDatabaseUnavailable(err) || signal.aborted) throw err
      const delay = Math.min(5_000, 250 * 2 ** Math.min(failures.count, 5))
      if (failures.failed(err)) log.warn(`database unavailable during ${what}; retrying`, { err, retryInMs: delay })
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, delay)
        signal.addEventListener('abort', () => (clearTimeout(timer), resolve(undefined)), { once: true })
      })
    }
  }
}

/** Applies the migrations over a connection of its own to `url`, then closes it. */
async function migrateOver(url: string): Promise<number[]> {
  const direct = connect(url, { max: 1, applicationName: 'call-orchestrator/migrate' })
  try {
    return await migrate(direct)
  } finally {
    await direct.end({ timeout: 5 })
  }
}

/** Where the embedded server's data lives: EMBEDDED_PG_DIR, from the project's root. */
export const embeddedDir = (config: Config) => resolve(projectRoot, config.embeddedPg.dir)

interface Database {
  /** Where the service's pools connect: DATABASE_URL (perhaps a pooler), or the embedded server. */
  url: string
  /** A session of its own (LISTEN, migrations): DATABASE_DIRECT_URL, else `url`. */
  directUrl: string
  /** `url` is a transaction pooler: no prepared statements on it. */
  pooled: boolean
  embedded?: EmbeddedDatabase
}

/** The database to use: DATABASE_URL (and DATABASE_DIRECT_URL), or an embedded server whose data lives under .data/. */
async function database(config: Config, log: Logger): Promise<Database> {
  if (config.databaseUrl) {
    return { url: config.databaseUrl, directUrl: config.databaseDirectUrl ?? config.databaseUrl, pooled: config.databasePooler === 'transaction' }
  }
  const dir = embeddedDir(config)
  log.info('DATABASE_URL is not set: using an embedded PostgreSQL', { dataDir: config.embeddedPg.dir, port: config.embeddedPg.port })
  const embedded = await startEmbeddedPostgres({ dir, port: config.embeddedPg.port }, log)
  return { url: embedded.url, directUrl: embedded.url, pooled: false, embedded }
}

/**
 * The database's URL for an operator: DATABASE_URL, or the embedded server's (started if it
 * is not running, then `stop` stops it again), with its random password.
 */
export async function operatorDatabase(config: Config, log: Logger): Promise<{ url: string; stop(): Promise<void> }> {
  const db = await database(config, log)
  return { url: db.url, stop: async () => void (await db.embedded?.stop()) }
}

/** The call service as the configuration sets it up: the API's, and the command's. */
const callServiceFor = (config: Settings, sql: Sql, queue: Queues, log: Logger) =>
  createCallService({
    sql,
    queue,
    callTtlSeconds: config.dispatch.callTtlSeconds,
    maxConcurrentCalls: config.dispatch.maxConcurrentCalls,
    calling: config.policy,
    log,
  })

/** What `bin/orchestrator calls <action> <id>` asks of one call. */
export type CallAction = { action: 'cancel'; id: string } | { action: 'retry'; id: string; expiresAt?: Date | undefined }

/**
 * One action on one call, through the very service the API answers POST /calls/:id/cancel and
 * /retry with (src/services/calls/service.ts), for operators at a shell. Returns the call as it is now.
 */
export async function runCallAction(config: Settings, log: Logger, command: CallAction): Promise<CallRow> {
  const db = await database(config, log)
  const sql = connect(db.url, { max: 2, pooled: db.pooled })
  const queue = new Queues(db.url, log.child({ part: 'pg-boss' }), {
    supervise: false,
    deliveryRetry: config.events.retry,
    deliveryTimeoutMs: config.events.timeoutMs,
  })
  try {
    if (!(await isMigrated(sql, (await readMigrations()).length))) {
      throw new Error('the database is not migrated: run bin/orchestrator migrate (or start the service) first')
    }
    await queue.start()
    const calls = callServiceFor(config, sql, queue, log)
    return command.action === 'cancel' ? await calls.cancel(command.id) : await calls.retry(command.id, { expiresAt: command.expiresAt })
  } finally {
    await queue.stop().catch(() => {})
    await sql.end({ timeout: 5 })
    await db.embedded?.stop()
  }
}

export async function startOrchestrator(
  mode: Mode,
  config: Settings,
  log: Logger,
  signal: AbortSignal = new AbortController().signal,
): Promise<Running> {
  const stops: Array<() => Promise<void>> = []
  const stopAll = async () => {
    for (const stop of stops.reverse()) {
      await stop().catch((err) => log.error('error while stopping', { err }))
    }
    stops.length = 0
  }
  try {
    if (mode === 'simulator') {
      const secret = (config.simulator.flavor === 'vapi' ? config.provider.vapi.webhookSecret : undefined) ?? config.webhook.secrets[0] ?? (config.simulator.flavor === 'retell' ? '' : undefined)
      if (secret === undefined) throw new Error('the simulator signs callbacks: set WEBHOOK_SECRET (whsec_…) for it and for the orchestrator')
      const sim = simulatorFromConfig(config, secret, log)
      await sim.start(config.simulator.port, config.simulator.host)
      stops.push(() => sim.stop())
      log.info('provider simulator listening', { host: config.simulator.host, port: config.simulator.port })
      return { simulatorUrl: sim.url, stop: stopAll }
    }

    const db = await database(config, log)
    if (db.embedded) stops.push(() => db.embedded!.stop())
    const budget = connectionBudget(mode, config.databaseConnections)
    if (mode !== 'migrate') log.info('database connections', { atMost: budget.total, pool: budget.own, pgBoss: budget.boss, listeners: budget.listeners, setting: 'DATABASE_CONNECTIONS' })
    const sql: Sql = connect(db.url, { max: mode === 'migrate' ? 2 : budget.own, pooled: db.pooled })
    stops.push(() => sql.end({ timeout: 5 }))
    // Migrations on a session of their own when there is one: they need no pooler in between.
    const applied = await untilDatabaseAnswers('migrations', () => (db.directUrl === db.url ? migrate(sql) : migrateOver(db.directUrl)), log, signal)
    if (applied.length) log.info('migrations applied', { versions: applied })
    const migrationCount = (await readMigrations()).length

    const runsWorker = mode === 'worker' || mode === 'all'
    const queue = new Queues(db.url, log.child({ part: 'pg-boss' }), {
      max: budget.boss,
      supervise: runsWorker,
      deliveryRetry: config.events.retry,
      deliveryTimeoutMs: config.events.timeoutMs,
    })
    await untilDatabaseAnswers('queue start-up', () => queue.start(), log, signal)
    stops.push(() => queue.stop())
    if (mode === 'migrate') return { stop: stopAll }

    // A process that starts may follow an outage during which callbacks were lost: ask the
    // provider about every dialed call in flight (workers do the asking).
    const reconciling = await untilDatabaseAnswers('start-up', () => reconcileAllNow(sql), log, signal)
    if (reconciling) log.info('asking the provider about every dialed call in flight', { calls: reconciling })

    // The endpoint EVENT_WEBHOOK_URL names, brought in line with the environment. Without it,
    // this process leaves alone what other processes configured.
    const endpoint = config.events.endpoint
    if (endpoint) {
      const others = await untilDatabaseAnswers('event endpoint set-up', () => sql.begin((tx) => syncEnvEndpoint(tx, endpoint)), log, signal)
      for (const other of others) {
        log.warn('EVENT_WEBHOOK_URL differs from another process\'s: both endpoints receive events; remove the one you do not want with DELETE /event-endpoints/{id}', {
          ours: endpoint.url,
          theirs: other.url,
          theirsId: other.id,
        })
      }
    }
    // Settings that act for every process: say so when another process sees them otherwise.
    const setBy = `${hostname()} pid ${process.pid} (${mode})`
    for (const [name, value] of Object.entries(sharedSettings(config))) {
      const theirs = await untilDatabaseAnswers('shared settings', () => recordSharedSetting(sql, name, value, setBy), log, signal)
      if (theirs) {
        log.warn(`shared settings differ from another process's (${name}): the variables named act for every process; give every process the same`, {
          differ: differences(value, theirs.value),
          theirsFrom: theirs.setBy,
          theirsSince: theirs.setAt,
        })
      }
    }

    let webhook = config.webhook
    let providerUrl = config.provider.baseUrl
    let simulatorUrl: string | undefined
    let builtInSimulator: ProviderSimulator | undefined
    const flavor = config.provider.name
    if (mode === 'all' && (flavor === 'generic' ? !providerUrl : !config.provider[flavor].apiKey)) {
      // Out of the box: no provider to reach (no PROVIDER_BASE_URL, or PROVIDER=vapi|retell
      // without its key), so run the simulator in-process as that provider, and say so loudly.
      // Without WEBHOOK_SECRET it signs with one made up once and kept with its calls: the
      // webhook URLs handed out before a restart carry tokens made with it.
      const store = await simulatorStore(sql, log)
      const made = () => `whsec_${randomBytes(24).toString('base64')}`
      const secret = webhook.secrets[0] ?? (await store?.secret(made())) ?? made()
      if (webhook.secrets.length === 0) webhook = { ...webhook, secrets: [secret] }
      // As Vapi or Retell, with keys of its own; Vapi's messages signed as VAPI_WEBHOOK_SECRET says, if set.
      const apiKey = flavor === 'generic' ? config.provider.apiKey : `simulated_${randomBytes(12).toString('hex')}`
      const signing = (flavor === 'vapi' ? config.provider.vapi.webhookSecret : undefined) ?? secret
      const sim = simulatorFromConfig(config, signing, log, { store, flavor, apiKey })
      // SIMULATOR_PORT when given; else any free port, so two of these never collide.
      await sim.start(config.simulator.portGiven ? config.simulator.port : 0, config.simulator.host)
      stops.push(() => sim.stop())
      builtInSimulator = sim
      simulatorUrl = sim.url
      if (flavor === 'generic') {
        providerUrl = sim.url
        log.warn('PROVIDER_BASE_URL is not set: calls go to the built-in provider simulator, not to a real provider', { simulatorUrl })
      } else {
        const { vapi, retell } = config.provider
        config = {
          ...config,
          provider: {
            ...config.provider,
            vapi: { ...vapi, apiKey, baseUrl: sim.url, phoneNumberId: vapi.phoneNumberId ?? 'simulated-number', webhookSecret: signing },
            retell: { ...retell, apiKey, baseUrl: sim.url, fromNumber: retell.fromNumber ?? '+15550100000' },
          },
        }
        log.warn(`${flavor === 'vapi' ? 'VAPI_API_KEY' : 'RETELL_API_KEY'} is not set: calls go to the built-in simulator playing ${flavor}, not to ${flavor} itself`, { simulatorUrl })
      }
    }

    let apiPort: number | undefined
    if (mode === 'api' || mode === 'all') {
      if (config.http.apiTokens.length === 0) {
        log.warn(
          config.http.hostGiven
            ? `API_TOKENS is not set: every route accepts requests from anyone who can reach ${config.http.host}`
            : 'API_TOKENS is not set: listening on 127.0.0.1 only, so nothing beyond this machine can reach the open API (set HOST to listen elsewhere)',
        )
      }
      if (config.provider.name === 'generic' && webhook.secrets.length === 0 && !webhook.apiKey) {
        log.warn('neither WEBHOOK_SECRET nor WEBHOOK_API_KEY is set: every provider callback will be refused')
      }
      const callService = callServiceFor(config, sql, queue, log)
      const readiness = throttled(log, 10_000)
      const app = createApp({
        calls: callService,
        apiTokens: config.http.apiTokens,
        readTokens: config.http.readTokens,
        allowedHosts: config.http.allowedHosts,
        log,
        ready: async () => {
          try {
            return (await isMigrated(sql, migrationCount))
              ? { ok: true, detail: 'ready' }
              : { ok: false, detail: 'database migrations are not all applied' }
          } catch (err) {
            // What the driver said goes to the log, not to whoever asks.
            readiness.warn('readiness: database unreachable', { err })
            return { ok: false, detail: 'database unreachable' }
          }
        },
        callbacks: createCallbackRoute({
          sql,
          queue,
          secrets: webhook.secrets,
          apiKey: webhook.apiKey,
          urlSecret: webhook.urlSecret,
          webhook: providerWebhook(config, log),
          backoff: { baseSeconds: config.dispatch.retryBaseSeconds, maxSeconds: config.dispatch.retryMaxSeconds },
          log,
          calling: config.policy,
        }),
        suppressions: createSuppressionService({ sql, queue, log }),
        dispatch: createDispatchControl({ sql, maxConcurrentCalls: config.dispatch.maxConcurrentCalls }),
        batches: createBatchService({ sql, queue, callTtlSeconds: config.dispatch.callTtlSeconds, calling: config.policy, log }),
        events: createEventService({ sql, deliveries: queue.deliveries, allowInsecureUrls: config.events.allowInsecureUrls }),
        status: { read: () => readStatus(sql, config.dispatch.maxConcurrentCalls), sessions: sessionStore(sql), console: { calls: (f) => consoleCalls(sql, f), timeline: (id) => callTimeline(sql, id), batch: (id) => batchProgress(sql, id) } },
      })
      const server: RunningServer = await listen(app, config.http)
      stops.push(async () => {
        // Bounded whatever the clients do: event streams cut at once, the rest given SHUTDOWN_TIMEOUT_MS.
        const closed = await server.close({ timeoutMs: config.dispatch.shutdownTimeoutMs })
        log.info('API stopped', { ...closed })
      })
      apiPort = server.port
      log.info('API listening', { host: config.http.host, port: server.port, statusPage: pageUrl(config.http.host, server.port), console: `${pageUrl(config.http.host, server.port)}console/calls` })
    }

    if (runsWorker) {
      const provider = providerClient(config, providerUrl, callbackSecret(webhook))
      log.info('provider', { provider: provider.name, idempotent: provider.idempotent })
      // Where the provider publishes the account's limit (Retell), one below ours is said at start.
      void provider.checkLimit?.(config.dispatch.maxConcurrentCalls, log)
      const timeoutMs = config.provider.timeoutMs
      const dispatcher = new Dispatcher({
        sql,
        listenUrl: db.directUrl,
        queue,
        provider,
        options: {
          ...config.dispatch,
          // Without idempotency keys a request after an unknown outcome may look, wait, look
          // again and send: its lease covers the four (src/worker/dispatcher.ts, #lookFirst).
          leaseMs: timeoutMs * (provider.idempotent ? 1 : 4) + LEASE_MARGIN_MS,
          settleMs: timeoutMs,
          calling: config.policy,
          retention: config.retention,
        },
        log,
      })
      await untilDatabaseAnswers('worker start-up', () => dispatcher.start(), log, signal)
      stops.push(() => dispatcher.stop())
      const delivery = new EventDelivery({
        sql,
        deliveries: queue.deliveries,
        listenUrl: db.directUrl,
        options: { timeoutMs: config.events.timeoutMs, perEndpoint: config.events.perEndpoint, allowInsecureUrls: config.events.allowInsecureUrls },
        log: log.child({ part: 'events' }),
      })
      await delivery.start()
      stops.push(() => delivery.stop())
    }

    let metricsPort: number | undefined
    if (mode === 'worker' && config.metricsPort > 0) {
      // The API serves these at its own /metrics; a worker alone has a port for them.
      const server = await listen(createWorkerApp(), { host: config.http.host, port: config.metricsPort })
      stops.push(async () => void (await server.close()))
      metricsPort = server.port
      log.info('worker metrics listening', { host: config.http.host, port: server.port })
    }
    // Stopping starts by silencing the built-in simulator's callbacks: the API they go to is
    // about to close, and each would fail with a warning (its server stays up until last, for
    // the worker's requests under way).
    if (builtInSimulator) stops.push(async () => builtInSimulator!.stopCallbacks())
    return { apiPort, metricsPort, simulatorUrl, stop: stopAll }
  } catch (err) {
    await stopAll()
    throw err
  }
}
