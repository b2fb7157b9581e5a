import { readFile } from 'node:fs/promises'
import t from 'tap'
import { ConfigError, configVariables } from '../src/config.ts'
import { loadSettings } from '../src/settings.ts'

// loadSettings is a pure function of the environment it is given; no database needed.

t.test('defaults', async (t) => {
  const c = loadSettings({})
  t.equal(c.databaseUrl, undefined)
  t.same(c.embeddedPg, { dir: '.data/postgres', port: 25432 })
  t.same(c.http, { host: '127.0.0.1', hostGiven: false, port: 3000, apiTokens: [], readTokens: [], allowedHosts: [] }, 'an open API listens on this machine only')
  t.same(c.dispatch, {
    maxConcurrentCalls: 30,
    maxAttempts: 3,
    retryBaseSeconds: 5,
    retryMaxSeconds: 300,
    callTimeoutSeconds: 1800,
    callTtlSeconds: 86_400,
    reconcileAfterSeconds: 120,
    reconcileRatePerSecond: 5,
    pollMs: 5000,
    shutdownTimeoutMs: 15_000,
  })
  t.same(c.provider, {
    name: 'generic',
    baseUrl: undefined,
    apiKey: undefined,
    timeoutMs: 10_000,
    voicemail: 'NO_ANSWER',
    vapi: { apiKey: undefined, phoneNumberId: undefined, webhookSecret: undefined, webhookToken: undefined, baseUrl: 'https://api.vapi.ai' },
    retell: { apiKey: undefined, fromNumber: undefined, baseUrl: 'https://api.retellai.com' },
  })
  t.equal(c.publicBaseUrl, 'http://127.0.0.1:3000')
  t.same(c.webhook, { secrets: [], apiKey: undefined })
  t.equal(c.logLevel, 'info')
  t.equal(c.simulator.port, 4010)
  t.equal(c.simulator.minDurationMs, 2000)
  t.equal(c.simulator.maxDurationMs, 8000)
  t.same(c.simulator.statusMix, [{ status: 'COMPLETED', weight: 1 }], 'out of the box, every simulated call completes')
  t.same(c.simulator.rates, {
    serverError: 0,
    timeout: 0,
    rateLimited: 0,
    duplicateCallback: 0,
    earlyCallback: 0,
    lateCallback: 0,
    slowAccept: 0,
    serverErrorAfterPlacing: 0,
    dropAfterPlacing: 0,
    lostCallback: 0,
  })
  t.equal(c.simulator.statusLookup, true)
  t.equal(c.simulator.slowAcceptMs, 15_000)
})

t.test('RECONCILE_AFTER_SECONDS=0 turns status look-ups off', async (t) => {
  t.equal(loadSettings({ RECONCILE_AFTER_SECONDS: '0' }).dispatch.reconcileAfterSeconds, null)
})

