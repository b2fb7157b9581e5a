import { randomUUID } from 'node:crypto'
import t, { type Test } from 'tap'
import type { CallStatus } from '../src/domain/call.ts'
import { createCallService } from '../src/services/calls/service.ts'
import { createApp } from '../src/http/app.ts'
import { silentLogger } from '../src/platform/log.ts'
import { insertCall, moveToStatus, postCall } from './support/factory.ts'
import { jobOf, tableSnapshot } from './support/inspect.ts'
import { createHarness } from './support/harness.ts'

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/

function isProblem(t: Test, res: { status: number; headers: Headers; body: any }, status: number, code?: string) {
  t.equal(res.status, status, `status ${status}`)
  t.match(res.headers.get('content-type') ?? '', /^application\/problem\+json/, 'problem+json')
  t.equal(typeof res.body, 'object', 'a JSON body')
  t.equal(res.body?.status, status, 'body.status is the HTTP status')
  t.type(res.body?.type, 'string')
  t.type(res.body?.title, 'string')
  t.type(res.body?.detail, 'string')
  if (code) t.equal(res.body?.code, code, `code ${code}`)
  else t.type(res.body?.code, 'string')
}

t.test('POST /calls creates a PENDING call with a queued job', async (t) => {
  const h = await createHarness(t)
  const before = Date.now()
  const res = await h.call('POST', '/calls', { to: '+966501234567', scriptId: 'welcomeFlow', metadata: { name: 'Sara', n: 1 } })
  t.equal(res.status, 201)
  t.match(res.headers.get('content-type'), /^application\/json/)
  t.equal(res.headers.get('location'), `/calls/${res.body.id}`)
  t.equal(res.headers.get('idempotent-replayed'), null)
  t.match(res.body.id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/)
  t.same(Object.keys(res.body).sort(), [
    'attempts', 'createdAt', 'durationSec', 'endedAt', 'expiresAt', 'id', 'lastError', 'nextAttemptAt', 'payload',
    'providerCallId', 'providerStatus', 'startedAt', 'status', 'updatedAt',
    'waitingFor', 'notBefore', 'callingWindow', 'timeZones', 'dials', 'batchId', 'result',
  ].sort())
  t.same(res.body.dials, [], 'no dial yet')
  t.equal(res.body.result, null, 'nothing said of it yet')
  t.strictSame(res.body.payload, { to: '+966501234567', scriptId: 'welcomeFlow', metadata: { name: 'Sara', n: 1 } })
  t.equal(res.body.status, 'PENDING')
  t.equal(res.body.attempts, 0)
  t.equal(res.body.lastError, null)
  t.equal(res.body.nextAttemptAt, null)
  t.equal(res.body.providerCallId, null)
  t.equal(res.body.providerStatus, null)
  t.equal(res.body.durationSec, null)
  t.equal(res.body.startedAt, null)
  t.equal(res.body.endedAt, null)
  t.match(res.body.createdAt, ISO)
  t.match(res.body.updatedAt, ISO)
  // Default TTL: 86 400 s from creation (compared loosely: only that it is about a day ahead).
  const expires = Date.parse(res.body.expiresAt)
  t.ok(expires > before + 86_000_000 && expires < Date.now() + 86_500_000, 'expiresAt is the default TTL ahead')

  const [row] = await h.sql`SELECT * FROM calls WHERE id = ${res.body.id}`
  t.equal(row!.phone, '+966501234567')
  t.equal(row!.script_id, 'welcomeFlow')
  t.same(row!.metadata, { name: 'Sara', n: 1 })
  t.equal(row!.idempotency_key, null)
  t.ok(row!.job_id, 'calls.job_id is set')

  const jobs = await h.sql`SELECT id, name, singleton_key, state, data FROM pgboss.job`
  t.equal(jobs.length, 1, 'one job')
  t.equal(jobs[0]!.id, row!.job_id, 'calls.job_id points at it')
  t.equal(jobs[0]!.name, 'calls')
  t.equal(jobs[0]!.singleton_key, '+966501234567')
  t.equal(jobs[0]!.state, 'created')
  t.same(jobs[0]!.data, { callId: res.body.id })
})

t.test('POST /calls honours expiresAt and defaults metadata', async (t) => {
  const h = await createHarness(t)
  const expiresAt = new Date(Date.now() + 3_600_000).toISOString()
  const res = await h.call('POST', '/calls', { to: '+14155550100', scriptId: 's', expiresAt })
  t.equal(res.status, 201)
  t.equal(res.body.expiresAt, expiresAt)
  t.strictSame(res.body.payload.metadata, {})
})

