import { Hono, type Context } from 'hono'
import { requestId } from 'hono/request-id'
import { CALL_STATUSES } from '../domain/call.ts'
import type { CallbackRoute } from './routes/callbacks.ts'
import type { BatchService } from '../services/calls/batches.ts'
import type { CallService } from '../services/calls/service.ts'
import type { EventService } from '../services/events/endpoints.ts'
import type { SuppressionService } from '../services/calls/suppressions.ts'
import { isDatabaseUnavailable } from '../store/sql.ts'
import type { DispatchControl } from '../services/dispatch/control.ts'
import { Gauge, Registry } from 'prom-client'
import { refusalTally, throttled, type Logger } from '../platform/log.ts'
import { exposition, metrics } from '../platform/metrics.ts'
import { bearerToken, hostName, matchesSecret, sameOrigin } from './auth.ts'
import { OPERATIONS } from './openapi/operations.ts'
import { openApiRoutes } from './openapi/routes.ts'
import { HttpProblem, problemResponse, toProblem } from './problem.ts'
import { batchRoutes, callRoutes } from './routes/calls.ts'
import { eventRoutes } from './routes/events.ts'
import { dispatchRoutes, suppressionRoutes } from './routes/policy.ts'
import { statusRoutes, type StatusBoard } from './routes/status.ts'
import * as s from './schemas.ts'

export interface AppDeps {
  calls: CallService
  /** Database reachable and every migration applied. */
  ready: () => Promise<{ ok: boolean; detail: string }>
  apiTokens: readonly string[]
  /** API_READ_TOKENS: they read (GET, the status page, metrics); a write with one is a 403. */
  readTokens?: readonly string[] | undefined
  /** ALLOWED_HOSTS: the Host headers answered (but on /healthz and /readyz); empty or absent: any. */
  allowedHosts?: readonly string[] | undefined
  log: Logger
  /** Mounted at POST /callbacks/call-status when given (src/http/routes/callbacks.ts). */
  callbacks?: CallbackRoute | undefined
  /** /suppressions, the do-not-call list, when given. */
  suppressions?: SuppressionService | undefined
  /** /dispatch, pause and the limit at run time, when given. */
  dispatch?: DispatchControl | undefined
  /** POST /calls/batch, a batch's read and cancel, and POST /calls/:id/cancel and /retry, when given. */
  batches?: BatchService | undefined
  /** /event-endpoints and /events, when given. */
  events?: EventService | undefined
  /** The status page (GET /, /status.json, /status/events, /login, /logout), when given. */
  status?: StatusBoard | undefined
  /** How often an open status page is updated; 1 s unless a test says otherwise. */
  statusIntervalMs?: number | undefined
}

// The route table is OPERATIONS (src/http/openapi/operations.ts): the OpenAPI document, which
// paths want a token, what a 405 answers in Allow, and which paths are served with the parts a
// process has are all read from it.

/** The methods each path has, for 405 answers (RFC 9110 §15.5.6: with Allow). */
export const ALLOWED: Record<string, string[]> = {}
const METHOD_ORDER = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE']
for (const op of OPERATIONS) (ALLOWED[op.path] ??= []).push(op.method.toUpperCase())
for (const methods of Object.values(ALLOWED)) methods.sort((a, b) => METHOD_ORDER.indexOf(a) - METHOD_ORDER.indexOf(b))

/**
 * The route path a request path names: of those that match it, the one whose first differing
 * segment is static rather than a parameter (/suppressions/import before /suppressions/:phone).
 */
export function pathOf(paths: readonly string[], requestPath: string): string | undefined {
  const given = requestPath.split('/')
  const matching = paths.filter((path) => {
    const parts = path.split('/')
    return parts.length === given.length && parts.every((part, i) => part.startsWith(':') ? given[i] !== '' : part === given[i])
  })
  const rank = (path: string) => path.split('/').map((part) => (part.startsWith(':') ? '1' : '0')).join('')
  return matching.sort((a, b) => rank(a).localeCompare(rank(b)))[0]
}

/** Whether a path's routes are served: the part they need is wired in. */
const served = (path: string, deps: AppDeps): boolean =>
  OPERATIONS.filter((op) => op.path === path).every((op) => !op.needs || !!deps[op.needs])

/**
 * The paths behind a token: every path of an admin or read route, and every other path under
 * its first segment (so an unknown path there is a 401 before it is a 404). The status page
 * checks its own (a browser navigating cannot send a Bearer header: routes/status.ts).
 */
