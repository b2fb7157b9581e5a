import { randomBytes } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import type { Context, Hono } from 'hono'
import type { ContentfulStatusCode } from 'hono/utils/http-status'
import { deleteCookie, getCookie, setCookie } from 'hono/cookie'
import { streamSSE, type SSEStreamingApi } from 'hono/streaming'
import type { CallRow } from '../../domain/call.ts'
import type { BatchRow } from '../../store/batches.ts'
import type { CallService } from '../../services/calls/service.ts'
import type { ConsoleFilter, Timeline } from '../../store/console.ts'
import type { StatusSnapshot } from '../../store/status.ts'
import { isDatabaseUnavailable } from '../../store/sql.ts'
import { throttled as throttledLog, type Logger } from '../../platform/log.ts'
import { metrics } from '../../platform/metrics.ts'
import { bearerToken, matchesSecret, sameOrigin, SESSION_COOKIE, type SessionStore } from '../auth.ts'
import { readBody } from '../body.ts'
import { HttpProblem, toProblem } from '../problem.ts'
import { CONSOLE_ACTIONS, renderBatch, renderCallList, renderConfirm, renderTimeline, type ConsoleAction } from '../console-page.ts'
import * as s from '../schemas.ts'
import { renderBoard, renderLogin, renderPage, renderUnavailable } from '../status-page.ts'

// The status page: GET / (the page, or a sign-in form when API_TOKENS is set and the browser
// has no session), POST /login and /logout, GET /status.json (the same numbers for scripts) and
// GET /status/events (server-sent events, each carrying the board rendered anew).
//
// Server-sent events rather than the page polling /status.json: one connection, updates as
// soon as they are read, reconnection built into every browser, and the page's script stays
// a few lines because the server sends HTML it already knows how to escape. The fallback,
// for a browser without EventSource or without script, is reloading the page.

export interface StatusBoard {
  read(): Promise<StatusSnapshot>
  /** The console's reads (/console/calls, /console/calls/{id}); the console is not served without them. */
  console?:
    | {
        calls(filter: ConsoleFilter): Promise<CallRow[]>
        timeline(id: string): Promise<Timeline | undefined>
        batch(id: string): Promise<{ batch: BatchRow; calls: CallRow[] } | undefined>
      }
    | undefined
  /** The sign-in sessions (src/http/auth.ts). */
  sessions: SessionStore
}

/** Event streams one process keeps open at most; beyond, a 503 (each costs a connection). */
export const MAX_STATUS_STREAMS = 50

/** A stream opened with a session checks that it still lasts every this many turns. */
const SESSION_CHECK = 10

/** Failed sign-ins a client address may make in LOGIN_WINDOW_MS before it must wait. */
const LOGIN_ATTEMPTS = 10
const LOGIN_WINDOW_MS = 60_000

/** How often an open stream reads the status again. */
export const STATUS_INTERVAL_MS = 1_000
/** A comment this often keeps a quiet stream from being cut by proxies as idle. */
const HEARTBEAT_MS = 15_000