t.test('two calls for one phone are both accepted, each with its own job', async (t) => {
  const h = await createHarness(t)
  const a = await postCall(h)
  const b = await postCall(h)
  t.not(a.id, b.id)
  const ja = await jobOf(h.sql, a.id)
  const jb = await jobOf(h.sql, b.id)
  t.ok(ja && jb)
  t.not(ja!.id, jb!.id)
  t.equal(ja!.singleton_key, '+966501234567')
  t.equal(jb!.singleton_key, '+966501234567')
})

t.test('Idempotency-Key', async (t) => {
  const h = await createHarness(t)
  const body = { to: '+966501234567', scriptId: 'welcomeFlow', metadata: { a: 1, b: { c: 2, d: 3 } } }
  const first = await h.call('POST', '/calls', body, { 'Idempotency-Key': 'order-1' })
  t.equal(first.status, 201)
  t.equal(first.headers.get('idempotent-replayed'), null)

  // Same key, same body (keys in another order): the same call, 200, marked as a replay.
  const again = await h.call(
    'POST',
    '/calls',
    { metadata: { b: { d: 3, c: 2 }, a: 1 }, scriptId: 'welcomeFlow', to: '+966501234567' },
    { 'Idempotency-Key': 'order-1' },
  )
  t.equal(again.status, 200)
  t.equal(again.headers.get('idempotent-replayed'), 'true')
  t.equal(again.headers.get('location'), `/calls/${first.body.id}`)
  t.same(again.body, first.body)
  const [{ n }] = (await h.sql`SELECT count(*)::int AS n FROM calls`) as unknown as [{ n: number }]
  t.equal(n, 1)

  // Same key, another body: 422 and nothing written.
  const before = await tableSnapshot(h.sql)
  for (const other of [
    { ...body, scriptId: 'otherFlow' },
    { ...body, to: '+966501234568' },
    { ...body, metadata: { a: 2 } },
    { to: body.to, scriptId: body.scriptId },
    { ...body, expiresAt: new Date(Date.now() + 3_600_000).toISOString() },
  ]) {
    const res = await h.call('POST', '/calls', other, { 'Idempotency-Key': 'order-1' })
    isProblem(t, res, 422, 'idempotency_key_reused')
    t.equal(res.body.callId, first.body.id)
  }
  t.same(await tableSnapshot(h.sql), before, 'nothing written')

  // Another key, same body: a new call.
  const other = await h.call('POST', '/calls', body, { 'Idempotency-Key': 'order-2' })
  t.equal(other.status, 201)
  t.not(other.body.id, first.body.id)
})

t.test('20 concurrent POSTs with one new Idempotency-Key create one call', async (t) => {
  const h = await createHarness(t)
  const body = { to: '+966501234567', scriptId: 'welcomeFlow' }
  const results = await Promise.all(
    Array.from({ length: 20 }, () => h.call('POST', '/calls', body, { 'Idempotency-Key': 'burst-key' })),
  )
  const statuses = results.map((r) => r.status)
  t.ok(statuses.every((s) => s === 200 || s === 201), `all succeed: ${statuses.join(',')}`)
  t.equal(statuses.filter((s) => s === 201).length, 1, 'exactly one 201')
  t.equal(new Set(results.map((r) => r.body.id)).size, 1, 'all answer with the same call')
  for (const r of results) if (r.status === 200) t.equal(r.headers.get('idempotent-replayed'), 'true')
  const rows = await h.sql`SELECT id, job_id FROM calls`
  t.equal(rows.length, 1, 'exactly one row')
  const jobs = await h.sql`SELECT id FROM pgboss.job`
  t.equal(jobs.length, 1, 'exactly one job: the losers rolled theirs back')
  t.equal(jobs[0]!.id, rows[0]!.job_id)
})

t.test('GET /calls/:id', async (t) => {
  const h = await createHarness(t)
  const created = await postCall(h, { metadata: { x: [1, 2] } })
  const res = await h.call('GET', `/calls/${created.id}`)
  t.equal(res.status, 200)
  t.same(res.body, created)

  // State shows through.
  await moveToStatus(h.sql, created.id, 'FAILED')
  const failed = await h.call('GET', `/calls/${created.id}`)
  t.equal(failed.body.status, 'FAILED')
  t.equal(failed.body.lastError, 'provider reported BUSY')
  t.equal(failed.body.attempts, 1)
  t.match(failed.body.endedAt, ISO)
  t.match(failed.body.startedAt, ISO)

  const unknown = randomUUID()
  const missing = await h.call('GET', `/calls/${unknown}`)
  isProblem(t, missing, 404, 'call_not_found')
  t.match(missing.body.detail, unknown)

  for (const bad of ['not-a-uuid', '123', `${unknown}x`]) {
    isProblem(t, await h.call('GET', `/calls/${bad}`), 400, 'validation_failed')
  }
  isProblem(t, await h.call('GET', '/nowhere'), 404, 'route_not_found')
})

