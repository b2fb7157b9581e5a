import { randomUUID } from 'node:crypto'
import t from 'tap'
import { createLogger, failureStreak, maskPhone, refusalTally, throttled } from '../src/platform/log.ts'
import { Queues } from '../src/store/queues.ts'
import { createHarness, WEBHOOK_SECRET } from './support/harness.ts'
import { freePort, runBinary, waitFor } from './support/processes.ts'

// The log lines people and collectors read: JSON, with scope, masked phones and no secrets.

function capture(level: Parameters<typeof createLogger>[0] = 'debug') {
  const lines: Record<string, unknown>[] = []
  const log = createLogger(level, { mode: 'test' }, { destination: { write: (line: string) => void lines.push(JSON.parse(line)) } })
  return { log, lines }
}

t.test('one JSON object per line, with level, time, message, scope and fields', async (t) => {
  const { log, lines } = capture()
  log.child({ worker: 7 }).child({ callId: 'c-1', attempt: 2 }).info('call claimed', { from: 'PENDING', to: 'IN_PROGRESS' })
  t.equal(lines.length, 1)
  t.match(lines[0], { level: 'info', msg: 'call claimed', mode: 'test', worker: 7, callId: 'c-1', attempt: 2, from: 'PENDING', to: 'IN_PROGRESS' })
  t.ok(!Number.isNaN(Date.parse(lines[0]!.time as string)), 'an ISO time')
})

t.test('below the level nothing is written', async (t) => {
  const { log, lines } = capture('warn')
  log.debug('a')
  log.info('b')
  log.warn('c')
  log.error('d')
  t.same(lines.map((l) => l.msg), ['c', 'd'])
})

t.test('phones are masked except their last four digits, in fields and in scope', async (t) => {
  t.equal(maskPhone('+14155550123'), '+*******0123')
  t.equal(maskPhone('+442071234567'), '+********4567')
  t.equal(maskPhone('123'), '**3', 'a short one keeps less')
  t.equal(maskPhone(undefined), undefined)
  const { log, lines } = capture()
  log.info('call created', { phone: '+14155550123' })
  log.child({ phone: '+14155550199' }).info('scoped')
  log.info('imported', { phones: ['+14155550123', '+14155550124'] })
  t.equal(lines[0]!.phone, '+*******0123')
  t.equal(lines[1]!.phone, '+*******0199')
  t.same(lines[2]!.phones, ['+*******0123', '+*******0124'])
  t.notOk(JSON.stringify(lines).includes('4155550'), 'no full number anywhere')
})

t.test('secrets and call metadata never reach a line, at the top or one level down', async (t) => {
  const { log, lines } = capture()
  log.warn('careless', {
    apiKey: 'sk_live_1',
    secret: 'whsec_2',
    token: 'tok_3',
    authorization: 'Bearer 4',
    metadata: { customerName: 'Ada Lovelace' },
    request: { headers: { authorization: 'Bearer 5' }, body: '{"ssn":"6"}', url: 'https://u:p@host/' },
  })
  const text = JSON.stringify(lines)
  for (const leaked of ['sk_live_1', 'whsec_2', 'tok_3', 'Bearer 4', 'Ada Lovelace', 'Bearer 5', 'ssn', 'u:p@']) t.notOk(text.includes(leaked), `no ${leaked}`)
  t.equal(lines[0]!.apiKey, '[redacted]')
  t.equal(lines[0]!.metadata, '[redacted]')
})

t.test('errors carry type, message, code and stack', async (t) => {
  const { log, lines } = capture()
  log.error('failed', { err: Object.assign(new Error('connection refused'), { code: 'ECONNREFUSED' }) })
  t.match(lines[0]!.err, { type: 'Error', message: 'connection refused', code: 'ECONNREFUSED', stack: /connection refused/ })
})

t.test("an error's other properties stay out: a database client, a failing row's values", async (t) => {
  const { log, lines } = capture()
  const err = Object.assign(new Error('duplicate key value violates unique constraint'), {
    code: '23505',
    detail: 'Key (phone)=(+14155550123) already exists.',
    client: { connectionParameters: { password: 'hunter2' } },
    cause: new TypeError('socket hang up'),
  })
  log.error('insert failed', { err })
  t.same(Object.keys(lines[0]!.err as object).sort(), ['cause', 'code', 'message', 'stack', 'type'])
  t.match(lines[0]!.err, { code: '23505', cause: { type: 'TypeError', message: 'socket hang up' } })
  t.notOk(JSON.stringify(lines).includes('hunter2'))
  t.notOk(JSON.stringify(lines).includes('4155550123'))
})

