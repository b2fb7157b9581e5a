import { Hono, type Context } from 'hono'
import { bodyLimit } from 'hono/body-limit'
import { CALL_STATUSES, toResource } from '../calls/model.ts'
import type { CallService } from '../calls/service.ts'
import { isDatabaseUnavailable } from '../db/sql.ts'
import { throttled, type Logger } from '../log.ts'
import { bearerToken, matchesSecret } from './auth.ts'
import { HttpProblem, problemResponse, toProblem } from './problem.ts'
import * as s from './schemas.ts'

export interface AppDeps {
  calls: CallService
  /** Database reachable and every migration applied. */
  ready: () => Promise<{ ok: boolean; detail: string }>
  apiTokens: readonly string[]
  log: Logger
  /** Mounted at POST /callbacks/call-status when given (src/callbacks/route.ts). */
  callbacks?: ((c: Context) => Promise<Response>) | undefined
}

async function readJson(c: Context): Promise<unknown> {
  const type = c.req.header('content-type') ?? ''
  if (!/^application\/(.+\+)?json\s*(;|$)/i.test(type)) {
    throw new HttpProblem(415, 'unsupported_media_type', 'Send the body as JSON with "Content-Type: application/json".')
  }
  const text = await c.req.text()
  try {
    return JSON.parse(text)
  } catch (err) {
    throw new HttpProblem(400, 'malformed_json', `The body is not valid JSON: ${(err as Error).message}.`)
  }
}

const limitBody = bodyLimit({
  maxSize: s.MAX_BODY_BYTES,
  onError: () => {
    throw new HttpProblem(413, 'body_too_large', `The body is larger than ${s.MAX_BODY_BYTES} bytes.`)
  },
})

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

  if (deps.callbacks) app.post('/callbacks/call-status', limitBody, deps.callbacks)

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

  app.post('/calls', limitBody, async (c) => {
    const key = c.req.header('idempotency-key')
    const idempotencyKey = key === undefined ? undefined : s.parse(s.IdempotencyKey, key, 'header.Idempotency-Key')
    const body = s.parse(s.CreateCallBody, await readJson(c), 'body')
    const { call, replayed } = await deps.calls.create(body, idempotencyKey)
    c.header('Location', `/calls/${call.id}`)
    if (replayed) c.header('Idempotent-Replayed', 'true')
    return c.json(toResource(call), replayed ? 200 : 201)
  })

  app.get('/calls', async (c) => {
    const q = s.parse(s.ListQuery, c.req.query(), 'query')
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

  app.patch('/calls/:id', limitBody, async (c) => {
    const id = s.parse(s.CallId, c.req.param('id'), 'path.id')
    const body = s.parse(s.UpdateCallBody, await readJson(c), 'body')
    return c.json(toResource(await deps.calls.update(id, body)))
  })

  app.get('/metrics', async (c) => {
    const format = c.req.query('format')
    if (format !== undefined && format !== 'json' && format !== 'prometheus') {
      throw new HttpProblem(400, 'validation_failed', 'query.format must be "json" or "prometheus".')
    }
    const m = await deps.calls.metrics()
    const accept = c.req.header('accept') ?? ''
    const prometheus = format === 'prometheus' || (format === undefined && /text\/plain/.test(accept) && !/json/.test(accept))
    if (!prometheus) return c.json({ calls: m.counts, inFlight: m.inFlight, maxConcurrentCalls: m.limit })
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
    ]
    return c.body(lines.join('\n') + '\n', 200, { 'Content-Type': 'text/plain; version=0.0.4; charset=utf-8' })
  })

  return app
}
