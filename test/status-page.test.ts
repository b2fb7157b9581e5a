import t from 'tap'
import { request } from 'node:http'
import { createCallService } from '../src/services/calls/service.ts'
import { readStatus } from '../src/store/status.ts'
import { createApp } from '../src/http/app.ts'
import { SESSION_COOKIE, sessionStore } from '../src/http/auth.ts'
import { listen } from '../src/platform/serve.ts'
import { maskPhone } from '../src/http/status-page.ts'
import { silentLogger } from '../src/platform/log.ts'
import { metrics } from '../src/platform/metrics.ts'
import { MAX_STATUS_STREAMS } from '../src/http/routes/status.ts'
import { insertCall } from './support/factory.ts'
import { createHarness } from './support/harness.ts'

// The status page (GET /): what it shows, that what it shows from outside is escaped, who may
// see it, and that an open page neither outlives its client nor holds up a shutdown.

const html = { accept: 'text/html' }

t.test('the page shows slots, counts, the oldest waiting call, calls in flight, failures and callbacks', async (t) => {
  const h = await createHarness(t, { maxConcurrentCalls: 7 })
  const flying = await insertCall(h, { status: 'IN_PROGRESS', phone: '+15550001234' })
  await insertCall(h, { status: 'PENDING', createdAt: new Date(Date.now() - 125_000), phone: '+15550009876' })
  await insertCall(h, { status: 'PENDING' })
  await insertCall(h, { status: 'COMPLETED' })
  const failed = await insertCall(h, { status: 'FAILED' })
  const hostile = `<script>alert("x")</script> & <img src=x onerror=alert(1)>`
  await h.sql`UPDATE calls SET last_error = ${hostile} WHERE id = ${failed.id}`
  await h.sql`INSERT INTO callbacks (verdict, reason) VALUES ('applied', null), ('applied', null), ('duplicate', null), ('rejected', '<b>forged</b>')`
  // An old failure and an old callback are not "recent".
  const old = await insertCall(h, { status: 'FAILED' })
  await h.sql`UPDATE calls SET ended_at = now() - interval '2 hours', last_error = 'long ago' WHERE id = ${old.id}`
  await h.sql`INSERT INTO callbacks (verdict, received_at) VALUES ('stale', now() - interval '2 hours')`

  const res = await h.app.request('/', { headers: html })
  t.equal(res.status, 200)
  t.match(res.headers.get('content-type'), /^text\/html/)
  t.match(res.headers.get('content-security-policy'), /script-src 'nonce-/)
  const page = await res.text()
  t.match(page, /<span data-slots-in-use>1<\/span> <span class="of">of 7 in use/)
  t.match(page, /data-count="PENDING">2</)
  t.match(page, /data-count="IN_PROGRESS">1</)
  t.match(page, /data-count="FAILED">2</)
  t.match(page, /data-count="COMPLETED">1</)
  t.match(page, /data-oldest-waiting>2 min 0\d s</, 'the oldest waiting call, by how long it has waited')
  t.match(page, /\+•••••••9876/, 'its phone masked to the last four digits')
  t.match(page, new RegExp(`data-call="${flying.id}"`), 'the call in flight is listed')
  t.match(page, /\+•••••••1234/)
  t.notMatch(page, /15550001234|15550009876/, 'no full phone number anywhere')
  t.match(page, /data-callbacks="applied">2</)
  t.match(page, /data-callbacks="duplicate">1</)
  t.notMatch(page, /data-callbacks="stale"/, 'callbacks older than an hour are left out')
  t.notMatch(page, /long ago/, 'failures older than an hour are left out')
  t.match(page, /data-dispatch="running"/)
  t.match(page, /data-free-slots>6</)

  // A failure reason is the provider's (or anyone's) text: shown, never run.
  t.match(page, '&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;img src=x onerror=alert(1)&gt;')
  t.notMatch(page, '<script>alert', 'the hostile reason is not markup')
  t.notMatch(page, '<img', 'the hostile reason is not markup')
  t.equal(page.match(/<script/g)?.length, 1, 'the only script is the page’s own')

  await h.call('POST', '/dispatch/pause')
  const paused = await (await h.app.request('/', { headers: html })).text()
  t.match(paused, /data-dispatch="paused"/)
  t.match(paused, /data-free-slots>0</, 'no slot is free while paused')

  const json = await h.call('GET', '/status.json')
  t.equal(json.status, 200)
  t.match(json.body, { limit: 7, paused: true, counts: { PENDING: 2, IN_PROGRESS: 1 }, callbacks: { applied: 2, duplicate: 1, rejected: 1 } })
  t.equal(json.body.recentFailures.length, 1)
  t.equal(json.body.recentFailures[0].reason, hostile, 'the JSON carries the reason as it is; JSON needs no HTML escaping')
})

t.test('masking keeps the last four digits only', async (t) => {
  t.equal(maskPhone('+966501234567'), '+••••••••4567')
  t.equal(maskPhone('+1234'), '+1234')
})

t.test('with API tokens: sign in with a token, get a cookie that is not the token, and only then the page', async (t) => {
  const token = 'status-page-token-0123456789'
  const h = await createHarness(t, { apiTokens: [token, 'another-token'] })
  await insertCall(h, { status: 'PENDING' })

  const login = await h.app.request('/', { headers: html })
  t.equal(login.status, 401)
  const form = await login.text()
  t.match(form, /<form class="login" method="post" action="login">/, 'a browser gets the sign-in form')
  t.notMatch(form, /data-count/, 'and nothing of the status')
  const noBrowser = await h.call('GET', '/')
  t.equal(noBrowser.status, 401, 'other clients get a problem')
  t.equal(noBrowser.body.code, 'unauthorized')

  for (const path of ['/status.json', '/status/events']) {
    t.equal((await h.call('GET', path)).status, 401, `${path} refused without a token`)
    t.equal((await h.call('GET', path, undefined, { cookie: `${SESSION_COOKIE}=forged.${'A'.repeat(43)}` })).status, 401, `${path} refused with a forged cookie`)
    t.equal((await h.call('GET', path, undefined, { cookie: `${SESSION_COOKIE}=${token}` })).status, 401, `${path} refused with the raw token as cookie`)
  }
  const expired = await sessionStore(h.sql).open(token)
  await h.sql`UPDATE status_sessions SET expires_at = now() - interval '1 second'`
  t.equal((await h.call('GET', '/status.json', undefined, { cookie: `${SESSION_COOKIE}=${expired.key}` })).status, 401, 'an expired session is refused')
  t.equal((await h.call('GET', '/status.json', undefined, { cookie: `${SESSION_COOKIE}=${'A'.repeat(43)}` })).status, 401, 'a key the server never gave is refused')
  t.equal((await h.call('GET', '/status.json', undefined, { authorization: `Bearer ${token}` })).status, 200, 'the Bearer header works as everywhere')

  const post = (body: string, headers: Record<string, string> = {}) =>
    h.app.request('/login', { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', host: 'status.test', ...html, ...headers }, body })
  const wrong = await post('token=wrong')
  t.equal(wrong.status, 401, 'a wrong token is refused')
  t.equal(wrong.headers.get('set-cookie'), null, 'and gets no cookie')
  t.match(await wrong.text(), /That token is not accepted/)
  t.equal((await post(`token=${token}`, { origin: 'https://elsewhere.example' })).status, 403, 'a sign-in posted from another site is refused')
  t.equal((await post(`token=${token}`, { origin: 'null', 'sec-fetch-site': 'cross-site' })).status, 403, 'by Sec-Fetch-Site too')

  const right = await post(`token=${encodeURIComponent(token)}`, { origin: 'http://status.test' })
  t.equal(right.status, 303)
  t.equal(right.headers.get('location'), './')
  const setCookie = right.headers.get('set-cookie') ?? ''
  t.match(setCookie, new RegExp(`^${SESSION_COOKIE}=`))
  t.match(setCookie, /HttpOnly/)
  t.match(setCookie, /SameSite=Strict/)
  t.notMatch(setCookie, /Secure/, 'not Secure over plain http (the browser would drop it)')
  t.notMatch(setCookie, new RegExp(token), 'the cookie does not hold the token')
  const cookie = setCookie.split(';')[0]!

  const page = await h.app.request('/', { headers: { ...html, cookie } })
  t.equal(page.status, 200)
  const text = await page.text()
  t.match(text, /data-count="PENDING">1</)
  t.match(text, /action="logout"/, 'with a way to sign out')
  t.equal((await h.call('GET', '/status.json', undefined, { cookie })).status, 200)
  t.equal((await h.call('GET', '/calls', undefined, { cookie })).status, 401, 'the cookie opens the status page only, not the API')

  const secure = await post(`token=${token}`, { 'x-forwarded-proto': 'https' })
  t.match(secure.headers.get('set-cookie'), /Secure/, 'Secure when the browser came over https')
  t.match(cookie, new RegExp(`^${SESSION_COOKIE}=[A-Za-z0-9_-]{43}$`), 'a random key, nothing else: nothing in it to test guesses of the token against')
  const [stored] = await h.sql<{ key_hash: string; expires_at: Date }[]>`SELECT key_hash, expires_at FROM status_sessions ORDER BY created_at LIMIT 1`
  t.not(stored!.key_hash, cookie.split('=')[1], 'the server keeps only its hash')
  t.ok(stored!.expires_at.getTime() <= Date.now() + 7 * 24 * 3600 * 1000 + 60_000, 'an expiry the server set')

  // The same database, the token removed from the configuration: its sessions end.
  const rotated = createApp({
    calls: createCallService({ sql: h.sql, queue: h.queue, callTtlSeconds: 3600, maxConcurrentCalls: 30 }),
    apiTokens: ['another-token'],
    log: silentLogger,
    ready: async () => ({ ok: true, detail: 'ready' }),
    status: { read: () => readStatus(h.sql, 30), sessions: sessionStore(h.sql) },
  })
  t.equal((await rotated.request('/status.json', { headers: { cookie } })).status, 401, 'a session whose token was removed is refused')

  const logout = await h.app.request('/logout', { method: 'POST', headers: { cookie } })
  t.equal(logout.status, 303)
  t.match(logout.headers.get('set-cookie'), new RegExp(`^${SESSION_COOKIE}=;.*Max-Age=0`))
  t.equal((await h.call('GET', '/status.json', undefined, { cookie })).status, 401, 'a copy of the cookie kept after logging out opens nothing')
})

t.test('sign-in attempts that fail are throttled per client address', async (t) => {
  const token = 'status-page-token-0123456789'
  const h = await createHarness(t, { apiTokens: [token] })
  const post = (body: string) =>
    h.app.request('/login', { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', host: 'status.test' }, body })
  for (let i = 0; i < 10; i++) t.equal((await post(`token=guess-${i}`)).status, 401, `guess ${i + 1}`)
  const throttled = await post('token=guess-10')
  t.equal(throttled.status, 429, 'the eleventh within a minute is refused before it is checked')
  t.ok(Number(throttled.headers.get('retry-after')) > 0, 'with Retry-After')
  t.equal((await post(`token=${token}`)).status, 429, 'even the right token, until the minute is over')
})

t.test('405 with Allow on the page’s paths', async (t) => {
  const h = await createHarness(t)
  const res = await h.call('DELETE', '/')
  t.equal(res.status, 405)
  t.equal(res.headers.get('allow'), 'GET')
  t.equal((await h.call('GET', '/login')).headers.get('allow'), 'POST')
  t.equal((await h.call('POST', '/status/events')).status, 405)
})

/** Reads server-sent events from a real socket, collecting each board sent. */
function openEvents(port: number, headers: Record<string, string> = {}) {
  const boards: string[] = []
  let closed = false
  const req = request({ host: '127.0.0.1', port, path: '/status/events', headers: { accept: 'text/event-stream', ...headers } })
  const response = new Promise<import('node:http').IncomingMessage>((resolve, reject) => {
    req.on('response', (res) => {
      let buffer = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        buffer += chunk
        let end
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const message = buffer.slice(0, end)
          buffer = buffer.slice(end + 2)
          if (/^event: status$/m.test(message)) boards.push(message.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n'))
        }
      })
      res.on('close', () => (closed = true))
      resolve(res)
    })
    req.on('error', reject)
  })
  req.end()
  return { req, response, boards, closed: () => closed }
}

const until = async (what: string, check: () => boolean | Promise<boolean>, ms = 10_000) => {
  const deadline = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

/** Open event streams on this process, as its /metrics tells. */
const openStreams = async () => (await metrics.statusStreams.get()).values[0]?.value ?? 0

t.test('the event stream sends a board when something changes, and stops when the client leaves', async (t) => {
  const h = await createHarness(t)
  let reads = 0
  const app = createApp({
    calls: createCallService({ sql: h.sql, queue: h.queue, callTtlSeconds: 3600, maxConcurrentCalls: 30 }),
    apiTokens: [],
    log: silentLogger,
    ready: async () => ({ ok: true, detail: 'ready' }),
    status: { read: () => (reads++, readStatus(h.sql, 30)), sessions: sessionStore(h.sql) },
    statusIntervalMs: 100,
  })
  const server = await listen(app, { host: '127.0.0.1', port: 0 })
  t.teardown(() => server.close())
  const before = await openStreams()
  const events = openEvents(server.port)
  const res = await events.response
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /^text\/event-stream/)
  await until('the first board', () => events.boards.length >= 1)
  t.equal(await openStreams(), before + 1, 'counted in orchestrator_status_streams')
  t.match(events.boards[0], /data-count="PENDING">0</)
  await insertCall(h, { status: 'PENDING' })
  await until('a board with the new call', () => events.boards.some((b) => /data-count="PENDING">1</.test(b)))
  const sent = events.boards.length
  const readsThen = reads
  await until('four more reads', () => reads >= readsThen + 4)
  t.equal(events.boards.length, sent, 'it reads every interval, and sends nothing while nothing changes')

  events.req.destroy()
  // Reads happen only in a stream's loop: once the server has ended the loop, nothing reads.
  await until('the server to end the stream', async () => (await openStreams()) === before)
  t.pass('no more reads once the client has gone')
})

t.test('many pages open share one read per interval, and a 51st is turned away', async (t) => {
  const h = await createHarness(t)
  const readAt: number[] = []
  const intervalMs = 100
  const app = createApp({
    calls: createCallService({ sql: h.sql, queue: h.queue, callTtlSeconds: 3600, maxConcurrentCalls: 30 }),
    apiTokens: [],
    log: silentLogger,
    ready: async () => ({ ok: true, detail: 'ready' }),
    status: { read: () => (readAt.push(Date.now()), readStatus(h.sql, 30)), sessions: sessionStore(h.sql) },
    statusIntervalMs: intervalMs,
  })
  const server = await listen(app, { host: '127.0.0.1', port: 0 })
  t.teardown(() => server.close())
  const pages = Array.from({ length: MAX_STATUS_STREAMS }, () => openEvents(server.port))
  t.teardown(() => pages.forEach((p) => p.req.destroy()))
  await Promise.all(pages.map((p) => p.response))
  await until('every page’s first board', () => pages.every((p) => p.boards.length >= 1), 30_000)
  const from = readAt.length
  await until('six more reads', () => readAt.length >= from + 6, 30_000)
  const gaps = readAt.slice(from).map((at, i, all) => (i === 0 ? Infinity : at - all[i - 1]!)).slice(1)
  t.ok(gaps.every((gap) => gap >= intervalMs), `one read per interval for all ${MAX_STATUS_STREAMS} pages (gaps ${gaps.join(', ')} ms)`)
  const extra = openEvents(server.port)
  const refused = await extra.response
  t.equal(refused.statusCode, 503, 'the next page is turned away')
  t.equal(refused.headers['retry-after'], '5')
})

t.test('an open page does not hold up a graceful shutdown', async (t) => {
  const h = await createHarness(t, { statusIntervalMs: 100 })
  const server = await listen(h.app, { host: '127.0.0.1', port: 0 })
  const events = openEvents(server.port)
  await events.response
  await until('the first board', () => events.boards.length >= 1)
  // Not forced: what SIGTERM does. Without the cut, this would wait for the client forever;
  // the 30 seconds only tell that apart from a failed test, they measure nothing.
  let timer: NodeJS.Timeout | undefined
  const closed = await Promise.race([server.close().then(() => 'closed'), new Promise((r) => (timer = setTimeout(r, 30_000, 'still open')))])
  clearTimeout(timer)
  t.equal(closed, 'closed', 'it closed with a page open')
  await until('the stream to end at the client', () => events.closed())
})

t.test('the last hour per minute: created, dialed, completed, failed and slots in use, as JSON and as a chart', async (t) => {
  const h = await createHarness(t, { maxConcurrentCalls: 5 })
  const ago = (min: number) => new Date(Date.now() - min * 60_000)
  // Dials whose spans cross the hour's start, lie within it, and last until now.
  const spans: Array<{ status: 'COMPLETED' | 'FAILED' | 'IN_PROGRESS'; created: number; started: number; ended: number | null }> = [
    { status: 'IN_PROGRESS', created: 75, started: 70, ended: null },
    { status: 'COMPLETED', created: 80, started: 65, ended: 50 },
    { status: 'COMPLETED', created: 35, started: 30, ended: 20 },
    { status: 'COMPLETED', created: 31, started: 29.5, ended: 12 },
    { status: 'FAILED', created: 6, started: 5, ended: 2 },
    { status: 'IN_PROGRESS', created: 1, started: 0.5, ended: null },
  ]
  for (const span of spans) {
    const call = await insertCall(h, { status: span.status, createdAt: ago(span.created) })
    await h.sql`UPDATE calls SET ended_at = ${span.ended === null ? null : ago(span.ended)} WHERE id = ${call.id}`
    await h.sql`INSERT INTO call_dials (call_id, dial, phone, started_at, ended_at, outcome)
      VALUES (${call.id}, 1, ${call.phone}, ${ago(span.started)}, ${span.ended === null ? null : ago(span.ended)}, ${span.ended === null ? null : span.status})`
  }
  await insertCall(h, { status: 'PENDING' })

  const status = (await h.call('GET', '/status.json')).body
  const minutes = status.lastHour as Array<{ minute: string; created: number; dialed: number; completed: number; failed: number; slots: number }>
  t.equal(minutes.length, 60, 'sixty minutes')
  t.ok(Date.parse(minutes[59]!.minute) <= Date.parse(status.at) && Date.parse(status.at) - Date.parse(minutes[59]!.minute) < 60_000, 'the current minute last')

  // The same numbers, counted here from the rows as stored.
  const calls = await h.sql<{ created_at: Date; ended_at: Date | null; status: string }[]>`SELECT created_at, ended_at, status FROM calls`
  const dials = await h.sql<{ started_at: Date; ended_at: Date | null }[]>`SELECT started_at, ended_at FROM call_dials`
  const within = (d: Date | null, from: number) => d !== null && d.getTime() >= from && d.getTime() < from + 60_000
  const expected = minutes.map((m) => {
    const from = Date.parse(m.minute)
    const end = from + 60_000
    return {
      minute: m.minute,
      created: calls.filter((c) => within(c.created_at, from)).length,
      dialed: dials.filter((d) => within(d.started_at, from)).length,
      completed: calls.filter((c) => c.status === 'COMPLETED' && within(c.ended_at, from)).length,
      failed: calls.filter((c) => c.status === 'FAILED' && within(c.ended_at, from)).length,
      slots: dials.filter((d) => d.started_at.getTime() < end && (d.ended_at === null || d.ended_at.getTime() >= end)).length,
    }
  })
  t.same(minutes, expected, 'every minute as the rows say')
  t.equal(minutes[0]!.slots, 2, 'the dials begun before the hour count from its start')
  t.equal(minutes[59]!.slots, 2, 'and now: the two in flight')
  t.equal(minutes.reduce((n, m) => n + m.created, 0), 5, 'the calls created within the hour')

  const page = await (await h.app.request('/', { headers: html })).text()
  t.match(page, /<section class="wide" data-last-hour>/, 'the overview draws it')
  for (const series of ['created', 'dialed', 'completed', 'failed']) {
    const points = new RegExp(`<polyline data-series="${series}"[^>]* points="([^"]+)"`).exec(page)?.[1]?.split(' ')
    t.equal(points?.length, 60, `${series}: a point per minute`)
  }
  t.match(page, /<polygon data-series="slots"/, 'slots in use, as an area')
  t.match(page, /<line data-limit/, 'under the limit')
  t.match(page, /data-now="slots">[\s\S]*slots in use 2<\/span> of 5/, 'the current minute in words')
  t.equal(page.match(/<table class="counts" data-minutes>[\s\S]*?<\/table>/)?.[0].match(/<tr><th>\d\d:\d\d/g)?.length, 60, 'and every minute in a table')
})