t.test('floods are throttled to a line per interval, counting what was left out', async (t) => {
  const { log, lines } = capture()
  const floods = throttled(log, 60_000)
  for (let i = 0; i < 5; i++) floods.warn('forged callback')
  floods.warn('another message')
  t.same(lines.map((l) => l.msg), ['forged callback', 'another message'])
})

t.test('a flood whose cause changes is logged again at once: a new cause is news', async (t) => {
  const { log, lines } = capture()
  const floods = throttled(log, 60_000)
  const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6432'), { code: 'ECONNREFUSED' })
  const pooler = Object.assign(new Error('server login has been failing, try again later (server_login_retry)'), { code: '08P01' })
  for (let i = 0; i < 3; i++) floods.warn('database unavailable; answering 503', { err: refused })
  for (let i = 0; i < 3; i++) floods.warn('database unavailable; answering 503', { err: pooler })
  floods.warn('database unavailable; answering 503', { err: refused })
  t.same(
    lines.map((l) => (l.err as { code: string }).code),
    ['ECONNREFUSED', '08P01'],
    'one line for each cause, and a cause seen within the interval stays quiet',
  )
})

t.test('a retry loop logs the first failure of a streak, every n-th, and each change of cause', async (t) => {
  const streak = failureStreak(5)
  const reset = Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' })
  const pooler = Object.assign(new Error('server login has been failing, try again later (server_login_retry)'), { code: '08P01' })
  const quiet = Object.assign(new Error('query_wait_timeout'), { code: '08P01' })
  const told = [reset, reset, pooler, pooler, pooler, pooler, quiet, reset].map((err) => streak.failed(err))
  t.same(told, [true, false, true, false, true, false, true, true], 'first; same; new cause; same; fifth; same; new message; new cause')
  t.equal(streak.count, 8)
  streak.reset()
  t.equal(streak.count, 0)
  t.equal(streak.failed(reset), true, 'a new streak is told from its first failure')
})

t.test("pg-boss's errors in an outage are warnings, a line per cause per interval; any other error stays an error", async (t) => {
  const { log, lines } = capture()
  // Never started: nothing connects. pg-boss reports its errors as events, emitted here.
  const queues = new Queues('postgres://127.0.0.1:1/none', log, { supervise: false })
  const terminated = Object.assign(new Error('Connection terminated unexpectedly'), {})
  const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' })
  const broken = Object.assign(new Error('relation "pgboss.job" does not exist'), { code: '42P01' })
  for (const err of [terminated, terminated, refused, refused, terminated, broken, broken]) queues.boss.emit('error', err)
  t.same(
    lines.map((l) => [l.level, (l.err as { message: string }).message]),
    [
      ['warn', terminated.message],
      ['warn', refused.message],
      ['error', broken.message],
      ['error', broken.message],
    ],
  )
})

t.test('LOG_FORMAT=pretty prints lines for people, not JSON', async (t) => {
  const port = await freePort()
  const proc = runBinary(t, 'simulator', { WEBHOOK_SECRET, SIMULATOR_PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'info', LOG_FORMAT: 'pretty' })
  await waitFor('the simulator', async () => proc.output().includes('provider simulator listening'), 60_000)
  const line = proc.output().split('\n').find((l) => l.includes('provider simulator listening'))!
  t.notOk(line.trimStart().startsWith('{'), 'not a JSON object')
  t.match(line, /INFO/)
  proc.child.kill('SIGTERM')
  await proc.exited
})

t.test('refusals are summed up once a window has passed: how many, by reason', async (t) => {
  const { log, lines } = capture()
  const tally = refusalTally(log, 'refused lately', 50)
  for (const reason of ['invalid_signature', 'invalid_signature', 'unauthorized']) tally.count(reason)
  await waitFor('the summary', async () => lines.length > 0, 10_000)
  t.same(lines.map(({ level, msg, refused, byReason }) => ({ level, msg, refused, byReason })), [
    { level: 'warn', msg: 'refused lately', refused: 3, byReason: { invalid_signature: 2, unauthorized: 1 } },
  ])
})

t.test('50 forged callbacks and 20 requests with a wrong token write nothing at info level or above', async (t) => {
  const { log, lines } = capture('info')
  const h = await createHarness(t, { log, apiTokens: ['a-token-for-this-test'] })
  const forged = JSON.stringify({ callId: 'p', status: 'NO_ANSWER' })
  for (let i = 0; i < 50; i++) {
    const res = await h.app.request(`/callbacks/call-status?callId=${randomUUID()}&dial=1&token=${'x'.repeat(43)}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': `chosen-by-the-sender-${i}` },
      body: forged,
    })
    t.equal(res.status, 401)
  }
  for (let i = 0; i < 20; i++) t.equal((await h.call('GET', '/calls', undefined, { authorization: 'Bearer wrong' })).status, 401)
  t.same(lines, [], 'not a line (each is at debug level, and summed up once a minute)')
})
