import { createCallbackRoute } from '../../src/http/routes/callbacks.ts'
import type { CallingPolicy } from '../../src/domain/policy.ts'
import { createBatchService } from '../../src/services/calls/batches.ts'
import { createCallService } from '../../src/services/calls/service.ts'
import { createSuppressionService } from '../../src/services/calls/suppressions.ts'
import { createDispatchControl } from '../../src/services/dispatch/control.ts'
import { Queues } from '../../src/store/queues.ts'
import { type DeliveryRetry } from '../../src/store/delivery-jobs.ts'
import { batchProgress, callTimeline, consoleCalls } from '../../src/store/console.ts'
import { readStatus } from '../../src/store/status.ts'
import { createEventService } from '../../src/services/events/endpoints.ts'
import { createApp } from '../../src/http/app.ts'
import { sessionStore } from '../../src/http/auth.ts'
import { silentLogger, type Logger } from '../../src/platform/log.ts'
import { NO_FAULTS, ProviderSimulator, type SimulatorOptions } from '../../src/simulator/simulator.ts'
import type { Sql } from '../../src/store/sql.ts'
import type { ProviderWebhook } from '../../src/provider/webhook.ts'
import { createTestDatabase, type TestDatabase } from './db.ts'

export const WEBHOOK_SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'