t.test('PATCH /calls/:id while PENDING', async (t) => {
  const h = await createHarness(t)
  const created = await postCall(h, { metadata: { keep: true } })
  const jobBefore = await jobOf(h.sql, created.id)

  // scriptId only: the payload changes, the job stays.
  const res = await h.call('PATCH', `/calls/${created.id}`, { scriptId: 'reminderFlow' })
  t.equal(res.status, 200)
  t.strictSame(res.body.payload, { to: '+966501234567', scriptId: 'reminderFlow', metadata: { keep: true } })
  t.equal(res.body.status, 'PENDING')
  t.ok(Date.parse(res.body.updatedAt) >= Date.parse(res.body.createdAt))
  t.equal((await jobOf(h.sql, created.id))!.id, jobBefore!.id, 'same job')

  // metadata replaces the whole object.
  const meta = await h.call('PATCH', `/calls/${created.id}`, { metadata: { fresh: 1 } })
  t.equal(meta.status, 200)
  t.strictSame(meta.body.payload.metadata, { fresh: 1 })
  t.equal(meta.body.payload.scriptId, 'reminderFlow')
  const read = await h.call('GET', `/calls/${created.id}`)
  t.same(read.body, meta.body, 'GET shows the change')

  // to: the job is replaced by one keyed by the new number.
  const moved = await h.call('PATCH', `/calls/${created.id}`, { to: '+14155550100' })
  t.equal(moved.status, 200)
  t.equal(moved.body.payload.to, '+14155550100')
  const jobAfter = await jobOf(h.sql, created.id)
  t.ok(jobAfter)
  t.not(jobAfter!.id, jobBefore!.id, 'a new job')
  t.equal(jobAfter!.singleton_key, '+14155550100')
  t.equal(jobAfter!.state, 'created')
  t.same(jobAfter!.data, { callId: created.id })
  const old = await h.sql`SELECT id FROM pgboss.job WHERE id = ${jobBefore!.id}`
  t.equal(old.length, 0, 'the old job is gone')
  const all = await h.sql`SELECT singleton_key FROM pgboss.job`
  t.same(all.map((j) => j.singleton_key), ['+14155550100'], 'exactly one job, for the new number')

  // Same number again: nothing to replace.
  const same = await h.call('PATCH', `/calls/${created.id}`, { to: '+14155550100', scriptId: 'x' })
  t.equal(same.status, 200)
  t.equal((await jobOf(h.sql, created.id))!.id, jobAfter!.id)

  isProblem(t, await h.call('PATCH', `/calls/${randomUUID()}`, { scriptId: 'x' }), 404, 'call_not_found')
  isProblem(t, await h.call('PATCH', '/calls/nope', { scriptId: 'x' }), 400, 'validation_failed')
})

t.test('PATCH /calls/:id refuses calls that are no longer PENDING', async (t) => {
  const h = await createHarness(t)
  const seeds = [
    ['IN_PROGRESS', { status: 'IN_PROGRESS' }],
    ['IN_PROGRESS', { status: 'IN_PROGRESS', dialed: false }],
    ['COMPLETED', { status: 'COMPLETED' }],
    ['FAILED', { status: 'FAILED' }],
    ['EXPIRED', { status: 'EXPIRED' }],
  ] as const
  for (const [status, seed] of seeds) {
    const created = await insertCall(h, seed)
    const before = await tableSnapshot(h.sql)
    for (const change of [{ scriptId: 'late' }, { to: '+966509999999' }, { metadata: { a: 1 } }]) {
      const res = await h.call('PATCH', `/calls/${created.id}`, change)
      isProblem(t, res, 409, 'call_not_pending')
      t.match(res.body.detail, status, `${status}: the detail names the current status`)
      t.equal(res.body.callId, created.id)
      t.equal(res.body.callStatus, status, `${status}: callStatus carries the current status`)
    }
    t.same(await tableSnapshot(h.sql), before, `${status}: nothing written`)
    const read = await h.call('GET', `/calls/${created.id}`)
    t.equal(read.body.payload.scriptId, created.script_id)
  }
})