const TOKEN_PATHS = [
  ...new Set(
    OPERATIONS.filter((op) => op.access === 'admin' || op.access === 'read').flatMap((op) => {
      const top = `/${op.path.split('/')[1]}`
      return [top, `${top}/*`]
    }),
  ),
]

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS'])

/** What a 503 asks clients to wait before trying again while the database is away. */
const RETRY_AFTER_SECONDS = 2

/** The Hono app; it never listens (see serve.ts), so tests drive it with app.request(). */
export function createApp(deps: AppDeps): Hono {
  const app = new Hono()
  const floods = throttled(deps.log, 10_000)

  app.onError((err, c) => {
    const problem = toProblem(err)
    if (problem) return problemResponse(c, problem)
    if (isDatabaseUnavailable(err)) {
      // Nothing was done (or it was rolled back): the client, or the provider's webhook
      // sender, should simply try again.
      floods.warn('database unavailable; answering 503', { method: c.req.method, path: c.req.path, err })
      return problemResponse(
        c,
        new HttpProblem(503, 'database_unavailable', 'The database is unavailable for a moment; nothing was changed. Try again shortly.', {}, {
          'Retry-After': String(RETRY_AFTER_SECONDS),
        }),
      )
    }
    deps.log.error('unhandled error', { method: c.req.method, path: c.req.path, err })
    return problemResponse(c, new HttpProblem(500, 'internal_error', 'Something went wrong on our side; it has been logged.'))
  })
  // One line per request: method, path (never the query: callback URLs carry tokens there),
  // status and time, under a request id the client can quote (X-Request-Id, theirs or ours).
  // Probes and scrapes only at debug level, or they would drown the rest.
  // Refused requests (401, 403) only at debug level: whoever sends them chooses their path and
  // request id, and a flood of them would fill the log. They are summed up once a minute.
  const refusals = refusalTally(deps.log, 'requests refused in the last minute')
  app.use('*', requestId({ limitLength: 128 }), async (c, next) => {
    const started = performance.now()
    await next()
    const refused = c.res.status === 401 || c.res.status === 403
    if (refused && c.req.path !== '/callbacks/call-status') refusals.count(`${c.res.status}`)
    const quiet = refused || c.req.path === '/healthz' || c.req.path === '/readyz' || c.req.path === '/metrics'
    deps.log[quiet ? 'debug' : 'info']('request', {
      requestId: c.get('requestId'),
      method: c.req.method,
      path: c.req.path,
      status: c.res.status,
      ms: Math.round((performance.now() - started) * 10) / 10,
    })
  })
  // DNS rebinding: a name the attacker controls, pointed at this server, would make a victim's
  // browser send requests here as "same origin". With ALLOWED_HOSTS, only our own names are answered.
  const allowedHosts = new Set(deps.allowedHosts ?? [])
  if (allowedHosts.size > 0) {
    app.use('*', async (c, next) => {
      const probe = c.req.path === '/healthz' || c.req.path === '/readyz'
      if (!probe && !allowedHosts.has(hostName(c.req.header('host')))) {
        throw new HttpProblem(403, 'host_not_allowed', 'This API does not answer to that host name (ALLOWED_HOSTS).')
      }
      await next()
    })
  }
  // A page on another site can make a browser send a simple POST (a form, text/plain) with no
  // preflight: a request that changes something and says it comes from another origin is
  // refused. curl and servers send neither Origin nor Sec-Fetch-Site, and are not refused; nor
  // is the provider's callback, whose signature and URL token decide.
  app.use('*', async (c, next) => {
    if (!SAFE_METHODS.has(c.req.method) && c.req.path !== '/callbacks/call-status' && !sameOrigin(c)) {
      throw new HttpProblem(403, 'cross_origin', 'A request from a page on another site is refused: send it from a client of your own, or from this server’s own page.')
    }
    await next()
  })
  app.notFound((c) => problemResponse(c, new HttpProblem(404, 'route_not_found', `No route ${c.req.method} ${c.req.path}.`)))

  app.get('/healthz', (c) => c.json({ status: 'ok' }))
  app.get('/readyz', async (c) => {
    const { ok, detail } = await deps.ready()
    return ok ? c.json({ status: 'ready' }) : problemResponse(c, new HttpProblem(503, 'not_ready', detail))
  })

  openApiRoutes(app)

  if (deps.callbacks) app.post('/callbacks/call-status', (c) => deps.callbacks!.handle(c))

  const readTokens = deps.readTokens ?? []
  const authenticate = async (c: Context, next: () => Promise<void>) => {
    if (deps.apiTokens.length > 0) {
      const presented = bearerToken(c.req.header('authorization'))
      if (!matchesSecret(presented, deps.apiTokens)) {
        if (!matchesSecret(presented, readTokens)) {
          throw new HttpProblem(401, 'unauthorized', 'Send a valid API token as "Authorization: Bearer <token>".', {}, {
            'WWW-Authenticate': 'Bearer realm="call-orchestrator"',
          })
        }
        if (!SAFE_METHODS.has(c.req.method)) throw new HttpProblem(403, 'read_only_token', 'This token may read, not change anything: use one of API_TOKENS.')
      }
    }
    await next()
  }
  for (const path of TOKEN_PATHS) app.use(path, authenticate)

  // A method a path does not have: 405 with Allow (OPTIONS: 204 with Allow). Decided before
  // the routes, on the path the request names, static segments before parameters (so GET
  // /suppressions/import is a 405, not a look-up of the number "import"); a method the path
  // has goes on to its route.
  const paths = Object.keys(ALLOWED).filter((path) => served(path, deps))
  app.use('*', async (c, next) => {
    const path = pathOf(paths, c.req.path)
    if (!path) return next()
    const methods = ALLOWED[path]!
    if (methods.includes(c.req.method === 'HEAD' ? 'GET' : c.req.method)) return next()
    const allow = methods.join(', ')
    if (c.req.method === 'OPTIONS') return c.body(null, 204, { Allow: allow })
    throw new HttpProblem(405, 'method_not_allowed', `${c.req.method} is not allowed on ${c.req.path}; use ${allow}.`, {}, { Allow: allow })
  })

  if (deps.batches) batchRoutes(app, deps.calls, deps.batches)
  callRoutes(app, deps.calls)
  if (deps.suppressions) suppressionRoutes(app, deps.suppressions)
  if (deps.dispatch) dispatchRoutes(app, deps.dispatch)
  if (deps.events) eventRoutes(app, deps.events)
  // Its own access check: a browser navigating to / cannot send a Bearer header (routes/status.ts).
  if (deps.status) statusRoutes(app, { status: deps.status, calls: deps.calls, apiTokens: deps.apiTokens, readTokens, log: deps.log, intervalMs: deps.statusIntervalMs })

  // What the database holds, as gauges beside this process's own metrics (src/platform/metrics.ts).
  const database = new Registry()
  const gauge = (name: string, help: string, labelNames: string[] = []) => new Gauge({ name, help, labelNames, registers: [database] })
  const gauges = {
    calls: gauge('orchestrator_calls', 'Calls by status (all of them, not only this process’s).', ['status']),
    inFlight: gauge('orchestrator_calls_in_flight', 'Calls holding one of the concurrency slots.'),
    freeSlots: gauge('orchestrator_free_slots', 'Slots free: the limit in force minus the calls in flight (0 while paused).'),
    limit: gauge('orchestrator_max_concurrent_calls', 'The concurrency limit in force.'),
    paused: gauge('orchestrator_dispatch_paused', '1 while dispatch is paused (POST /dispatch/pause).'),
  }

  app.get('/metrics', async (c) => {
    const { format } = s.parse(s.MetricsQuery, s.singleQuery(c.req.queries()), 'query')
    const m = await deps.calls.metrics()
    const freeSlots = m.paused ? 0 : Math.max(0, m.limit - m.inFlight)
    const accept = c.req.header('accept') ?? ''
    const prometheus = format === 'prometheus' || (format === undefined && /text\/plain/.test(accept) && !/json/.test(accept))
    if (!prometheus) {
      const refused = Object.fromEntries((await metrics.callbacksRefused.get()).values.map((v) => [v.labels.reason, v.value]))
      return c.json({ calls: m.counts, inFlight: m.inFlight, freeSlots, maxConcurrentCalls: m.limit, paused: m.paused, callbacksRefused: refused })
    }
    for (const status of CALL_STATUSES) gauges.calls.set({ status }, m.counts[status])
    gauges.inFlight.set(m.inFlight)
    gauges.freeSlots.set(freeSlots)
    gauges.limit.set(m.limit)
    gauges.paused.set(m.paused ? 1 : 0)
    const { body, contentType } = await exposition(database)
    return c.body(body, 200, { 'Content-Type': contentType })
  })

  return app
}