export interface Harness extends TestDatabase {
  queue: Queues
  app: ReturnType<typeof createApp>
  /** JSON request against the app (no network); returns status, headers and parsed body. */
  call(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<{
    status: number
    headers: Headers
    body: any
  }>
}

interface T {
  teardown(fn: () => Promise<void> | void): void
}

export async function createHarness(
  t: T,
  options: {
    apiTokens?: string[]
    callTtlSeconds?: number
    maxConcurrentCalls?: number
    webhookSecrets?: string[]
    webhookApiKey?: string
    /** CALLBACK_URL_SECRET: the key of the webhook URLs' tokens (default: the webhook secret). */
    callbackUrlSecret?: string
    calling?: CallingPolicy
    /** Event endpoints may be http:// and loopback; true unless a test says otherwise. */
    allowInsecureEventUrls?: boolean
    /** How the event deliveries this harness writes are retried; every second by default. */
    deliveryRetry?: DeliveryRetry
    /** How often an open status page is updated (1 s by default). */
    statusIntervalMs?: number
    /** The pool the services run on, made from the test database's (test/support/faults.ts); `sql` stays the plain one. */
    services?: (sql: Sql) => Sql
    /** Where the app and the callback route log; nowhere by default. */
    log?: Logger
    /** ALLOWED_HOSTS. */
    allowedHosts?: string[]
    /** API_READ_TOKENS. */
    readTokens?: string[]
    /** A provider's webhook (Vapi, Retell) in place of the generic contract's. */
    webhook?: ProviderWebhook
  } = {},
): Promise<Harness> {
  const db = await createTestDatabase(t)
  const sql = options.services?.(db.sql) ?? db.sql
  const queue = new Queues(db.url, silentLogger, { supervise: false, deliveryRetry: options.deliveryRetry ?? { limit: 20, baseSeconds: 1, maxSeconds: 1 } })
  await queue.start()
  t.teardown(() => queue.stop())
  const app = createApp({
    calls: createCallService({
      sql,
      queue,
      callTtlSeconds: options.callTtlSeconds ?? 86_400,
      maxConcurrentCalls: options.maxConcurrentCalls ?? 30,
      calling: options.calling,
    }),
    suppressions: createSuppressionService({ sql, queue }),
    dispatch: createDispatchControl({ sql, maxConcurrentCalls: options.maxConcurrentCalls ?? 30 }),
    batches: createBatchService({ sql, queue, callTtlSeconds: options.callTtlSeconds ?? 86_400, calling: options.calling }),
    events: createEventService({ sql, deliveries: queue.deliveries, allowInsecureUrls: options.allowInsecureEventUrls ?? true }),
    status: { read: () => readStatus(sql, options.maxConcurrentCalls ?? 30), sessions: sessionStore(sql), console: { calls: (f) => consoleCalls(sql, f), timeline: (id) => callTimeline(sql, id), batch: (id) => batchProgress(sql, id) } },
    statusIntervalMs: options.statusIntervalMs,
    apiTokens: options.apiTokens ?? [],
    allowedHosts: options.allowedHosts,
    readTokens: options.readTokens,
    log: options.log ?? silentLogger,
    ready: async () => ({ ok: true, detail: 'ready' }),
    callbacks: createCallbackRoute({
      sql,
      queue,
      secrets: options.webhookSecrets ?? [WEBHOOK_SECRET],
      apiKey: options.webhookApiKey,
      urlSecret: options.callbackUrlSecret,
      log: options.log ?? silentLogger,
      calling: options.calling,
      webhook: options.webhook,
    }),
  })
  return {
    ...db,
    queue,
    app,
    async call(method, path, body, headers = {}) {
      const init: RequestInit = { method, headers: { ...headers } }
      if (body !== undefined) {
        init.body = typeof body === 'string' ? body : JSON.stringify(body)
        ;(init.headers as Record<string, string>)['content-type'] ??= 'application/json'
      }
      return readResponse(await app.request(path, init))
    },
  }
}

/** The provider simulator for tests: no faults and instant calls unless `options` says otherwise. */
export async function startSimulator(
  t: T,
  options: Partial<Omit<SimulatorOptions, 'rates'>> & { rates?: Partial<SimulatorOptions['rates']> } = {},
): Promise<ProviderSimulator> {
  const sim = new ProviderSimulator(
    {
      secret: WEBHOOK_SECRET,
      minDurationMs: 0,
      maxDurationMs: 0,
      statusMix: [{ status: 'COMPLETED', weight: 1 }],
      ...options,
      rates: { ...NO_FAULTS, ...options.rates },
    },
    silentLogger,
  )
  await sim.start()
  t.teardown(() => sim.stop())
  return sim
}

/** A row in `workers`, as a worker process registers itself, for tests that claim directly. */
export async function registerWorker(h: { sql: Harness['sql'] }): Promise<number> {
  const [row] = await h.sql<{ id: number }[]>`INSERT INTO workers (host, pid) VALUES ('test', 1) RETURNING id`
  return row!.id
}

/** Status, headers and body of a response, the body parsed when it is JSON. */
export async function readResponse(res: Response): Promise<{ status: number; headers: Headers; body: any }> {
  const text = await res.text()
  let body: unknown = text
  try {
    body = JSON.parse(text)
  } catch {}
  return { status: res.status, headers: res.headers, body }
}

/**
 * The environment of a `bin/orchestrator worker` beside a harness whose app listens on
 * `apiPort`: its database, `providerUrl` as the provider, callbacks to the app. `more` adds to it
 * or overrides it.
 */
export function workerEnv(h: { url: string }, providerUrl: string, apiPort: number, more: Record<string, string> = {}): Record<string, string> {
  return {
    DATABASE_URL: h.url,
    DATABASE_CONNECTIONS: '8', // several processes share the test server's 100 connections
    PROVIDER_BASE_URL: providerUrl,
    WEBHOOK_SECRET,
    PUBLIC_BASE_URL: `http://127.0.0.1:${apiPort}`,
    WORKER_POLL_MS: '1000',
    ...more,
  }
}

/**
 * An event endpoint that takes every event (nothing listens at its address): events are
 * written only for endpoints that take them, so a test that looks at events registers one.
 */
export async function addEventSink(h: Pick<Harness, 'sql'>): Promise<string> {
  const [row] = await h.sql<{ id: string }[]>`
    INSERT INTO event_endpoints (url, secrets, source) VALUES ('http://127.0.0.1:9/event-sink', ARRAY['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'], 'api') RETURNING id`
  return row!.id
}
