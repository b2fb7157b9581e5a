import t, { type Test } from 'tap'
import { MAX_BODY_BYTES } from '../src/http/body.ts'
import { MAX_METADATA_BYTES } from '../src/http/input.ts'
import { postCall } from './support/factory.ts'
import { tableSnapshot } from './support/inspect.ts'
import { createHarness, readResponse, type Harness } from './support/harness.ts'

// Every bad input is answered with a 4xx problem+json and leaves the database as it was.

type Res = { status: number; headers: Headers; body: any }

function isProblem(t: Test, res: Res, status: number, code: string, what: string) {
  t.equal(res.status, status, `${what}: ${status}`)
  t.match(res.headers.get('content-type') ?? '', /^application\/problem\+json/, `${what}: problem+json`)
  t.equal(typeof res.body, 'object', `${what}: a JSON body`)
  t.equal(res.body?.status, status, `${what}: body.status`)
  t.equal(res.body?.code, code, `${what}: code ${code}`)
  t.equal(res.body?.type, `urn:call-orchestrator:problem:${code}`, `${what}: type`)
  t.type(res.body?.title, 'string', `${what}: title`)
  t.ok(typeof res.body?.detail === 'string' && res.body.detail.length > 0, `${what}: detail`)
}

/** Sends raw bytes with exactly the headers given (no Content-Type added). */
async function raw(h: Harness, method: string, path: string, body: string | Uint8Array | undefined, headers: Record<string, string>): Promise<Res> {
  return readResponse(await h.app.request(path, { method, headers, ...(body === undefined ? {} : { body: body as NonNullable<RequestInit['body']> }) }))
}

const good = { to: '+966501234567', scriptId: 'welcomeFlow' }
const json = { 'content-type': 'application/json' }

// Bodies that are well-formed JSON but not a valid create request; [what, body, path the error names].
const badCreateBodies: Array<[string, unknown, string?]> = [
  ['array body', []],
  ['string body', 'hello'],
  ['number body', 42],
  ['null body', null],
  ['boolean body', true],
  ['empty object', {}],
  ['missing to', { scriptId: 'welcomeFlow' }, 'body.to'],
  ['missing scriptId', { to: '+966501234567' }, 'body.scriptId'],
  ['to as number', { ...good, to: 966501234567 }, 'body.to'],
  ['to null', { ...good, to: null }, 'body.to'],
  ['scriptId as number', { ...good, scriptId: 5 }, 'body.scriptId'],
  ['scriptId as array', { ...good, scriptId: ['a'] }, 'body.scriptId'],
  ['to without +', { ...good, to: '0501234567' }, 'body.to'],
  ['to starting +0', { ...good, to: '+0123' }, 'body.to'],
  ['to too short', { ...good, to: '+123456' }, 'body.to'],
  ['to too long', { ...good, to: '+1234567890123456' }, 'body.to'],
  ['to letters', { ...good, to: 'abc' }, 'body.to'],
  ['to with spaces', { ...good, to: '+966 50 123 4567' }, 'body.to'],
  ['to with leading space', { ...good, to: ' +966501234567' }, 'body.to'],
  ['to with trailing newline', { ...good, to: '+966501234567\n' }, 'body.to'],
  ['empty to', { ...good, to: '' }, 'body.to'],
  ['empty scriptId', { ...good, scriptId: '' }, 'body.scriptId'],
  ['whitespace scriptId', { ...good, scriptId: '   ' }, 'body.scriptId'],
  ['scriptId with leading space', { ...good, scriptId: ' welcomeFlow' }, 'body.scriptId'],
  ['scriptId with trailing space', { ...good, scriptId: 'welcomeFlow\t' }, 'body.scriptId'],
  ['scriptId too long', { ...good, scriptId: 'x'.repeat(201) }, 'body.scriptId'],
  ['metadata string', { ...good, metadata: 'x' }, 'body.metadata'],
  ['metadata number', { ...good, metadata: 5 }, 'body.metadata'],
  ['metadata null', { ...good, metadata: null }, 'body.metadata'],
  ['metadata array', { ...good, metadata: [1, 2] }, 'body.metadata'],
  ['metadata empty array', { ...good, metadata: [] }, 'body.metadata'],
  ['metadata over 16 KiB', { ...good, metadata: { blob: 'x'.repeat(MAX_METADATA_BYTES) } }, 'body.metadata'],
  ['unknown field', { ...good, extra: 1 }, 'body.extra'],
  ['unknown field status', { ...good, status: 'COMPLETED' }, 'body.status'],
  ['unknown field id', { ...good, id: '00000000-0000-4000-8000-000000000000' }, 'body.id'],
  ['nested payload', { payload: good }],
  ['expiresAt in the past', { ...good, expiresAt: new Date(Date.now() - 60_000).toISOString() }, 'body.expiresAt'],
  ['expiresAt not a timestamp', { ...good, expiresAt: 'tomorrow' }, 'body.expiresAt'],
  ['expiresAt a date only', { ...good, expiresAt: '2999-01-01' }, 'body.expiresAt'],
  ['expiresAt impossible date', { ...good, expiresAt: '2999-13-01T00:00:00Z' }, 'body.expiresAt'],
  ['expiresAt a number', { ...good, expiresAt: 32503680000 }, 'body.expiresAt'],
  ['expiresAt null', { ...good, expiresAt: null }, 'body.expiresAt'],
  // pg-boss would delete the call's waiting job before then, and the call would never be dialed.
  ['expiresAt beyond 365 days', { ...good, expiresAt: new Date(Date.now() + 366 * 86_400_000).toISOString() }, 'body.expiresAt'],
]

