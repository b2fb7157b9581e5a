import t from 'tap'
import { moveToStatus } from './support/factory.ts'
import { tableSnapshot } from './support/inspect.ts'
import { createHarness } from './support/harness.ts'

// Input a careless client or an attacker sends: what Postgres cannot store (NUL, lone
// surrogates), what would blow a stack (metadata nested thousands deep), what JavaScript would
// silently change (keys named __proto__, numbers beyond a double), repeated query parameters,
// methods a path does not have. Each gets a 4xx problem that names what is wrong, and nothing is
// written; what is valid is stored exactly as sent.

const good = { to: '+966501234567', scriptId: 'welcomeFlow' }

t.test('what Postgres cannot store is a 400 naming the field, on POST and PATCH alike', async (t) => {
  const h = await createHarness(t)
  const existing = await h.call('POST', '/calls', good)
  const cases: Array<[string, Record<string, unknown>, string]> = [
    ['NUL in scriptId', { scriptId: 'a\u0000b' }, 'body.scriptId'],
    ['NUL in a metadata key', { metadata: { 'k\u0000': 1 } }, 'body.metadata'],
    ['NUL in a metadata value', { metadata: { k: 'v\u0000' } }, 'body.metadata.k'],
    ['NUL deep in metadata', { metadata: { a: [{ b: 'x\u0000' }] } }, 'body.metadata.a.0.b'],
    ['a lone surrogate in scriptId', { scriptId: 'a\ud800' }, 'body.scriptId'],
    ['a lone surrogate in a metadata value', { metadata: { k: '\udc00' } }, 'body.metadata.k'],
    ['a lone surrogate in a metadata key', { metadata: { ['\ud83d']: 1 } }, 'body.metadata'],
  ]
  for (const [what, change, path] of cases) {
    const before = await tableSnapshot(h.sql)
    for (const [method, url, body] of [
      ['POST', '/calls', { ...good, ...change }],
      ['PATCH', `/calls/${existing.body.id}`, change],
    ] as const) {
      const res = await h.call(method, url, body)
      t.equal(res.status, 400, `${what} (${method}): 400`)
      t.equal(res.headers.get('content-type'), 'application/problem+json')
      t.ok(
        res.body.errors?.some((e: { path: string }) => e.path === path),
        `${what} (${method}): names ${path} (${JSON.stringify(res.body.errors)})`,
      )
    }
    t.same(await tableSnapshot(h.sql), before, `${what}: nothing written`)
  }
})

t.test('metadata nested thousands deep, or with too many keys, is a 400, not a stack overflow', async (t) => {
  const h = await createHarness(t)
  const deep = '{"a":'.repeat(5_000) + '1' + '}'.repeat(5_000)
  const body = `{"to":"+966501234567","scriptId":"s","metadata":${deep}}`
  t.ok(body.length > 30_000 && body.length < 64 * 1024)
  const res = await h.call('POST', '/calls', body, { 'content-type': 'application/json' })
  t.equal(res.status, 400)
  t.match(res.body.detail, /metadata.*at most 10 levels deep/)
  const wide = Object.fromEntries(Array.from({ length: 501 }, (_, i) => [`k${i}`, i]))
  const many = await h.call('POST', '/calls', { ...good, metadata: wide })
  t.equal(many.status, 400)
  t.match(many.body.detail, /at most 500 keys and array items/)
  const atLimit = '{"a":'.repeat(9) + '1' + '}'.repeat(9)
  const ok = await h.call('POST', '/calls', `{"to":"+966501234567","scriptId":"s","metadata":${atLimit}}`, { 'content-type': 'application/json' })
  t.equal(ok.status, 201, '10 levels (the metadata object and nine inside it) are fine')
  const patched = await h.call('PATCH', `/calls/${ok.body.id}`, `{"metadata":${deep}}`, { 'content-type': 'application/json' })
  t.equal(patched.status, 400)
})

t.test('metadata is stored exactly as the client sent it, keys named __proto__ and constructor included', async (t) => {
  const h = await createHarness(t)
  const text = '{"to":"+966501234567","scriptId":"s","metadata":{"__proto__":{"admin":true},"constructor":"c","toString":1,"nested":{"__proto__":[1,2]},"n":0.1,"big":9007199254740991,"e":1e21}}'
  const created = await h.call('POST', '/calls', text, { 'content-type': 'application/json' })
  t.equal(created.status, 201)
  const expected = JSON.parse(text).metadata
  // jsonb keeps every key and value; the order of keys in an object is its own (RFC 8259: unordered).
  t.same(Object.keys(created.body.payload.metadata).sort(), ['__proto__', 'big', 'constructor', 'e', 'n', 'nested', 'toString'])
  const fetched = await h.call('GET', `/calls/${created.body.id}`)
  t.same(fetched.body.payload.metadata, expected, 'the same JSON comes back')
  t.same(Object.keys(fetched.body.payload.metadata.nested), ['__proto__'])
  const [row] = await h.sql<{ m: string }[]>`SELECT metadata::text AS m FROM calls WHERE id = ${created.body.id}`
  t.match(row!.m, /"__proto__": \{"admin": true\}/, 'and the database holds the key itself')
  t.match(row!.m, /"nested": \{"__proto__": \[1, 2\]\}/)
  t.equal(Object.getPrototypeOf(fetched.body.payload.metadata), Object.prototype, 'no prototype was set along the way')
})