t.test('GET /calls lists newest first with keyset pagination', async (t) => {
  const h = await createHarness(t)
  const empty = await h.call('GET', '/calls')
  t.equal(empty.status, 200)
  t.same(empty.body, { data: [], nextCursor: null })

  const ids: string[] = []
  for (let i = 0; i < 7; i++) ids.push((await postCall(h, { to: `+1415555${String(i).padStart(4, '0')}` })).id)
  const newestFirst = ids.slice().reverse()

  const all = await h.call('GET', '/calls')
  t.same(all.body.data.map((c: any) => c.id), newestFirst)
  t.equal(all.body.nextCursor, null)
  t.equal(all.body.data[0].payload.to, '+14155550006')

  // limit=2: four pages, every row exactly once, in order.
  const seen: string[] = []
  const pages: number[] = []
  let cursor: string | null = null
  for (let guard = 0; guard < 10; guard++) {
    const res: any = await h.call('GET', `/calls?limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`)
    t.equal(res.status, 200)
    pages.push(res.body.data.length)
    seen.push(...res.body.data.map((c: any) => c.id))
    cursor = res.body.nextCursor
    if (!cursor) break
  }
  t.same(pages, [2, 2, 2, 1])
  t.same(seen, newestFirst, 'every row once, newest first')

  // Exactly a multiple of the page size: no empty trailing page is promised.
  const three = await h.call('GET', '/calls?limit=7')
  t.equal(three.body.data.length, 7)
  t.equal(three.body.nextCursor, null)

  // Status filter, with pagination.
  await moveToStatus(h.sql, ids[1]!, 'COMPLETED')
  await moveToStatus(h.sql, ids[3]!, 'COMPLETED')
  await moveToStatus(h.sql, ids[5]!, 'COMPLETED')
  await moveToStatus(h.sql, ids[2]!, 'IN_PROGRESS')
  const completed = await h.call('GET', '/calls?status=COMPLETED&limit=2')
  t.same(completed.body.data.map((c: any) => c.id), [ids[5], ids[3]])
  t.ok(completed.body.nextCursor)
  const completed2 = await h.call('GET', `/calls?status=COMPLETED&limit=2&cursor=${completed.body.nextCursor}`)
  t.same(completed2.body.data.map((c: any) => c.id), [ids[1]])
  t.equal(completed2.body.nextCursor, null)
  const pending = await h.call('GET', '/calls?status=PENDING')
  t.same(pending.body.data.map((c: any) => c.id), [ids[6], ids[4], ids[0]])
  t.ok(pending.body.data.every((c: any) => c.status === 'PENDING'))
  const inProgress = await h.call('GET', '/calls?status=IN_PROGRESS')
  t.same(inProgress.body.data.map((c: any) => c.id), [ids[2]])
  const expired = await h.call('GET', '/calls?status=EXPIRED')
  t.same(expired.body, { data: [], nextCursor: null })

  // Bad input.
  isProblem(t, await h.call('GET', '/calls?status=DONE'), 400, 'validation_failed')
  isProblem(t, await h.call('GET', '/calls?status=pending'), 400, 'validation_failed')
  for (const limit of ['0', '101', '-1', 'abc', '1.5', '']) {
    isProblem(t, await h.call('GET', `/calls?limit=${limit}`), 400, 'validation_failed')
  }
  isProblem(t, await h.call('GET', '/calls?cursor=garbage'), 400, 'invalid_cursor')
  isProblem(t, await h.call('GET', `/calls?cursor=${Buffer.from(randomUUID()).toString('base64url')}`), 400, 'invalid_cursor')
  isProblem(t, await h.call('GET', '/calls?sort=asc'), 400, 'validation_failed')
})

