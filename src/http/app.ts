import { Hono, type Context } from 'hono'
import { CALL_STATUSES, toResource } from '../calls/model.ts'
import type { CallbackRoute } from '../callbacks/route.ts'
import type { CallService } from '../calls/service.ts'
import { isDatabaseUnavailable } from '../db/sql.ts'
import { throttled, type Logger } from '../log.ts'
import { bearerToken, matchesSecret } from './auth.ts'
import { readBody } from './body.ts'
import { MAX_METADATA_DEPTH, parseJson, TooDeep } from './input.ts'
import { HttpProblem, problemResponse, toProblem } from './problem.ts'
import * as s from './schemas.ts'

export interface AppDeps {
  calls: CallService
  /** Database reachable and every migration applied. */
  ready: () => Promise<{ ok: boolean; detail: string }>
  apiTokens: readonly string[]
  log: Logger
  /** Mounted at POST /callbacks/call-status when given (src/callbacks/route.ts). */
  callbacks?: CallbackRoute | undefined
}

async function readJson(c: Context): Promise<unknown> {
  const type = c.req.header('content-type') ?? ''
  const text = await readBody(c)
  if (!/^application\/(.+\+)?json\s*(;|$)/i.test(type)) {
    throw new HttpProblem(415, 'unsupported_media_type', 'Send the body as JSON with "Content-Type: application/json".')
  }
  try {
    // The body object is level 1, so metadata may reach level MAX_METADATA_DEPTH + 1.
    return parseJson(text, MAX_METADATA_DEPTH + 1)
  } catch (err) {
    if (err instanceof TooDeep) {
      const field = `body.${err.path.slice(0, 1).join('.')}`
      const message = field === 'body.metadata' ? `must be at most ${MAX_METADATA_DEPTH} levels deep` : 'is nested too deeply'
      throw new HttpProblem(400, 'validation_failed', `The request is not valid: ${field} ${message}.`, { errors: [{ path: field, message }] })
    }
    throw new HttpProblem(400, 'malformed_json', `The body is not valid JSON: ${(err as Error).message}.`)
  }
}

/** The methods each path has, for 405 answers (RFC 9110 §15.5.6: with Allow). */
const ALLOWED: Record<string, string[]> = {
  '/healthz': ['GET'],
  '/readyz': ['GET'],
  '/calls': ['GET', 'POST'],
  '/calls/:id': ['GET', 'PATCH'],
  '/metrics': ['GET'],
  '/callbacks/call-status': ['POST'],
}

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
  app.notFound((c) => problemResponse(c, new HttpProblem(404, 'route_not_found', `No route ${c.req.method} ${c.req.path}.`)))

  app.get('/healthz', (c) => c.json({ status: 'ok' }))
  app.get('/readyz', async (c) => {
    const { ok, detail } = await deps.ready()
    return ok ? c.json({ status: 'ready' }) : problemResponse(c, new HttpProblem(503, 'not_ready', detail))
  })

  if (deps.callbacks) app.post('/callbacks/call-status', (c) => deps.callbacks!.handle(c))

  const authenticate = async (c: Context, next: () => Promise<void>) => {
    if (deps.apiTokens.length > 0 && !matchesSecret(bearerToken(c.req.header('authorization')), deps.apiTokens)) {
      throw new HttpProblem(401, 'unauthorized', 'Send a valid API token as "Authorization: Bearer <token>".', {}, {
        'WWW-Authenticate': 'Bearer realm="call-orchestrator"',
      })
    }
    await next()
  }
  app.use('/calls', authenticate)
  app.use('/calls/*', authenticate)
  app.use('/metrics', authenticate)

  app.post('/calls', async (c) => {
    const key = c.req.header('idempotency-key')
    const idempotencyKey = key === undefined ? undefined : s.parse(s.IdempotencyKey, key, 'header.Idempotency-Key')
    const body = s.parseBody(s.CreateCallBody, await readJson(c))
    const { call, replayed } = await deps.calls.create(body, idempotencyKey)
    c.header('Location', `/calls/${call.id}`)
    if (replayed) c.header('Idempotent-Replayed', 'true')
    return c.json(toResource(call), replayed ? 200 : 201)
  })

  app.get('/calls', async (c) => {
    const q = s.parse(s.ListQuery, s.singleQuery(c.req.queries()), 'query')
    const after = q.cursor === undefined ? undefined : s.decodeCursor(q.cursor)
    const rows = await deps.calls.list({ status: q.status, limit: q.limit + 1, after })
    const page = rows.slice(0, q.limit)
    const nextCursor = rows.length > q.limit ? s.encodeCursor(page[page.length - 1]!.id) : null
    return c.json({ data: page.map(toResource), nextCursor })
  })

  app.get('/calls/:id', async (c) => {
    const id = s.parse(s.CallId, c.req.param('id'), 'path.id')
    return c.json(toResource(await deps.calls.get(id)))
  })

  app.patch('/calls/:id', async (c) => {
    const id = s.parse(s.CallId, c.req.param('id'), 'path.id')
    const body = s.parseBody(s.UpdateCallBody, await readJson(c))
    return c.json(toResource(await deps.calls.update(id, body)))
  })

  app.get('/metrics', async (c) => {
    const format = s.singleQuery(c.req.queries()).format
    if (format !== undefined && format !== 'json' && format !== 'prometheus') {
      throw new HttpProblem(400, 'validation_failed', 'query.format must be "json" or "prometheus".')
    }
    const m = await deps.calls.metrics()
    const accept = c.req.header('accept') ?? ''
    const prometheus = format === 'prometheus' || (format === undefined && /text\/plain/.test(accept) && !/json/.test(accept))
    const refused = Object.fromEntries(deps.callbacks?.refused ?? [])
    if (!prometheus) return c.json({ calls: m.counts, inFlight: m.inFlight, maxConcurrentCalls: m.limit, callbacksRefused: refused })
    const lines = [
      '# HELP orchestrator_calls Calls by status.',
      '# TYPE orchestrator_calls gauge',
      ...CALL_STATUSES.map((status) => `orchestrator_calls{status="${status}"} ${m.counts[status]}`),
      '# HELP orchestrator_calls_in_flight Calls holding one of the concurrency slots.',
      '# TYPE orchestrator_calls_in_flight gauge',
      `orchestrator_calls_in_flight ${m.inFlight}`,
      '# HELP orchestrator_max_concurrent_calls The concurrency limit.',
      '# TYPE orchestrator_max_concurrent_calls gauge',
      `orchestrator_max_concurrent_calls ${m.limit}`,
      '# HELP orchestrator_callbacks_refused_total Callbacks refused unauthenticated or at a URL we did not issue (not stored), by reason, in this process.',
      '# TYPE orchestrator_callbacks_refused_total counter',
      ...Object.entries(refused).map(([reason, n]) => `orchestrator_callbacks_refused_total{reason="${reason}"} ${n}`),
    ]
    return c.body(lines.join('\n') + '\n', 200, { 'Content-Type': 'text/plain; version=0.0.4; charset=utf-8' })
  })

  // Registered last, so they only see methods no route above answered.
  for (const [path, methods] of Object.entries(ALLOWED)) {
    if (path === '/callbacks/call-status' && !deps.callbacks) continue
    const allow = methods.join(', ')
    app.all(path, (c) => {
      if (c.req.method === 'OPTIONS') return c.body(null, 204, { Allow: allow })
      return problemResponse(
        c,
        new HttpProblem(405, 'method_not_allowed', `${c.req.method} is not allowed on ${c.req.path}; use ${allow}.`, {}, { Allow: allow }),
      )
    })
  }

  return app
}