t.test('POST /calls: bad input is a 4xx problem and writes nothing', async (t) => {
  const h = await createHarness(t)
  // One existing call, so "nothing written" also covers changes to existing rows.
  await postCall(h)
  const before = await tableSnapshot(h.sql)
  t.equal(before.calls, 1)
  t.equal(before.jobs, 1)

  for (const [what, body, path] of badCreateBodies) {
    const res = await h.call('POST', '/calls', JSON.stringify(body))
    isProblem(t, res, 400, 'validation_failed', what)
    t.ok(Array.isArray(res.body?.errors) && res.body.errors.length > 0, `${what}: lists the errors`)
    if (path) t.ok(res.body.errors.some((e: { path: string }) => e.path === path), `${what}: names ${path}`)
  }

  for (const text of ['{"to":', '{to: "+966501234567"}', '', 'nul', '{"to":"+966501234567","scriptId":"a"} x', '\u00ff']) {
    isProblem(t, await h.call('POST', '/calls', text), 400, 'malformed_json', `malformed JSON ${JSON.stringify(text)}`)
  }

  const body = JSON.stringify(good)
  for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/jsonp', 'json']) {
    isProblem(t, await raw(h, 'POST', '/calls', body, { 'content-type': type }), 415, 'unsupported_media_type', `Content-Type ${type}`)
  }
  isProblem(t, await raw(h, 'POST', '/calls', new TextEncoder().encode(body), {}), 415, 'unsupported_media_type', 'no Content-Type')

  const huge = JSON.stringify({ ...good, metadata: { blob: 'x'.repeat(MAX_BODY_BYTES) } })
  isProblem(t, await h.call('POST', '/calls', huge), 413, 'body_too_large', 'body over 64 KiB')
  isProblem(t, await raw(h, 'POST', '/calls', huge, { 'content-type': 'text/plain' }), 413, 'body_too_large', 'body over 64 KiB, not JSON')
  // Without a Content-Length the limit still holds: the body arrives as a stream.
  const stream = new ReadableStream({
    start(controller) {
      controller.enqueue(new TextEncoder().encode(huge))
      controller.close()
    },
  })
  const streamed = await h.app.request('/calls', { method: 'POST', headers: json, body: stream, duplex: 'half' } as RequestInit)
  t.equal(streamed.status, 413, 'streamed body over 64 KiB: 413')

  for (const key of ['has space', 'x'.repeat(256), 'caf\u00e9', 'tab\there']) {
    const res = await h.call('POST', '/calls', good, { 'Idempotency-Key': key })
    isProblem(t, res, 400, 'validation_failed', `Idempotency-Key ${JSON.stringify(key.slice(0, 20))}`)
    t.ok(res.body.errors.some((e: { path: string }) => e.path === 'header.Idempotency-Key'), 'names the header')
  }
  isProblem(t, await h.call('POST', '/calls', good, { 'Idempotency-Key': '' }), 400, 'validation_failed', 'empty Idempotency-Key')

  t.same(await tableSnapshot(h.sql), before, 'nothing written')

  // The limits themselves are inclusive: the largest valid values are accepted.
  const meta = { b: 'x'.repeat(MAX_METADATA_BYTES - JSON.stringify({ b: '' }).length) }
  t.equal(Buffer.byteLength(JSON.stringify(meta)), MAX_METADATA_BYTES)
  const edge = await h.call('POST', '/calls', { to: '+1234567890123', scriptId: 'y'.repeat(200), metadata: meta }, { 'Idempotency-Key': 'k'.repeat(255) })
  t.equal(edge.status, 201, 'largest valid request accepted')
  const shortest = await h.call('POST', '/calls', { to: '+1234567', scriptId: 'a b', metadata: {} })
  t.equal(shortest.status, 201, 'shortest valid number accepted')
  t.equal((await tableSnapshot(h.sql)).calls, 3)
})