t.test('GET /metrics', async (t) => {
  const h = await createHarness(t, { maxConcurrentCalls: 12 })
  const zero = await h.call('GET', '/metrics')
  t.equal(zero.status, 200)
  t.strictSame(zero.body, {
    calls: { PENDING: 0, IN_PROGRESS: 0, COMPLETED: 0, FAILED: 0, EXPIRED: 0, SUPPRESSED: 0, CANCELLED: 0 },
    inFlight: 0,
    freeSlots: 12,
    maxConcurrentCalls: 12,
    paused: false,
    callbacksRefused: {},
  })

  const wanted: Record<CallStatus, number> = { PENDING: 3, IN_PROGRESS: 2, COMPLETED: 1, FAILED: 1, EXPIRED: 0, SUPPRESSED: 0, CANCELLED: 0 }
  for (const [status, count] of Object.entries(wanted) as Array<[CallStatus, number]>) {
    for (let i = 0; i < count; i++) await insertCall(h, { status })
  }
  const json = await h.call('GET', '/metrics')
  t.strictSame(json.body, { calls: wanted, inFlight: 2, freeSlots: 10, maxConcurrentCalls: 12, paused: false, callbacksRefused: {} })
  t.strictSame((await h.call('GET', '/metrics?format=json', undefined, { accept: 'text/plain' })).body, json.body)
  t.strictSame((await h.call('GET', '/metrics', undefined, { accept: 'application/json, text/plain' })).body, json.body)

  const expectedText = [
    'orchestrator_calls{status="PENDING"} 3',
    'orchestrator_calls{status="IN_PROGRESS"} 2',
    'orchestrator_calls{status="COMPLETED"} 1',
    'orchestrator_calls{status="FAILED"} 1',
    'orchestrator_calls{status="EXPIRED"} 0',
    'orchestrator_calls_in_flight 2',
    'orchestrator_max_concurrent_calls 12',
    'orchestrator_free_slots 10',
    'orchestrator_dispatch_paused 0',
  ]
  for (const res of [
    await h.call('GET', '/metrics', undefined, { accept: 'text/plain' }),
    await h.call('GET', '/metrics?format=prometheus'),
  ]) {
    t.equal(res.status, 200)
    t.match(res.headers.get('content-type'), /^text\/plain; version=0\.0\.4/)
    t.type(res.body, 'string')
    const lines = (res.body as string).split('\n')
    for (const line of expectedText) t.ok(lines.includes(line), `has ${line}`)
    t.ok(lines.includes('# TYPE orchestrator_calls gauge'))
    t.ok((res.body as string).endsWith('\n'))
  }
  isProblem(t, await h.call('GET', '/metrics?format=xml'), 400, 'validation_failed')
})

t.test('/healthz and /readyz', async (t) => {
  const h = await createHarness(t)
  const health = await h.call('GET', '/healthz')
  t.equal(health.status, 200)
  t.same(health.body, { status: 'ok' })
  const ready = await h.call('GET', '/readyz')
  t.equal(ready.status, 200)
  t.same(ready.body, { status: 'ready' })

  // /readyz reports what deps.ready() says.
  const app = createApp({
    calls: createCallService({ sql: h.sql, queue: h.queue, callTtlSeconds: 0, maxConcurrentCalls: 1 }),
    apiTokens: ['secret'],
    log: silentLogger,
    ready: async () => ({ ok: false, detail: 'migration 2 is missing' }),
  })
  const res = await app.request('/readyz')
  t.equal(res.status, 503, 'not ready, and open without a token')
  t.match(res.headers.get('content-type'), /^application\/problem\+json/)
  const body = (await res.json()) as { code: string; detail: string }
  t.equal(body.code, 'not_ready')
  t.equal(body.detail, 'migration 2 is missing')
})

t.test('API_TOKENS', async (t) => {
  const h = await createHarness(t, { apiTokens: ['a', 'b'] })
  const id = randomUUID()
  const protectedRequests: Array<[string, string, unknown?]> = [
    ['POST', '/calls', { to: '+966501234567', scriptId: 'x' }],
    ['GET', '/calls'],
    ['GET', `/calls/${id}`],
    ['PATCH', `/calls/${id}`, { scriptId: 'x' }],
    ['GET', '/metrics'],
  ]
  for (const [method, path, body] of protectedRequests) {
    for (const headers of [{} as Record<string, string>, { authorization: 'Bearer c' }, { authorization: 'Bearer ab' }, { authorization: 'a' }, { authorization: 'Basic YTph' }]) {
      const res = await h.call(method, path, body, headers)
      isProblem(t, res, 401, 'unauthorized')
      t.match(res.headers.get('www-authenticate'), /^Bearer/)
    }
  }
  t.same(await tableSnapshot(h.sql), { calls: 0, jobs: 0, rows: '' }, 'nothing written without a token')

  const a = await h.call('POST', '/calls', { to: '+966501234567', scriptId: 'x' }, { authorization: 'Bearer a' })
  t.equal(a.status, 201)
  const b = await h.call('GET', `/calls/${a.body.id}`, undefined, { authorization: 'bearer b' })
  t.equal(b.status, 200)
  t.equal(b.body.id, a.body.id)
  t.equal((await h.call('GET', '/calls', undefined, { authorization: 'Bearer a' })).status, 200)
  t.equal((await h.call('PATCH', `/calls/${a.body.id}`, { scriptId: 'y' }, { authorization: 'Bearer b' })).status, 200)
  t.equal((await h.call('GET', '/metrics', undefined, { authorization: 'Bearer b' })).status, 200)

  t.equal((await h.call('GET', '/healthz')).status, 200)
  t.equal((await h.call('GET', '/readyz')).status, 200)
})