t.test('values are parsed', async (t) => {
  const c = loadSettings({
    DATABASE_URL: 'postgres://u@h:5/db',
    PORT: ' 8080 ',
    API_TOKENS: ' a , b ,,',
    ALLOW_SHORT_TOKENS: 'true',
    MAX_CONCURRENT_CALLS: '7',
    MAX_ATTEMPTS: '1',
    PROVIDER_BASE_URL: 'https://provider.example/',
    PUBLIC_BASE_URL: 'http://me.example:9/',
    WEBHOOK_SECRET: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw,whsec_AAAA',
    LOG_LEVEL: 'debug',
    SIMULATOR_5XX_RATE: '0.25',
    SIMULATOR_STATUS_MIX: 'COMPLETED:1',
  })
  t.equal(c.databaseUrl, 'postgres://u@h:5/db')
  t.equal(c.http.port, 8080)
  t.same(c.http.apiTokens, ['a', 'b'])
  t.equal(c.dispatch.maxConcurrentCalls, 7)
  t.equal(c.dispatch.maxAttempts, 1)
  t.equal(c.provider.baseUrl, 'https://provider.example', 'trailing slash removed')
  t.equal(c.publicBaseUrl, 'http://me.example:9')
  t.same(c.webhook.secrets, ['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'whsec_AAAA'])
  t.equal(c.logLevel, 'debug')
  t.equal(c.simulator.rates.serverError, 0.25)
  t.same(c.simulator.statusMix, [{ status: 'COMPLETED', weight: 1 }])
  t.equal(loadSettings({ PORT: '4000' }).publicBaseUrl, 'http://127.0.0.1:4000', 'public URL follows PORT')
  t.equal(c.http.host, '0.0.0.0', 'with API tokens, every address by default')
  t.same(loadSettings({ HOST: '0.0.0.0' }).http, { host: '0.0.0.0', hostGiven: true, port: 3000, apiTokens: [], readTokens: [], allowedHosts: [] }, 'HOST given: as given, tokens or not')
  t.same(loadSettings({ ALLOWED_HOSTS: 'API.example.com, localhost' }).http.allowedHosts, ['api.example.com', 'localhost'])
})

t.test('event settings', async (t) => {
  t.same(loadSettings({}).events, {
    endpoint: null,
    allowInsecureUrls: false,
    timeoutMs: 10_000,
    perEndpoint: 4,
    retry: { limit: 20, baseSeconds: 10, maxSeconds: 7200 },
  })
  const c = loadSettings({
    EVENT_WEBHOOK_URL: 'http://127.0.0.1:8080/hooks/',
    EVENT_WEBHOOK_SECRET: 'whsec_BBBB, whsec_AAAA',
    EVENT_TYPES: 'call.completed, call.failed',
    EVENT_ALLOW_INSECURE_URLS: 'true',
  })
  t.same(c.events.endpoint, { url: 'http://127.0.0.1:8080/hooks', secrets: ['whsec_BBBB', 'whsec_AAAA'], eventTypes: ['call.completed', 'call.failed'] })
  t.equal(c.events.allowInsecureUrls, true)
})

t.test('empty strings count as unset', async (t) => {
  const env = Object.fromEntries(configVariables.map((name) => [name, '']))
  const c = loadSettings(env)
  t.same(c, loadSettings({}))
  t.equal(c.dispatch.maxConcurrentCalls, 30)
  t.equal(c.logLevel, 'info')
})

t.test('bad values throw a ConfigError naming the variable', async (t) => {
  const cases: Array<[Record<string, string>, string]> = [
    [{ MAX_CONCURRENT_CALLS: 'abc' }, 'MAX_CONCURRENT_CALLS'],
    [{ MAX_CONCURRENT_CALLS: '0' }, 'MAX_CONCURRENT_CALLS'],
    [{ MAX_CONCURRENT_CALLS: '-1' }, 'MAX_CONCURRENT_CALLS'],
    [{ MAX_CONCURRENT_CALLS: '1.5' }, 'MAX_CONCURRENT_CALLS'],
    [{ MAX_ATTEMPTS: '0' }, 'MAX_ATTEMPTS'],
    [{ PORT: '70000' }, 'PORT'],
    [{ PORT: 'http' }, 'PORT'],
    [{ EMBEDDED_PG_PORT: '0' }, 'EMBEDDED_PG_PORT'],
    [{ PROVIDER_BASE_URL: 'ftp://x' }, 'PROVIDER_BASE_URL'],
    [{ PROVIDER_BASE_URL: 'not a url' }, 'PROVIDER_BASE_URL'],
    [{ PUBLIC_BASE_URL: 'ftp://x' }, 'PUBLIC_BASE_URL'],
    [{ DATABASE_URL: 'mysql://x' }, 'DATABASE_URL'],
    [{ WEBHOOK_SECRET: 'nope' }, 'WEBHOOK_SECRET'],
    [{ WEBHOOK_SECRET: 'whsec_AAAA,whsec_BBBB,whsec_CCCC' }, 'WEBHOOK_SECRET'],
    [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL'],
    [{ CALL_TIMEOUT_SECONDS: String(20 * 3600 + 1) }, 'CALL_TIMEOUT_SECONDS'],
    [{ CALL_TIMEOUT_SECONDS: '4' }, 'CALL_TIMEOUT_SECONDS'],
    [{ RETRY_BASE_SECONDS: '10', RETRY_MAX_SECONDS: '5' }, 'RETRY_MAX_SECONDS'],
    [{ SIMULATOR_MIN_DURATION_MS: '10', SIMULATOR_MAX_DURATION_MS: '5' }, 'SIMULATOR_MAX_DURATION_MS'],
    [{ SIMULATOR_STATUS_MIX: 'RINGING:1' }, 'SIMULATOR_STATUS_MIX'],
    [{ SIMULATOR_STATUS_MIX: 'COMPLETED:0' }, 'SIMULATOR_STATUS_MIX'],
    [{ SIMULATOR_5XX_RATE: '1.5' }, 'SIMULATOR_5XX_RATE'],
    [{ SIMULATOR_LATE_CALLBACK_RATE: '-0.1' }, 'SIMULATOR_LATE_CALLBACK_RATE'],
    // A call cannot wait longer than pg-boss keeps its job: 0 ("never expire") is no longer possible.
    [{ CALL_TTL_SECONDS: '0' }, 'CALL_TTL_SECONDS'],
    [{ CALL_TTL_SECONDS: String(365 * 86_400 + 1) }, 'CALL_TTL_SECONDS'],
    [{ SIMULATOR_5XX_RATE: '0.6', SIMULATOR_SLOW_202_RATE: '0.5' }, 'SIMULATOR_\\*_RATE'],
    [{ SIMULATOR_STATUS_LOOKUP: 'yes' }, 'SIMULATOR_STATUS_LOOKUP'],
    [{ EVENT_WEBHOOK_URL: 'https://hooks.example/x' }, 'EVENT_WEBHOOK_SECRET'],
    [{ EVENT_WEBHOOK_URL: 'https://hooks.example/x', EVENT_WEBHOOK_SECRET: 'secret' }, 'EVENT_WEBHOOK_SECRET'],
    [{ EVENT_WEBHOOK_URL: 'https://hooks.example/x', EVENT_WEBHOOK_SECRET: 'whsec_AAAA,whsec_BBBB,whsec_CCCC' }, 'EVENT_WEBHOOK_SECRET'],
    [{ EVENT_WEBHOOK_URL: 'http://hooks.example/x', EVENT_WEBHOOK_SECRET: 'whsec_AAAA' }, 'EVENT_WEBHOOK_URL'],
    [{ EVENT_WEBHOOK_URL: 'ftp://hooks.example/x', EVENT_WEBHOOK_SECRET: 'whsec_AAAA' }, 'EVENT_WEBHOOK_URL'],
    [{ EVENT_TYPES: 'call.completed,call.nope' }, 'EVENT_TYPES'],
    [{ EVENT_ALLOW_INSECURE_URLS: 'yes' }, 'EVENT_ALLOW_INSECURE_URLS'],
    [{ EVENT_TIMEOUT_MS: '20001' }, 'EVENT_TIMEOUT_MS'],
    [{ EVENT_MAX_IN_FLIGHT_PER_ENDPOINT: '0' }, 'EVENT_MAX_IN_FLIGHT_PER_ENDPOINT'],
    [{ EVENT_RETRY_BASE_SECONDS: '60', EVENT_RETRY_MAX_SECONDS: '10' }, 'EVENT_RETRY_MAX_SECONDS'],
  ]
  for (const [env, variable] of cases) {
    let error: unknown
    try {
      loadSettings(env)
    } catch (err) {
      error = err
    }
    t.ok(error instanceof ConfigError, `${JSON.stringify(env)} throws a ConfigError`)
    t.match((error as Error | undefined)?.message ?? '', new RegExp(`\\b${variable}\\b`), `${JSON.stringify(env)} names ${variable}`)
  }
})

t.test('every bad variable is named at once', async (t) => {
  t.throws(() => loadSettings({ PORT: '70000', LOG_LEVEL: 'loud' }), { name: 'ConfigError', message: /PORT[\s\S]*LOG_LEVEL/ })
})

t.test('.env.example lists exactly the variables the config reads', async (t) => {
  const text = await readFile(new URL('../.env.example', import.meta.url), 'utf8')
  const documented = [...text.matchAll(/^([A-Z][A-Z0-9_]*)=/gm)].map((m) => m[1]!)
  t.ok(documented.length > 0)
  t.same([...new Set(documented)].sort(), documented.slice().sort(), 'no variable documented twice')
  t.same(documented.slice().sort(), configVariables.slice().sort())
  for (const name of configVariables) t.ok(documented.includes(name), `${name} is in .env.example`)
  for (const name of documented) t.ok(configVariables.includes(name), `${name} is a config variable`)
})

t.test('.env.example defaults are the defaults', async (t) => {
  const text = await readFile(new URL('../.env.example', import.meta.url), 'utf8')
  const env = Object.fromEntries([...text.matchAll(/^([A-Z][A-Z0-9_]*)=(.*)$/gm)].map((m) => [m[1]!, m[2]!]))
  t.same(loadSettings(env), loadSettings({}))
})

t.test('behind a transaction pooler: DATABASE_POOLER and DATABASE_DIRECT_URL', async (t) => {
  const { checkModeConfig } = await import('../src/config.ts')
  const pooled = { DATABASE_URL: 'postgres://u@pooler:6432/db', DATABASE_POOLER: 'transaction', PROVIDER_BASE_URL: 'http://p', WEBHOOK_SECRET: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw' }
  const c = loadSettings({ ...pooled, DATABASE_DIRECT_URL: 'postgres://u@db:5432/db' })
  t.equal(c.databasePooler, 'transaction')
  t.equal(c.databaseDirectUrl, 'postgres://u@db:5432/db')
  t.doesNotThrow(() => checkModeConfig('worker', c))
  t.throws(() => checkModeConfig('worker', loadSettings(pooled)), /DATABASE_DIRECT_URL: workers LISTEN/, 'a worker behind a pooler needs a direct URL')
  t.doesNotThrow(() => checkModeConfig('api', loadSettings(pooled)), 'the API does not LISTEN')
  t.throws(() => checkModeConfig('all', loadSettings({ DATABASE_POOLER: 'transaction' })), /DATABASE_POOLER: only with DATABASE_URL/)
  t.throws(() => loadSettings({ DATABASE_POOLER: 'session' }), ConfigError, 'none or transaction')
  t.equal(loadSettings({}).databasePooler, 'none')
})

t.test('PROVIDER=vapi: what each mode needs, named', async (t) => {
  const { checkModeConfig } = await import('../src/config.ts')
  const vapi = { PROVIDER: 'vapi', VAPI_API_KEY: 'k', VAPI_PHONE_NUMBER_ID: 'pn', VAPI_WEBHOOK_SECRET: 's', CALLBACK_URL_SECRET: 'a-key-of-at-least-32-characters-000000' }
  const without = (name: string) => loadSettings(Object.fromEntries(Object.entries(vapi).filter(([k]) => k !== name)))
  for (const mode of ['worker', 'api', 'all'] as const) t.doesNotThrow(() => checkModeConfig(mode, loadSettings(vapi)), `${mode}: all set`)
  t.throws(() => checkModeConfig('worker', without('VAPI_API_KEY')), /^VAPI_API_KEY:/)
  t.throws(() => checkModeConfig('all', without('VAPI_PHONE_NUMBER_ID')), /^VAPI_PHONE_NUMBER_ID:/)
  t.doesNotThrow(() => checkModeConfig('api', without('VAPI_API_KEY')), 'the API creates no calls')
  t.throws(() => checkModeConfig('api', without('VAPI_WEBHOOK_SECRET')), /^VAPI_WEBHOOK_SECRET:/, 'the API authenticates server messages')
  t.doesNotThrow(() => checkModeConfig('api', loadSettings({ ...vapi, VAPI_WEBHOOK_SECRET: '', VAPI_WEBHOOK_TOKEN: 't' })), 'or with the Bearer credential')
  t.doesNotThrow(() => checkModeConfig('worker', without('VAPI_WEBHOOK_SECRET')), 'a worker receives none')
  t.throws(() => checkModeConfig('worker', without('CALLBACK_URL_SECRET')), /^CALLBACK_URL_SECRET:/, 'the webhook URL needs a key for its token')
  t.throws(() => loadSettings({ PROVIDER: 'bland' }), /PROVIDER/)
  t.doesNotThrow(() => checkModeConfig('all', loadSettings({ PROVIDER: 'vapi' })), '"all" without a Vapi key: the built-in simulator plays Vapi')
  t.doesNotThrow(() => checkModeConfig('all', loadSettings({ PROVIDER: 'retell' })), 'and Retell')
  t.throws(() => checkModeConfig('worker', loadSettings({ PROVIDER: 'vapi' })), /^VAPI_API_KEY:/, 'a worker has no simulator to fall back on')
  t.throws(() => checkModeConfig('simulator', loadSettings({ SIMULATOR_FLAVOR: 'vapi' })), /^VAPI_WEBHOOK_SECRET:/, 'the simulator as Vapi signs with its secret')
  t.throws(() => checkModeConfig('simulator', loadSettings({ SIMULATOR_FLAVOR: 'retell' })), /^RETELL_API_KEY:/, 'the simulator as Retell with its key')
  t.doesNotThrow(() => checkModeConfig('simulator', loadSettings({ SIMULATOR_FLAVOR: 'retell', RETELL_API_KEY: 'k' })))
  t.throws(() => loadSettings({ SIMULATOR_FLAVOR: 'bland' }), /SIMULATOR_FLAVOR/)
  const retell = { PROVIDER: 'retell', RETELL_API_KEY: 'k', RETELL_FROM_NUMBER: '+14155550100', CALLBACK_URL_SECRET: 'a-key-of-at-least-32-characters-000000' }
  for (const mode of ['worker', 'api', 'all'] as const) t.doesNotThrow(() => checkModeConfig(mode, loadSettings(retell)), `retell, ${mode}: all set`)
  t.throws(() => checkModeConfig('api', loadSettings({ ...retell, RETELL_API_KEY: '' })), /^RETELL_API_KEY:/, 'the API verifies webhooks with the key')
  t.throws(() => checkModeConfig('worker', loadSettings({ ...retell, RETELL_FROM_NUMBER: '' })), /^RETELL_FROM_NUMBER:/)
  t.doesNotThrow(() => checkModeConfig('api', loadSettings({ ...retell, RETELL_FROM_NUMBER: '' })), 'the API places no calls')
  t.throws(() => loadSettings({ VOICEMAIL_OUTCOME: 'FAILED' }), /VOICEMAIL_OUTCOME/)
  t.equal(loadSettings({ ...vapi, VOICEMAIL_OUTCOME: 'COMPLETED' }).provider.voicemail, 'COMPLETED')
})

t.test('DATABASE_CONNECTIONS: one budget per process, pools and listeners together', async (t) => {
  const { checkModeConfig, connectionBudget } = await import('../src/config.ts')
  t.equal(loadSettings({}).databaseConnections, 10)
  t.same(connectionBudget('worker', 10), { own: 6, boss: 2, listeners: 2, total: 10 })
  t.same(connectionBudget('api', 10), { own: 8, boss: 2, listeners: 0, total: 10 })
  const sum = (b: { own: number; boss: number; listeners: number }) => b.own + b.boss + b.listeners
  t.ok(sum(connectionBudget('api', 10)) + 8 * sum(connectionBudget('worker', 10)) <= 90, 'the default fits an API and 8 workers in max_connections 100, 10 to spare')
  t.equal(loadSettings({ DATABASE_POOL_MAX: '12' }).databaseConnections, 12, 'the older name still counts')
  t.equal(loadSettings({ DATABASE_POOL_MAX: '12', DATABASE_CONNECTIONS: '20' }).databaseConnections, 20, 'the new one wins')
  t.throws(() => loadSettings({ DATABASE_CONNECTIONS: '3' }), /DATABASE_CONNECTIONS: must be a whole number from 4/)
  const worker = { PROVIDER_BASE_URL: 'http://p', WEBHOOK_SECRET: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw' }
  t.throws(() => checkModeConfig('worker', loadSettings({ ...worker, DATABASE_CONNECTIONS: '4' })), /worker mode needs at least 5/)
  t.doesNotThrow(() => checkModeConfig('worker', loadSettings({ ...worker, DATABASE_CONNECTIONS: '5' })))
  t.doesNotThrow(() => checkModeConfig('api', loadSettings({ DATABASE_CONNECTIONS: '4' })))
})