t.test('numbers JavaScript cannot hold exactly are refused, not silently changed', async (t) => {
  const h = await createHarness(t)
  for (const literal of ['12345678901234567890', '1e400', '-1e400', '0.12345678901234567890123']) {
    const res = await h.call('POST', '/calls', `{"to":"+966501234567","scriptId":"s","metadata":{"x":${literal}}}`, { 'content-type': 'application/json' })
    t.equal(res.status, 400, `${literal}: 400`)
    t.match(res.body.detail, /body\.metadata\.x .*send it as a string/, `${literal}: says what to do`)
  }
  for (const literal of ['1.0', '1.50', '-0', '1E3', '123456789012345', '0.1']) {
    const res = await h.call('POST', '/calls', `{"to":"+966501234567","scriptId":"s","metadata":{"x":${literal}}}`, { 'content-type': 'application/json' })
    t.equal(res.status, 201, `${literal}: the same number, accepted`)
  }
})

t.test('lengths count characters, not UTF-16 units', async (t) => {
  const h = await createHarness(t)
  t.equal((await h.call('POST', '/calls', { ...good, scriptId: '😀'.repeat(200) })).status, 201, '200 emoji are 200 characters')
  const over = await h.call('POST', '/calls', { ...good, scriptId: '😀'.repeat(201) })
  t.equal(over.status, 400)
  t.match(over.body.detail, /scriptId must be at most 200 characters/)
})

t.test('messages say what is wrong', async (t) => {
  const h = await createHarness(t)
  for (const body of ['[]', '"x"', '42', 'null', 'true']) {
    const res = await h.call('POST', '/calls', body, { 'content-type': 'application/json' })
    t.equal(res.status, 400)
    t.equal(res.body.detail, 'The request is not valid: body must be a JSON object.', `${body}: one plain message`)
  }
  const missing = await h.call('POST', '/calls', { scriptId: 's' })
  t.match(missing.body.detail, /body\.to is required/)
  t.notMatch(missing.body.detail, /not a known field/)
  const unknown = await h.call('POST', '/calls', { ...good, colour: 'red' })
  t.match(unknown.body.detail, /body\.colour is not a known field/)
  const empty = await h.call('POST', '/calls', { ...good, scriptId: '' })
  t.equal(empty.body.detail, 'The request is not valid: body.scriptId must not be empty.')
  for (const limit of ['-1', '0', '101', '1.5', 'ten']) {
    const res = await h.call('GET', `/calls?limit=${limit}`)
    t.equal(res.status, 400)
    t.equal(res.body.detail, 'The request is not valid: query.limit must be a whole number from 1 to 100.', `limit=${limit}`)
  }
})

t.test('a repeated query parameter is refused, not half-read', async (t) => {
  const h = await createHarness(t)
  for (const query of ['limit=1&limit=2', 'status=PENDING&status=FAILED', 'cursor=a&cursor=b']) {
    const res = await h.call('GET', `/calls?${query}`)
    t.equal(res.status, 400, query)
    t.match(res.body.detail, /query\.\w+ is given more than once/)
  }
  const metrics = await h.call('GET', '/metrics?format=json&format=prometheus')
  t.equal(metrics.status, 400)
})

t.test('a method a path does not have is 405 with Allow', async (t) => {
  const h = await createHarness(t)
  const call = await h.call('POST', '/calls', good)
  const cases: Array<[string, string, string]> = [
    ['PUT', `/calls/${call.body.id}`, 'GET, PATCH'],
    ['DELETE', `/calls/${call.body.id}`, 'GET, PATCH'],
    ['POST', `/calls/${call.body.id}`, 'GET, PATCH'],
    ['DELETE', '/calls', 'GET, POST'],
    ['PATCH', '/calls', 'GET, POST'],
    ['POST', '/metrics', 'GET'],
    ['GET', '/callbacks/call-status', 'POST'],
    ['POST', '/healthz', 'GET'],
  ]
  for (const [method, path, allow] of cases) {
    const res = await h.call(method, path)
    t.equal(res.status, 405, `${method} ${path}`)
    t.equal(res.headers.get('allow'), allow)
    t.equal(res.headers.get('content-type'), 'application/problem+json')
    t.equal(res.body.code, 'method_not_allowed')
  }
  t.equal((await h.call('GET', '/nowhere')).status, 404, 'an unknown path is still 404')
  await moveToStatus(h.sql, call.body.id, 'COMPLETED')
  t.equal((await h.call('GET', `/calls/${call.body.id}`)).status, 200)
})
