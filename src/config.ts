import * as v from 'valibot'

// Every setting the process reads, its default and its bounds live here and nowhere else.
// `.env.example` and `bin/orchestrator --help` describe the same list; test/config.test.ts
// checks that the three agree.
//
// This module knows the environment's syntax and nothing of the domain: it imports nothing of
// ours. What only the domain can judge (a calling window, an event type, how long a call may
// wait) is judged in src/settings.ts, which builds the domain's values from these.

const int = (fallback: number, min: number, max = Number.MAX_SAFE_INTEGER) =>
  v.pipe(
    v.optional(v.string(), String(fallback)),
    v.trim(),
    v.regex(/^\d+$/, 'must be a whole number'),
    v.transform(Number),
    v.minValue(min, `must be at least ${min}`),
    v.maxValue(max, `must be at most ${max}`),
  )

const ratio = (fallback: number) =>
  v.pipe(
    v.optional(v.string(), String(fallback)),
    v.trim(),
    v.regex(/^(0(\.\d+)?|1(\.0+)?)$/, 'must be a number from 0 to 1'),
    v.transform(Number),
  )

const httpUrl = v.pipe(
  v.string(),
  v.trim(),
  v.url('must be a URL such as http://host:port'),
  v.regex(/^https?:\/\//, 'must start with http:// or https://'),
  v.transform((url) => url.replace(/\/+$/, '')),
)

const optionalString = v.pipe(
  v.optional(v.string(), ''),
  v.trim(),
  v.transform((s) => (s === '' ? undefined : s)),
)

/** A comma-separated setting's items, trimmed, empty ones dropped. */
export const listItems = (text: string): string[] =>
  text
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '')

const list = v.pipe(
  v.optional(v.string(), ''),
  v.transform(listItems),
)

const logLevels = ['debug', 'info', 'warn', 'error'] as const
const logFormats = ['auto', 'json', 'pretty'] as const