export function statusRoutes(
  app: Hono,
  deps: {
    status: StatusBoard
    /** The calls service, for what an admin may do from the console's call page (cancel, retry); no buttons without it. */
    calls?: Pick<CallService, 'get' | 'cancel' | 'retry'> | undefined
    apiTokens: readonly string[]; readTokens?: readonly string[] | undefined; log: Logger; intervalMs?: number | undefined },
): void {
  const intervalMs = deps.intervalMs ?? STATUS_INTERVAL_MS
  const floods = throttledLog(deps.log, 10_000)
  const tokensSet = deps.apiTokens.length > 0
  // The page only reads: a read-only token opens it as well as a full one.
  const tokens = [...deps.apiTokens, ...(deps.readTokens ?? [])]

  /** Until when this request may see the status (ms since epoch), or undefined: not at all. */
  const access = async (c: Context): Promise<number | undefined> => {
    if (!tokensSet || matchesSecret(bearerToken(c.req.header('authorization')), tokens)) return Infinity
    return deps.status.sessions.until(getCookie(c, SESSION_COOKIE), tokens)
  }
  /** Whether this request may change calls from the console: an admin token, or a session opened with one. */
  const mayAct = async (c: Context): Promise<boolean> =>
    !tokensSet ||
    matchesSecret(bearerToken(c.req.header('authorization')), deps.apiTokens) ||
    (await deps.status.sessions.until(getCookie(c, SESSION_COOKIE), deps.apiTokens)) !== undefined

  // Sign-in attempts that failed, per client address, for the window they fall in.
  const failures = new Map<string, { n: number; since: number }>()
  const clientAddress = (c: Context) => (c.env as { incoming?: IncomingMessage } | undefined)?.incoming?.socket.remoteAddress ?? 'unknown'
  const throttled = (address: string): number | undefined => {
    const now = Date.now()
    const seen = failures.get(address)
    if (!seen || now - seen.since >= LOGIN_WINDOW_MS) return undefined
    return seen.n >= LOGIN_ATTEMPTS ? Math.ceil((seen.since + LOGIN_WINDOW_MS - now) / 1000) : undefined
  }
  const failed = (address: string) => {
    const now = Date.now()
    const seen = failures.get(address)
    if (!seen || now - seen.since >= LOGIN_WINDOW_MS) failures.set(address, { n: 1, since: now })
    else seen.n++
    if (failures.size > 10_000) for (const [a, f] of failures) if (now - f.since >= LOGIN_WINDOW_MS) failures.delete(a)
  }
  const refuse = () =>
    new HttpProblem(401, 'unauthorized', 'Sign in at / with an API token, or send "Authorization: Bearer <token>".', {}, {
      'WWW-Authenticate': 'Bearer realm="call-orchestrator"',
    })

  // A nonce per page: only the page's own inline script and style run, so a value that slipped
  // through unescaped still could not execute.
  const html = (c: Context, body: string, status: ContentfulStatusCode, nonce: string) =>
    c.html(body, status, {
      'Content-Security-Policy': `default-src 'none'; img-src data:; media-src https:; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'`,
      'Cache-Control': 'no-store',
      // Not no-referrer: under it Chromium posts the sign-in form with "Origin: null".
      'Referrer-Policy': 'same-origin',
      'X-Content-Type-Options': 'nosniff',
      ...(status === 401 ? { 'WWW-Authenticate': 'Bearer realm="call-orchestrator"' } : {}),
    })
  const newNonce = () => randomBytes(16).toString('base64')

  // Browsers (Accept: text/html) get the sign-in form; every other client the API's usual
  // problem+json, so a 4xx means the same thing everywhere.
  const wantsHtml = (c: Context) => /text\/html/i.test(c.req.header('accept') ?? '')

  /** A page behind the status page's access: the sign-in form for a browser without it, a 401 for anyone else. */
  const page = async (c: Context, body: (nonce: string) => Promise<string>, signIn?: string) => {
    const nonce = newNonce()
    if ((await access(c)) === undefined) {
      if (!wantsHtml(c)) throw refuse()
      return html(c, renderLogin(nonce, signIn), 401, nonce)
    }
    return html(c, await body(nonce), 200, nonce)
  }

  app.get('/', (c) => page(c, async (nonce) => renderPage(await deps.status.read(), nonce, { logout: tokensSet })))

  app.post('/login', async (c) => {
    // A form posted from another site is refused: nobody should be signed in by someone else's page.
    if (!sameOrigin(c)) {
      throw new HttpProblem(403, 'cross_origin', 'Sign in from this server’s own page.')
    }
    if (!tokensSet) return c.redirect('./', 303)
    // Guessing tokens here costs a minute per LOGIN_ATTEMPTS wrong ones, per address.
    const address = clientAddress(c)
    const wait = throttled(address)
    if (wait !== undefined) {
      throw new HttpProblem(429, 'too_many_attempts', `Too many sign-ins that failed from here; try again in ${wait} s.`, {}, { 'Retry-After': String(wait) })
    }
    const token = new URLSearchParams(await readBody(c, 4096)).get('token') ?? undefined
    if (!matchesSecret(token, tokens)) {
      failed(address)
      if (!wantsHtml(c)) throw new HttpProblem(401, 'unauthorized', 'That token is not accepted.', {}, { 'WWW-Authenticate': 'Bearer realm="call-orchestrator"' })
      const nonce = newNonce()
      return html(c, renderLogin(nonce, 'That token is not accepted.'), 401, nonce)
    }
    const session = await deps.status.sessions.open(token!)
    setCookie(c, SESSION_COOKIE, session.key, {
      path: '/',
      httpOnly: true,
      sameSite: 'Strict',
      secure: isHttps(c),
      maxAge: Math.max(0, Math.floor((session.expires.getTime() - Date.now()) / 1000)),
    })
    return c.redirect('./', 303)
  })

  app.post('/logout', async (c) => {
    // The session ends on the server too: a copy of the cookie opens nothing any more.
    await deps.status.sessions.end(getCookie(c, SESSION_COOKIE))
    deleteCookie(c, SESSION_COOKIE, { path: '/', secure: isHttps(c) })
    return c.redirect('./', 303)
  })

  // The console: the same access as the page, read only, plain HTML.
  const reads = deps.status.console
  if (reads) {
    const SIGN_IN = 'Sign in to open the console.'
    const CONSOLE_PAGE = 50
    app.get('/console/calls', (c) =>
      page(c, async (nonce) => {
        const q = s.parse(s.ConsoleQuery, s.singleQuery(c.req.queries()), 'query')
        const filter = {
          status: q.status || undefined,
          phone: q.phone || undefined,
          batchId: q.batch || undefined,
          from: q.from ? new Date(q.from) : undefined,
          to: q.to ? new Date(q.to) : undefined,
          after: q.cursor,
          limit: CONSOLE_PAGE + 1,
        }
        const rows = await reads.calls(filter)
        const shown = rows.slice(0, CONSOLE_PAGE)
        return renderCallList(shown, filter, rows.length > CONSOLE_PAGE ? shown.at(-1)!.id : null, nonce)
      }, SIGN_IN),
    )
    app.get('/console/calls/:id', (c) =>
      page(c, async (nonce) => {
        const id = s.parse(s.CallId, c.req.param('id'), 'path.id')
        const timeline = await reads.timeline(id)
        if (!timeline) throw new HttpProblem(404, 'call_not_found', `No call has id ${id}.`, { callId: id })
        return renderTimeline(timeline, nonce, { mayAct: !!deps.calls && (await mayAct(c)) })
      }, SIGN_IN),
    )
    // Cancel and retry, for admins: a page that asks (GET), then the form it holds (POST), which
    // goes back to the call's timeline. A refusal (the call moved on meanwhile) is shown on the
    // question's page. A cross-site form is refused before this (app.ts), and the cookie is SameSite.
    const calls = deps.calls
    if (calls) {
      const readOnly = () => new HttpProblem(403, 'read_only_token', 'This token may read, not change anything: sign in with one of API_TOKENS.')
      const idOf = (c: Context) => s.parse(s.CallId, c.req.param('id'), 'path.id')
      for (const action of Object.keys(CONSOLE_ACTIONS) as ConsoleAction[]) {
        app.get(`/console/calls/:id/${action}`, (c) =>
          page(c, async (nonce) => {
            if (!(await mayAct(c))) throw readOnly()
            return renderConfirm(await calls.get(idOf(c)), action, nonce)
          }, SIGN_IN),
        )
        app.post(`/console/calls/:id/${action}`, async (c) => {
          if ((await access(c)) === undefined) throw refuse()
          if (!(await mayAct(c))) throw readOnly()
          const id = idOf(c)
          try {
            await calls[action](id)
          } catch (err) {
            // A refusal is shown on the question's page; no such call, or a failure, as anywhere else.
            const problem = toProblem(err)
            if (!problem || problem.status >= 500 || problem.code === 'call_not_found') throw err
            const nonce = newNonce()
            return html(c, renderConfirm(await calls.get(id), action, nonce, problem.message), problem.status, nonce)
          }
          return c.redirect(`../${id}`, 303)
        })
      }
    }
    app.get('/console/batches/:id', (c) =>
      page(c, async (nonce) => {
        const id = s.parse(s.Uuid, c.req.param('id'), 'path.id')
        const found = await reads.batch(id)
        if (!found) throw new HttpProblem(404, 'batch_not_found', `No batch has id ${id}.`, { batchId: id })
        return renderBatch(found.batch, found.calls, nonce)
      }, SIGN_IN),
    )
  }

  app.get('/status.json', async (c) => {
    if ((await access(c)) === undefined) throw refuse()
    return c.json(await deps.status.read(), 200, { 'Cache-Control': 'no-store' })
  })

  // Every open stream shows the same board: it is read once per interval for all of them, by
  // whichever stream asks first once the last read is an interval old.
  let shared: { at: number; board: Promise<string> } | undefined
  const currentBoard = (): Promise<string> => {
    if (shared && Date.now() - shared.at < intervalMs) return shared.board
    const board = deps.status.read().then(renderBoard, (err: unknown) => {
      if (!isDatabaseUnavailable(err)) floods.error('status page read failed', { err })
      return renderUnavailable()
    })
    shared = { at: Date.now(), board }
    return board
  }
  let open = 0

  app.get('/status/events', async (c) => {
    const until = await access(c)
    if (until === undefined) throw refuse()
    if (open >= MAX_STATUS_STREAMS) {
      throw new HttpProblem(503, 'too_many_streams', `This server already has ${MAX_STATUS_STREAMS} status pages open; try again shortly.`, {}, { 'Retry-After': '5' })
    }
    open++
    metrics.statusStreams.set(open)
    return streamSSE(c, async (stream) => {
      try {
        await follow(stream, c, until)
      } finally {
        open--
        metrics.statusStreams.set(open)
      }
    })
  })

  /** One stream: the board while the client stays and its session lasts. */
  const follow = async (stream: SSEStreamingApi, c: Context, until: number) => {
    const gone = new Promise<void>((resolve) => stream.onAbort(resolve))
    const pause = async (ms: number) => {
      let timer: NodeJS.Timeout | undefined
      await Promise.race([gone, new Promise((resolve) => (timer = setTimeout(resolve, ms)))])
      clearTimeout(timer)
    }
    // The board each interval for as long as the client stays (stream.aborted: it went away, or
    // the server is shutting down, see serve.ts) and its session lasts; after that the page's
    // EventSource reconnects and is refused, and says so.
    let last = ''
    let lastWrite = 0
    let first = true
    // A signed-in session is looked at again every SESSION_CHECK turns: one signed out (or
    // whose token was removed) ends its stream within seconds, not at its expiry.
    for (let turns = 0; !stream.aborted && !stream.closed && Date.now() < until; turns++) {
      if (until !== Infinity && turns > 0 && turns % SESSION_CHECK === 0 && (await access(c)) === undefined) break
      const board = await currentBoard()
      if (stream.aborted) break
      if (board !== last) {
        await stream.writeSSE({ event: 'status', data: board, ...(first ? { retry: 2000 } : {}) })
        last = board
        lastWrite = Date.now()
        first = false
      } else if (Date.now() - lastWrite >= HEARTBEAT_MS) {
        await stream.write(': still here\n\n')
        lastWrite = Date.now()
      }
      await pause(intervalMs)
    }
  }
}

/** Whether the browser reached us over HTTPS, directly or through a proxy that says so. */
function isHttps(c: Context): boolean {
  return new URL(c.req.url).protocol === 'https:' || c.req.header('x-forwarded-proto')?.split(',')[0]?.trim() === 'https'
}