t.test('PATCH /calls/:id: bad input is a 4xx problem and writes nothing', async (t) => {
  const h = await createHarness(t)
  const call = await postCall(h, { metadata: { a: 1 } })
  const path = `/calls/${call.id}`
  const before = await tableSnapshot(h.sql)

  const bad: Array<[string, unknown, string?]> = [
    ['empty object', {}],
    ['array body', []],
    ['string body', 'x'],
    ['null body', null],
    ['unknown field', { scriptId: 'a', extra: 1 }, 'body.extra'],
    ['unknown field status', { status: 'COMPLETED' }, 'body.status'],
    ['expiresAt is not patchable', { expiresAt: new Date(Date.now() + 3_600_000).toISOString() }, 'body.expiresAt'],
    ['nested payload', { payload: { scriptId: 'a' } }, 'body.payload'],
    ['to null', { to: null }, 'body.to'],
    ['to as number', { to: 966501234567 }, 'body.to'],
    ['to not E.164', { to: '0501234567' }, 'body.to'],
    ['to starting +0', { to: '+0123' }, 'body.to'],
    ['to too long', { to: '+1234567890123456' }, 'body.to'],
    ['to letters', { to: 'abc' }, 'body.to'],
    ['scriptId empty', { scriptId: '' }, 'body.scriptId'],
    ['scriptId whitespace', { scriptId: '  ' }, 'body.scriptId'],
    ['scriptId too long', { scriptId: 'x'.repeat(201) }, 'body.scriptId'],
    ['scriptId as number', { scriptId: 1 }, 'body.scriptId'],
    ['metadata string', { metadata: 'x' }, 'body.metadata'],
    ['metadata array', { metadata: [1] }, 'body.metadata'],
    ['metadata null', { metadata: null }, 'body.metadata'],
    ['metadata over 16 KiB', { metadata: { blob: 'x'.repeat(MAX_METADATA_BYTES) } }, 'body.metadata'],
    ['one good field, one bad', { scriptId: 'fine', to: 'bad' }, 'body.to'],
  ]
  for (const [what, body, field] of bad) {
    const res = await h.call('PATCH', path, JSON.stringify(body))
    isProblem(t, res, 400, 'validation_failed', what)
    if (field) t.ok(res.body.errors.some((e: { path: string }) => e.path === field), `${what}: names ${field}`)
  }
  for (const text of ['{"scriptId":', '', "{'scriptId':'a'}"]) {
    isProblem(t, await h.call('PATCH', path, text), 400, 'malformed_json', `malformed JSON ${JSON.stringify(text)}`)
  }
  isProblem(t, await raw(h, 'PATCH', path, JSON.stringify({ scriptId: 'a' }), { 'content-type': 'text/plain' }), 415, 'unsupported_media_type', 'text/plain')
  isProblem(t, await raw(h, 'PATCH', path, new TextEncoder().encode('{"scriptId":"a"}'), {}), 415, 'unsupported_media_type', 'no Content-Type')
  const huge = JSON.stringify({ metadata: { blob: 'x'.repeat(MAX_BODY_BYTES) } })
  isProblem(t, await h.call('PATCH', path, huge), 413, 'body_too_large', 'body over 64 KiB')

  // A bad id is refused before the body is looked at.
  isProblem(t, await h.call('PATCH', '/calls/not-a-uuid', { scriptId: 'a' }), 400, 'validation_failed', 'malformed id')

  t.same(await tableSnapshot(h.sql), before, 'nothing written')
  const read = await h.call('GET', path)
  t.strictSame(read.body.payload, call.payload)
})

t.test('query and path validation', async (t) => {
  const h = await createHarness(t)
  await postCall(h)
  const before = await tableSnapshot(h.sql)
  const cases: Array<[string, string]> = [
    ['/calls?limit=0', 'validation_failed'],
    ['/calls?limit=101', 'validation_failed'],
    ['/calls?limit=ten', 'validation_failed'],
    ['/calls?status=RINGING', 'validation_failed'],
    ['/calls?unknown=1', 'validation_failed'],
    ['/calls?cursor=%%%', 'invalid_cursor'],
    ['/calls?cursor=', 'invalid_cursor'],
    ['/calls/1234', 'validation_failed'],
    ['/metrics?format=csv', 'validation_failed'],
  ]
  for (const [path, code] of cases) isProblem(t, await h.call('GET', path), 400, code, `GET ${path}`)
  t.same(await tableSnapshot(h.sql), before)
})