const EnvSchema = v.object({
  DATABASE_URL: v.optional(
    v.pipe(v.string(), v.trim(), v.regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL')),
  ),
  DATABASE_DIRECT_URL: v.optional(
    v.pipe(v.string(), v.trim(), v.regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL')),
  ),
  DATABASE_POOLER: v.optional(v.picklist(['none', 'transaction'], 'must be none or transaction'), 'none'),
  DATABASE_CONNECTIONS: v.optional(v.string()),
  DATABASE_POOL_MAX: v.optional(v.string()),
  EMBEDDED_PG_DIR: v.optional(v.string(), '.data/postgres'),
  EMBEDDED_PG_PORT: int(25432, 1, 65535),
  HOST: optionalString,
  PORT: int(3000, 0, 65535),
  API_TOKENS: list,
  API_READ_TOKENS: list,
  ALLOW_SHORT_TOKENS: v.optional(v.picklist(['true', 'false'], 'must be true or false'), 'false'),
  ALLOWED_HOSTS: list,
  MAX_CONCURRENT_CALLS: int(30, 1, 10_000),
  MAX_ATTEMPTS: int(3, 1, 100),
  RETRY_BASE_SECONDS: int(5, 1, 86_400),
  RETRY_MAX_SECONDS: int(300, 1, 86_400),
  CALL_TIMEOUT_SECONDS: int(1800, 5, 20 * 3600),
  // At most MAX_WAIT_SECONDS (src/settings.ts checks it): a call cannot wait longer than
  // pg-boss keeps its queued job.
  CALL_TTL_SECONDS: int(86_400, 1),
  CALLING_WINDOW: optionalString,
  CAP_PER_PHONE_24H: int(0, 0, 1_000),
  CAP_PER_PHONE_7D: int(0, 0, 10_000),
  RETRY_BUSY: optionalString,
  RETRY_NO_ANSWER: optionalString,
  RETRY_FAILED: optionalString,
  RECONCILE_AFTER_SECONDS: int(120, 0, 86_400),
  RECONCILE_RATE_PER_SECOND: int(5, 1, 1_000),
  PROVIDER: v.optional(v.picklist(['generic', 'vapi', 'retell'], 'must be generic, vapi or retell'), 'generic'),
  RETELL_API_KEY: optionalString,
  RETELL_FROM_NUMBER: optionalString,
  RETELL_BASE_URL: v.optional(httpUrl, 'https://api.retellai.com'),
  VAPI_API_KEY: optionalString,
  VAPI_PHONE_NUMBER_ID: optionalString,
  VAPI_WEBHOOK_SECRET: optionalString,
  VAPI_WEBHOOK_TOKEN: optionalString,
  VAPI_BASE_URL: v.optional(httpUrl, 'https://api.vapi.ai'),
  VOICEMAIL_OUTCOME: v.optional(v.picklist(['NO_ANSWER', 'COMPLETED'], 'must be NO_ANSWER or COMPLETED'), 'NO_ANSWER'),
  PROVIDER_BASE_URL: v.optional(httpUrl),
  PROVIDER_API_KEY: optionalString,
  PROVIDER_TIMEOUT_MS: int(10_000, 100, 600_000),
  PUBLIC_BASE_URL: v.optional(httpUrl),
  WEBHOOK_SECRET: list,
  WEBHOOK_API_KEY: optionalString,
  CALLBACK_URL_SECRET: optionalString,
  EVENT_WEBHOOK_URL: v.optional(httpUrl),
  EVENT_WEBHOOK_SECRET: list,
  EVENT_TYPES: list,
  EVENT_ALLOW_INSECURE_URLS: v.optional(v.picklist(['true', 'false'], 'must be true or false'), 'false'),
  EVENT_TIMEOUT_MS: int(10_000, 100, 20_000),
  EVENT_MAX_IN_FLIGHT_PER_ENDPOINT: int(4, 1, 100),
  EVENT_RETRY_LIMIT: int(20, 0, 100),
  EVENT_RETRY_BASE_SECONDS: int(10, 1, 86_400),
  EVENT_RETRY_MAX_SECONDS: int(7200, 1, 86_400),
  WORKER_POLL_MS: int(5_000, 50, 600_000),
  SHUTDOWN_TIMEOUT_MS: int(15_000, 0, 600_000),
  CALLBACK_RETENTION: v.optional(v.string(), '30d'),
  SIMULATOR_FORGET_AFTER: v.optional(v.string(), '1h'),
  EVENT_RETENTION: v.optional(v.string(), '30d'),
  LOG_LEVEL: v.optional(v.picklist(logLevels, `must be one of ${logLevels.join(', ')}`), 'info'),
  LOG_FORMAT: v.optional(v.picklist(logFormats, `must be one of ${logFormats.join(', ')}`), 'auto'),
  METRICS_PORT: int(9464, 0, 65535),
  SIMULATOR_PORT: int(4010, 0, 65535),
  SIMULATOR_HOST: v.optional(v.string(), '127.0.0.1'),
  SIMULATOR_MIN_DURATION_MS: int(2_000, 0),
  SIMULATOR_MAX_DURATION_MS: int(8_000, 0),
  SIMULATOR_STATUS_MIX: v.optional(v.string(), 'COMPLETED:1'),
  SIMULATOR_5XX_RATE: ratio(0),
  SIMULATOR_TIMEOUT_RATE: ratio(0),
  SIMULATOR_429_RATE: ratio(0),
  SIMULATOR_DUPLICATE_CALLBACK_RATE: ratio(0),
  SIMULATOR_EARLY_CALLBACK_RATE: ratio(0),
  SIMULATOR_LATE_CALLBACK_RATE: ratio(0),
  SIMULATOR_SLOW_202_RATE: ratio(0),
  SIMULATOR_SLOW_202_MS: int(15_000, 0, 600_000),
  SIMULATOR_5XX_AFTER_PLACING_RATE: ratio(0),
  SIMULATOR_DROP_AFTER_PLACING_RATE: ratio(0),
  SIMULATOR_LOST_CALLBACK_RATE: ratio(0),
  SIMULATOR_STATUS_LOOKUP: v.optional(v.picklist(['on', 'off'], 'must be on or off'), 'on'),
  SIMULATOR_FLAVOR: v.optional(v.picklist(['generic', 'vapi', 'retell'], 'must be generic, vapi or retell'), 'generic'),
})

export type LogLevel = (typeof logLevels)[number]
export type LogFormat = (typeof logFormats)[number]

export interface Config {
  databaseUrl: string | undefined
  /**
   * DATABASE_DIRECT_URL: a session of its own to the server, for what a transaction pooler
   * cannot carry (LISTEN, migrations); DATABASE_URL when unset.
   */
  databaseDirectUrl: string | undefined
  /** DATABASE_POOLER: `transaction` when DATABASE_URL is a pooler in transaction mode (no prepared statements then). */
  databasePooler: 'none' | 'transaction'
  /**
   * DATABASE_CONNECTIONS (or its older name DATABASE_POOL_MAX): the most connections one process
   * opens to PostgreSQL, all pools and listeners together; see connectionBudget.
   */
  databaseConnections: number
  embeddedPg: { dir: string; port: number }
  /**
   * `host`: HOST, or when it is unset 127.0.0.1 while API_TOKENS is unset (an open API reachable
   * from this machine only) and 0.0.0.0 otherwise. `allowedHosts`: ALLOWED_HOSTS, the Host
   * headers the API answers (empty: any).
   */
  http: { host: string; hostGiven: boolean; port: number; apiTokens: string[]; readTokens: string[]; allowedHosts: string[] }
  /** How long callbacks and sent events are kept (seconds); workers delete older ones, a little at a time. */
  retention: { callbackSeconds: number; eventSeconds: number }
  dispatch: {
    maxConcurrentCalls: number
    maxAttempts: number
    retryBaseSeconds: number
    retryMaxSeconds: number
    callTimeoutSeconds: number
    callTtlSeconds: number
    /** null: never ask the provider about a call (RECONCILE_AFTER_SECONDS=0). */
    reconcileAfterSeconds: number | null
    reconcileRatePerSecond: number
    pollMs: number
    shutdownTimeoutMs: number
  }
  provider: {
    /** PROVIDER: generic (the brief's contract, and the simulator), vapi or retell. */
    name: 'generic' | 'vapi' | 'retell'
    /** The generic provider's PROVIDER_BASE_URL. */
    baseUrl: string | undefined
    apiKey: string | undefined
    timeoutMs: number
    /** VOICEMAIL_OUTCOME: what a call that reached voicemail counts as. */
    voicemail: 'NO_ANSWER' | 'COMPLETED'
    vapi: { apiKey: string | undefined; phoneNumberId: string | undefined; webhookSecret: string | undefined; webhookToken: string | undefined; baseUrl: string }
    retell: { apiKey: string | undefined; fromNumber: string | undefined; baseUrl: string }
  }
  publicBaseUrl: string
  /** The calling policy as configured; src/settings.ts makes the domain's CallingPolicy of it. */
  calling: CallingSettings
  /** WEBHOOK_SECRET, WEBHOOK_API_KEY, and CALLBACK_URL_SECRET (the key of the webhook URLs' tokens). */
  webhook: { secrets: string[]; apiKey: string | undefined; urlSecret: string | undefined }
  events: {
    /** The endpoint the operator configures (EVENT_WEBHOOK_URL); more can be added through the API. */
    endpoint: { url: string; secrets: string[]; eventTypes: string[] | null } | null
    /** http:// and private, loopback or link-local addresses allowed (local runs, tests). */
    allowInsecureUrls: boolean
    timeoutMs: number
    perEndpoint: number
    retry: { limit: number; baseSeconds: number; maxSeconds: number }
  }
  logLevel: LogLevel
  /** json, pretty (pino-pretty), or auto: pretty when stdout is a terminal. */
  logFormat: LogFormat
  /** Where a worker-only process serves its /metrics and /healthz (0: not at all). */
  metricsPort: number
  simulator: {
    port: number
    /** Whether SIMULATOR_PORT was set: "all" mode's built-in simulator takes a free port otherwise. */
    portGiven: boolean
    /** SIMULATOR_HOST: where simulator mode listens (loopback by default). */
    host: string
    minDurationMs: number
    maxDurationMs: number
    statusMix: Array<{ status: string; weight: number }>
    slowAcceptMs: number
    statusLookup: boolean
    /** SIMULATOR_FLAVOR: whose API simulator mode speaks (in "all" mode, PROVIDER's). */
    flavor: 'generic' | 'vapi' | 'retell'
    /** SIMULATOR_FORGET_AFTER: how long it remembers a call request in memory after its end. */
    forgetAfterMs: number
    rates: {
      serverError: number
      timeout: number
      rateLimited: number
      duplicateCallback: number
      earlyCallback: number
      lateCallback: number
      slowAccept: number
      serverErrorAfterPlacing: number
      dropAfterPlacing: number
      lostCallback: number
    }
  }
}

export type RetriedOutcomeName = 'BUSY' | 'NO_ANSWER' | 'FAILED'

export interface CallingSettings {
  /** CALLING_WINDOW as written ("mon-fri 09:00-20:00"); null: any time. */
  window: string | null
  caps: { perDay: number; perWeek: number }
  retries: Partial<Record<RetriedOutcomeName, { limit: number; delaySeconds: number }>>
}

export class ConfigError extends Error {
  override name = 'ConfigError'
}

const providerStatuses = ['COMPLETED', 'FAILED', 'BUSY', 'NO_ANSWER']

function parseStatusMix(text: string): Config['simulator']['statusMix'] {
  const mix = text.split(',').map((part) => {
    const [status = '', weight = ''] = part.split(':').map((s) => s.trim())
    if (!providerStatuses.includes(status) || !/^\d+(\.\d+)?$/.test(weight)) {
      throw new ConfigError(
        `SIMULATOR_STATUS_MIX: "${part}" must be STATUS:WEIGHT with STATUS one of ${providerStatuses.join(', ')}`,
      )
    }
    return { status, weight: Number(weight) }
  })
  if (mix.every((entry) => entry.weight === 0)) {
    throw new ConfigError('SIMULATOR_STATUS_MIX: at least one weight must be above 0')
  }
  return mix
}

/** DATABASE_CONNECTIONS: 10 unless set; at least 4 (a worker's least: 2 listeners, pg-boss, its own pool). */
function parseConnections(text: string | undefined): number {
  if (text === undefined) return 10
  const n = Number(text)
  if (!Number.isInteger(n) || n < 4 || n > 1000) throw new ConfigError('DATABASE_CONNECTIONS: must be a whole number from 4 to 1000')
  return n
}

/**
 * How a process spends its DATABASE_CONNECTIONS: the listeners a worker keeps open (LISTEN for
 * dispatch and for events, on DATABASE_DIRECT_URL), pg-boss's pool (a quarter, 1 to 3), and
 * the service's own pool (the rest). The default, 10, fits an API and 8 workers within
 * PostgreSQL's default max_connections of 100, with 10 left for operators and superusers.
 */
export function connectionBudget(mode: Mode, total: number): { own: number; boss: number; listeners: number; total: number } {
  const listeners = mode === 'worker' || mode === 'all' ? 2 : 0
  const boss = Math.min(3, Math.max(1, Math.floor(total / 4)))
  return { own: total - listeners - boss, boss, listeners, total }
}

const DURATION_UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400 }

/** "30d", "12h", "1m": a duration in seconds, minutes, hours or days, as RETRY_* delays are written. */
function parseDuration(variable: string, text: string): number {
  const m = /^(\d{1,6})([smhd])$/.exec(text.trim())
  const seconds = Number(m?.[1]) * (DURATION_UNITS[m?.[2] ?? ''] ?? NaN)
  if (!m || !(seconds >= 1)) throw new ConfigError(`${variable}: must be a duration such as 30d, 12h, 15m or 90s`)
  return seconds
}

/** "2@10m": at most 2 retries, 10 minutes after the previous dial ended; "" or "0": none. */
function parseRetry(variable: string, text: string | undefined): { limit: number; delaySeconds: number } | undefined {
  if (text === undefined || text === '0') return undefined
  const m = /^(\d{1,3})@(\d{1,6})([smhd])$/.exec(text)
  const limit = Number(m?.[1])
  const delaySeconds = Number(m?.[2]) * (DURATION_UNITS[m?.[3] ?? ''] ?? NaN)
  if (!m || limit < 1 || delaySeconds < 1) {
    throw new ConfigError(`${variable}: must be COUNT@DELAY, e.g. 2@10m (at most 2 retries, 10 minutes apart; s, m, h or d), or 0 for none`)
  }
  return { limit, delaySeconds }
}

function parseEvents(e: v.InferOutput<typeof EnvSchema>): Config['events'] {
  for (const secret of e.EVENT_WEBHOOK_SECRET) {
    if (!WHSEC.test(secret)) throw new ConfigError('EVENT_WEBHOOK_SECRET: each secret must look like whsec_<base64> (current first, then the previous one)')
  }
  if (e.EVENT_WEBHOOK_SECRET.length > 2) throw new ConfigError('EVENT_WEBHOOK_SECRET: at most two secrets (current and previous) during rotation')
  if (e.EVENT_WEBHOOK_URL && e.EVENT_WEBHOOK_SECRET.length === 0) {
    throw new ConfigError('EVENT_WEBHOOK_SECRET: events are signed; set a whsec_ secret for EVENT_WEBHOOK_URL (share it with the receiver)')
  }
  if (e.EVENT_RETRY_MAX_SECONDS < e.EVENT_RETRY_BASE_SECONDS) throw new ConfigError('EVENT_RETRY_MAX_SECONDS: must be at least EVENT_RETRY_BASE_SECONDS')
  const allowInsecureUrls = e.EVENT_ALLOW_INSECURE_URLS === 'true'
  if (e.EVENT_WEBHOOK_URL && !allowInsecureUrls && !e.EVENT_WEBHOOK_URL.startsWith('https://')) {
    throw new ConfigError('EVENT_WEBHOOK_URL: events go to https:// URLs only (EVENT_ALLOW_INSECURE_URLS=true allows http:// for local runs)')
  }
  return {
    endpoint: e.EVENT_WEBHOOK_URL
      ? { url: e.EVENT_WEBHOOK_URL, secrets: e.EVENT_WEBHOOK_SECRET, eventTypes: e.EVENT_TYPES.length ? e.EVENT_TYPES : null }
      : null,
    allowInsecureUrls,
    timeoutMs: e.EVENT_TIMEOUT_MS,
    perEndpoint: e.EVENT_MAX_IN_FLIGHT_PER_ENDPOINT,
    retry: { limit: e.EVENT_RETRY_LIMIT, baseSeconds: e.EVENT_RETRY_BASE_SECONDS, maxSeconds: e.EVENT_RETRY_MAX_SECONDS },
  }
}

const WHSEC = /^whsec_[A-Za-z0-9+/]+={0,2}$/

function parseCalling(e: v.InferOutput<typeof EnvSchema>): CallingSettings {
  const retries: CallingSettings['retries'] = {}
  for (const [outcome, variable] of [['BUSY', 'RETRY_BUSY'], ['NO_ANSWER', 'RETRY_NO_ANSWER'], ['FAILED', 'RETRY_FAILED']] as const) {
    const retry = parseRetry(variable, e[variable])
    if (retry) retries[outcome] = retry
  }
  return { window: e.CALLING_WINDOW ?? null, caps: { perDay: e.CAP_PER_PHONE_24H, perWeek: e.CAP_PER_PHONE_7D }, retries }
}

/** Parses the environment once; throws ConfigError naming every bad variable. */
export function loadConfig(env: Record<string, string | undefined>): Config {
  const picked = Object.fromEntries(
    Object.keys(EnvSchema.entries).flatMap((key) => (env[key] === undefined || env[key] === '' ? [] : [[key, env[key]]])),
  )
  const result = v.safeParse(EnvSchema, picked)
  if (!result.success) {
    const lines = result.issues.map((issue) => {
      const key = v.getDotPath(issue) ?? '?'
      return `${key}: ${issue.message} (got ${JSON.stringify(env[key])})`
    })
    throw new ConfigError(`invalid configuration:\n  ${lines.join('\n  ')}`)
  }
  const e = result.output
  if (e.RETRY_MAX_SECONDS < e.RETRY_BASE_SECONDS) {
    throw new ConfigError('RETRY_MAX_SECONDS: must be at least RETRY_BASE_SECONDS')
  }
  if (e.SIMULATOR_MAX_DURATION_MS < e.SIMULATOR_MIN_DURATION_MS) {
    throw new ConfigError('SIMULATOR_MAX_DURATION_MS: must be at least SIMULATOR_MIN_DURATION_MS')
  }
  const dialFaults =
    e.SIMULATOR_5XX_RATE + e.SIMULATOR_TIMEOUT_RATE + e.SIMULATOR_429_RATE + e.SIMULATOR_SLOW_202_RATE +
    e.SIMULATOR_5XX_AFTER_PLACING_RATE + e.SIMULATOR_DROP_AFTER_PLACING_RATE
  if (dialFaults > 1) {
    throw new ConfigError(
      'SIMULATOR_*_RATE: the dial faults (5XX, TIMEOUT, 429, SLOW_202, 5XX_AFTER_PLACING, DROP_AFTER_PLACING) share one draw and must add up to at most 1',
    )
  }
  for (const secret of e.WEBHOOK_SECRET) {
    if (!WHSEC.test(secret)) {
      throw new ConfigError('WEBHOOK_SECRET: each secret must look like whsec_<base64>')
    }
  }
  if (e.WEBHOOK_SECRET.length > 2) {
    throw new ConfigError('WEBHOOK_SECRET: at most two secrets (current and previous) during rotation')
  }
  // A token is all it takes to place calls: long enough that it cannot be guessed, even where
  // the API is reachable. ALLOW_SHORT_TOKENS is for a laptop.
  for (const name of ['API_TOKENS', 'API_READ_TOKENS'] as const) {
    if (e.ALLOW_SHORT_TOKENS !== 'true' && e[name].some((token) => token.length < 32)) {
      throw new ConfigError(`${name}: every token needs at least 32 characters (openssl rand -hex 32); ALLOW_SHORT_TOKENS=true allows shorter ones for local use`)
    }
  }
  if (e.API_READ_TOKENS.length > 0 && e.API_TOKENS.length === 0) {
    throw new ConfigError('API_READ_TOKENS: read-only tokens need API_TOKENS set too; without it the API is open to everyone, reads and writes alike')
  }
  if (e.CALLBACK_URL_SECRET !== undefined && e.CALLBACK_URL_SECRET.length < 32) {
    throw new ConfigError('CALLBACK_URL_SECRET: at least 32 characters (openssl rand -base64 32)')
  }
  return {
    databaseUrl: e.DATABASE_URL,
    databaseDirectUrl: e.DATABASE_DIRECT_URL,
    databasePooler: e.DATABASE_POOLER,
    databaseConnections: parseConnections(e.DATABASE_CONNECTIONS ?? e.DATABASE_POOL_MAX),
    embeddedPg: { dir: e.EMBEDDED_PG_DIR, port: e.EMBEDDED_PG_PORT },
    http: {
      host: e.HOST ?? (e.API_TOKENS.length > 0 ? '0.0.0.0' : '127.0.0.1'),
      hostGiven: e.HOST !== undefined,
      port: e.PORT,
      apiTokens: e.API_TOKENS,
      readTokens: e.API_READ_TOKENS,
      allowedHosts: e.ALLOWED_HOSTS.map((h) => h.toLowerCase()),
    },
    retention: { callbackSeconds: parseDuration('CALLBACK_RETENTION', e.CALLBACK_RETENTION), eventSeconds: parseDuration('EVENT_RETENTION', e.EVENT_RETENTION) },
    dispatch: {
      maxConcurrentCalls: e.MAX_CONCURRENT_CALLS,
      maxAttempts: e.MAX_ATTEMPTS,
      retryBaseSeconds: e.RETRY_BASE_SECONDS,
      retryMaxSeconds: e.RETRY_MAX_SECONDS,
      callTimeoutSeconds: e.CALL_TIMEOUT_SECONDS,
      callTtlSeconds: e.CALL_TTL_SECONDS,
      reconcileAfterSeconds: e.RECONCILE_AFTER_SECONDS === 0 ? null : e.RECONCILE_AFTER_SECONDS,
      reconcileRatePerSecond: e.RECONCILE_RATE_PER_SECOND,
      pollMs: e.WORKER_POLL_MS,
      shutdownTimeoutMs: e.SHUTDOWN_TIMEOUT_MS,
    },
    provider: {
      name: e.PROVIDER,
      baseUrl: e.PROVIDER_BASE_URL,
      apiKey: e.PROVIDER_API_KEY,
      timeoutMs: e.PROVIDER_TIMEOUT_MS,
      voicemail: e.VOICEMAIL_OUTCOME,
      vapi: { apiKey: e.VAPI_API_KEY, phoneNumberId: e.VAPI_PHONE_NUMBER_ID, webhookSecret: e.VAPI_WEBHOOK_SECRET, webhookToken: e.VAPI_WEBHOOK_TOKEN, baseUrl: e.VAPI_BASE_URL },
      retell: { apiKey: e.RETELL_API_KEY, fromNumber: e.RETELL_FROM_NUMBER, baseUrl: e.RETELL_BASE_URL },
    },
    publicBaseUrl: e.PUBLIC_BASE_URL ?? `http://127.0.0.1:${e.PORT}`,
    calling: parseCalling(e),
    webhook: { secrets: e.WEBHOOK_SECRET, apiKey: e.WEBHOOK_API_KEY, urlSecret: e.CALLBACK_URL_SECRET },
    events: parseEvents(e),
    logLevel: e.LOG_LEVEL,
    logFormat: e.LOG_FORMAT,
    metricsPort: e.METRICS_PORT,
    simulator: {
      port: e.SIMULATOR_PORT,
      portGiven: env.SIMULATOR_PORT !== undefined && env.SIMULATOR_PORT !== '',
      host: e.SIMULATOR_HOST,
      minDurationMs: e.SIMULATOR_MIN_DURATION_MS,
      maxDurationMs: e.SIMULATOR_MAX_DURATION_MS,
      statusMix: parseStatusMix(e.SIMULATOR_STATUS_MIX),
      slowAcceptMs: e.SIMULATOR_SLOW_202_MS,
      statusLookup: e.SIMULATOR_STATUS_LOOKUP === 'on',
      flavor: e.SIMULATOR_FLAVOR,
      forgetAfterMs: parseDuration('SIMULATOR_FORGET_AFTER', e.SIMULATOR_FORGET_AFTER) * 1000,
      rates: {
        serverError: e.SIMULATOR_5XX_RATE,
        timeout: e.SIMULATOR_TIMEOUT_RATE,
        rateLimited: e.SIMULATOR_429_RATE,
        duplicateCallback: e.SIMULATOR_DUPLICATE_CALLBACK_RATE,
        earlyCallback: e.SIMULATOR_EARLY_CALLBACK_RATE,
        lateCallback: e.SIMULATOR_LATE_CALLBACK_RATE,
        slowAccept: e.SIMULATOR_SLOW_202_RATE,
        serverErrorAfterPlacing: e.SIMULATOR_5XX_AFTER_PLACING_RATE,
        dropAfterPlacing: e.SIMULATOR_DROP_AFTER_PLACING_RATE,
        lostCallback: e.SIMULATOR_LOST_CALLBACK_RATE,
      },
    },
  }
}

export type Mode = 'api' | 'worker' | 'all' | 'migrate' | 'simulator'

/** PROVIDER=retell: the API key creates calls and verifies webhooks; a worker also needs the number to call from. */
function checkRetell(mode: Mode, config: Config): void {
  const retell = config.provider.retell
  // "all" mode without RETELL_API_KEY runs the built-in simulator as Retell, with a key of its own.
  if (mode === 'all' && !retell.apiKey) return
  if ((mode === 'worker' || mode === 'all' || mode === 'api') && !retell.apiKey) {
    throw new ConfigError('RETELL_API_KEY: with PROVIDER=retell the API key (the one with the webhook badge) creates calls and verifies Retell\'s webhooks; set it')
  }
  if ((mode === 'worker' || mode === 'all') && !retell.fromNumber) {
    throw new ConfigError('RETELL_FROM_NUMBER: with PROVIDER=retell calls are placed from a number bought from or imported into Retell; set it (E.164)')
  }
}

/** PROVIDER=vapi: a worker needs its key and number; whatever serves callbacks needs a way to authenticate Vapi's. */
function checkVapi(mode: Mode, config: Config): void {
  const vapi = config.provider.vapi
  // "all" mode without VAPI_API_KEY runs the built-in simulator as Vapi, with keys of its own.
  if (mode === 'all' && !vapi.apiKey) return
  if (mode === 'worker' || mode === 'all') {
    if (!vapi.apiKey) throw new ConfigError('VAPI_API_KEY: with PROVIDER=vapi a worker creates calls with Vapi\'s private API key; set it')
    if (!vapi.phoneNumberId) throw new ConfigError('VAPI_PHONE_NUMBER_ID: with PROVIDER=vapi calls are placed from one of your Vapi phone numbers; set its id')
  }
  if ((mode === 'api' || mode === 'all') && !vapi.webhookSecret && !vapi.webhookToken) {
    throw new ConfigError('VAPI_WEBHOOK_SECRET: with PROVIDER=vapi the API authenticates Vapi\'s server messages with its HMAC credential (or VAPI_WEBHOOK_TOKEN, its Bearer credential); set one')
  }
}

/**
 * What a mode needs beyond each variable's own rules; throws ConfigError naming the variable,
 * so a process that cannot do its job stops at start-up with exit code 78, not later.
 */
export function checkModeConfig(mode: Mode, config: Config): void {
  if (!config.databaseUrl && (config.databaseDirectUrl || config.databasePooler !== 'none')) {
    throw new ConfigError(`${config.databaseDirectUrl ? 'DATABASE_DIRECT_URL' : 'DATABASE_POOLER'}: only with DATABASE_URL (the embedded PostgreSQL has no pooler in front)`)
  }
  const budget = connectionBudget(mode, config.databaseConnections)
  if (mode !== 'simulator' && mode !== 'migrate' && budget.own < 2) {
    throw new ConfigError(`DATABASE_CONNECTIONS: ${mode} mode needs at least ${budget.listeners + budget.boss + 2} (${budget.listeners} listeners, ${budget.boss} for pg-boss, 2 for its own pool)`)
  }
  if ((mode === 'worker' || mode === 'all') && config.databasePooler === 'transaction' && !config.databaseDirectUrl) {
    throw new ConfigError('DATABASE_DIRECT_URL: workers LISTEN for wake-ups, which a pooler in transaction mode cannot carry; set a direct (or session-mode) URL to the same database')
  }
  if (config.provider.name === 'vapi') checkVapi(mode, config)
  if (config.provider.name === 'retell') checkRetell(mode, config)
  const generic = config.provider.name === 'generic'
  const dials = mode === 'worker' || (mode === 'all' && (config.provider.baseUrl || !generic))
  if (mode === 'worker' && generic && !config.provider.baseUrl) {
    throw new ConfigError('PROVIDER_BASE_URL: worker mode dials the provider; set it (only "all" mode falls back to the built-in simulator)')
  }
  const simulated = mode === 'all' && !generic && !config.provider[config.provider.name as 'vapi' | 'retell'].apiKey
  if (!generic && !simulated && (dials || mode === 'api') && config.webhook.secrets.length === 0 && !config.webhook.urlSecret) {
    throw new ConfigError(
      `CALLBACK_URL_SECRET: the webhook URL handed to ${config.provider.name} with each call carries a token only we can make; set CALLBACK_URL_SECRET (or WEBHOOK_SECRET), the same for the API and every worker`,
    )
  }
  if (generic && dials && config.webhook.secrets.length === 0 && !config.webhook.apiKey) {
    throw new ConfigError(
      'WEBHOOK_SECRET: the webhook URLs a worker hands the provider carry a token made with WEBHOOK_SECRET (or CALLBACK_URL_SECRET); set the same one as the API',
    )
  }
  // The key that makes webhook URL tokens never travels: not WEBHOOK_API_KEY, which every
  // API-key callback carries, so whoever saw one could mint URLs for every other call.
  const servesCallbacks = mode === 'api' || mode === 'all' || mode === 'worker'
  if (servesCallbacks && config.webhook.apiKey && config.webhook.secrets.length === 0 && !config.webhook.urlSecret) {
    throw new ConfigError(
      'CALLBACK_URL_SECRET: with WEBHOOK_API_KEY and no WEBHOOK_SECRET, the webhook URLs need a key of their own that never travels; set CALLBACK_URL_SECRET (the same for the API and every worker)',
    )
  }
  if (mode === 'simulator' && config.simulator.flavor === 'vapi' && !config.provider.vapi.webhookSecret && config.webhook.secrets.length === 0) {
    throw new ConfigError('VAPI_WEBHOOK_SECRET: the simulator as Vapi signs its server messages with it; set it, the same as the orchestrator')
  }
  if (mode === 'simulator' && config.simulator.flavor === 'retell' && !config.provider.retell.apiKey) {
    throw new ConfigError('RETELL_API_KEY: the simulator as Retell takes it on creates and signs its webhooks with it; set it, the same as the orchestrator')
  }
  if (mode === 'simulator' && config.simulator.flavor === 'generic' && config.webhook.secrets.length === 0) {
    throw new ConfigError('WEBHOOK_SECRET: the simulator signs its callbacks; set it (whsec_…), the same as the orchestrator')
  }
}

/** The variable names, for `--help` and for the test that keeps `.env.example` complete. */
export const configVariables = Object.keys(EnvSchema.entries)
