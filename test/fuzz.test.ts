import t from 'tap'
import fc from 'fast-check'
import { callbackPath, signHeaders } from './support/callbacks.ts'
import { insertCall } from './support/factory.ts'
import { createHarness, type Harness } from './support/harness.ts'
import { tableSnapshot } from './support/inspect.ts'

// No input reaches a 500. fast-check throws random and adversarial requests at every endpoint:
// methods, paths, ids, query strings (repeated names included), headers, and bodies from valid
// calls with one field gone wrong to deep, huge, NUL-laden, surrogate-split or __proto__-keyed
// JSON and plain garbage; callbacks signed or not, at our URLs or not. Every answer must be
// below 500, a 4xx must be problem+json naming its status, and a refused request must leave
// the calls, the jobs and the callbacks table exactly as they were.
// FUZZ_RUNS sets how many requests (default 1,000, about 5 s; CI runs the default).

const RUNS = Number(process.env.FUZZ_RUNS ?? 1000)

/** Text as hostile as JSON can carry: NUL, lone surrogates, emoji, control characters, long runs. */
const nastyString = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.constantFrom('', ' ', '\u0000', 'a\u0000b', '\ud800', '\udc00x', '😀'.repeat(201), ' padded ', 'x'.repeat(300), '__proto__', 'constructor', '%00', '../../etc'),
)

/** Percent-encoded text, valid or not (%FF, a lone surrogate's bytes, a bare %). */
const urlPart = fc.oneof(
  nastyString.map((x) => {
    try {
      return encodeURIComponent(x)
    } catch {
      return encodeURIComponent(x.replace(/[\ud800-\udfff]/g, '?'))
    }
  }),
  fc.constantFrom('%', '%ZZ', '%FF', '%ED%A0%80', '%00', '%C0%AF', '..%2F'),
)

const jsonLeaf = fc.oneof(nastyString, fc.integer(), fc.double(), fc.boolean(), fc.constant(null))

/** JSON text, including what JSON.stringify cannot make: huge numbers, deep nesting, duplicate keys. */
const nastyJsonText = fc.oneof(
  fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v)),
  fc.integer({ min: 1, max: 6000 }).map((depth) => `{"metadata":${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}}`),
  fc.constantFrom('1e400', '-1e400', '12345678901234567890', '0.1234567890123456789012').map((n) => `{"to":"+15550001111","scriptId":"s","metadata":{"n":${n}}}`),
  fc.constant('{"to":"+15550001111","scriptId":"s","metadata":{"__proto__":{"x":1},"constructor":2}}'),
  fc.constant('{"to":"+15550001111","to":"+15550002222","scriptId":"s"}'),
  fc.string({ unit: 'binary', maxLength: 60 }),
  fc.constantFrom('', '{', '[]', 'null', '"x"', '{"to":', '\u0000'),
  fc.constantFrom('{"reason":"r","source":"s"}', '{"entries":[{"phone":"+15550001111"}]}', '{"entries":[{"phone":"x"}],"source":""}', '{"maxConcurrentCalls":3}', '{"maxConcurrentCalls":null}', '{"maxConcurrentCalls":0}'),
  // Over the 64 KiB body limit, and over the 1 MiB drain bound.
  fc.constantFrom(70_000, 1_100_000).map((n) => `{"to":"+15550001111","scriptId":"s","metadata":{"b":"${'x'.repeat(n)}"}}`),
)

/** A call body with each field kept, dropped or replaced by something hostile. */
const callBody = fc
  .record(
    {
      to: fc.oneof(fc.constantFrom('+15550001111', '+966501234567'), nastyString, jsonLeaf),
      scriptId: fc.oneof(fc.constant('flow'), nastyString, jsonLeaf),
      metadata: fc.oneof(fc.dictionary(nastyString, jsonLeaf, { maxKeys: 5 }), fc.jsonValue({ maxDepth: 3 }), jsonLeaf),
      expiresAt: fc.oneof(
        fc.constantFrom('2030-01-01T00:00:00Z', '2024-02-30T00:00:00Z', '9999-12-31T23:59:59Z', 'tomorrow'),
        fc.date().map((d) => (Number.isNaN(d.getTime()) ? 'NaN' : d.toISOString())),
        jsonLeaf,
      ),
      extra: jsonLeaf,
    },
    { requiredKeys: [] },
  )
  .map((body) => JSON.stringify(body))

const contentType = fc.oneof(
  { arbitrary: fc.constant('application/json'), weight: 6 },
  { arbitrary: fc.constantFrom('', 'application/problem+json', 'text/plain', 'application/json; charset=utf-8', 'application/jsonx'), weight: 1 },
)

const headerValue = fc.oneof(
  fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 300 }),
  fc.constantFrom('', 'application/json', 'application/problem+json', 'text/plain', 'application/json; charset=utf-8'),
)

interface Fuzzed {
  method: string
  path: string
  headers: Record<string, string>
  body?: string | undefined
}

function requests(h: Harness, ids: string[]): fc.Arbitrary<Fuzzed> {
  const id = fc.oneof(fc.constantFrom(...ids), fc.uuid(), urlPart)
  const query = fc
    .array(fc.tuple(fc.constantFrom('status', 'limit', 'cursor', 'format', 'callId', 'batchId', 'type', 'dial', 'token', 'x'), fc.oneof(urlPart, fc.constantFrom('PENDING', 'CANCELLED', '1', '100', '-1', 'prometheus', 'call.completed'))), { maxLength: 4 })
    .map((pairs) => (pairs.length ? `?${pairs.map(([k, v]) => `${k}=${v}`).join('&')}` : ''))
  const path = fc.oneof(
    { arbitrary: fc.constant('/calls'), weight: 4 },
    { arbitrary: fc.constantFrom('/metrics', '/healthz', '/readyz', '/callbacks/call-status', '/', '/calls/', '/nowhere'), weight: 1 },
    {
      arbitrary: fc.oneof(
        fc.constantFrom('/suppressions', '/suppressions/import', '/dispatch/settings', '/dispatch/pause', '/dispatch/resume'),
        urlPart.map((x) => `/suppressions/${x}`),
        fc.constantFrom('/suppressions/%2B15550001111', '/suppressions/+966501234567'),
      ),
      weight: 2,
    },
    { arbitrary: id.map((x) => `/calls/${x}`), weight: 3 },
    {
      arbitrary: fc.oneof(
        fc.constantFrom('/calls/batch', '/event-endpoints', '/events'),
        id.map((x) => `/calls/${x}/cancel`),
        id.map((x) => `/calls/batch/${x}`),
        id.map((x) => `/calls/batch/${x}/cancel`),
        id.map((x) => `/event-endpoints/${x}`),
        id.map((x) => `/event-endpoints/${x}/rotate-secret`),
        fc.oneof(urlPart, fc.uuid().map((u) => `msg_${u}`)).map((x) => `/events/${x}`),
        fc.oneof(urlPart, fc.uuid().map((u) => `msg_${u}`)).map((x) => `/events/${x}/replay`),
      ),
      weight: 3,
    },
    { arbitrary: fc.tuple(fc.constantFrom(...ids), fc.integer({ min: 0, max: 3 })).map(([x, dial]) => callbackPath(x, dial || 1)), weight: 1 },
  )
  const batchBody = fc
    .record({ calls: fc.oneof(fc.array(callBody.map((b) => JSON.parse(b) as unknown), { maxLength: 5 }), jsonLeaf) }, { requiredKeys: [] })
    .map((b) => JSON.stringify(b))
  const endpointBody = fc
    .record(
      {
        url: fc.oneof(fc.constantFrom('http://127.0.0.1:9/hook', 'https://93.184.216.34/x', 'https://[::1]/x', 'javascript:alert(1)'), nastyString, jsonLeaf),
        eventTypes: fc.oneof(fc.array(fc.constantFrom('call.completed', 'call.nope', ''), { maxLength: 3 }), jsonLeaf),
        endpointId: fc.oneof(fc.uuid(), jsonLeaf),
      },
      { requiredKeys: [] },
    )
    .map((b) => JSON.stringify(b))
  const body = fc.oneof(callBody, nastyJsonText, batchBody, endpointBody)
  const plain = fc.record({
    method: fc.oneof(
      { arbitrary: fc.constantFrom('POST', 'PATCH'), weight: 6 },
      { arbitrary: fc.constant('GET'), weight: 3 },
      { arbitrary: fc.constantFrom('PUT', 'DELETE'), weight: 2 },
      { arbitrary: fc.constant('OPTIONS'), weight: 1 },
    ),
    path: fc.tuple(path, query).map(([p, q]) => (p.includes('?') ? `${p}${q.replace('?', '&')}` : `${p}${q}`)),
    headers: fc.record(
      {
        'content-type': contentType,
        'idempotency-key': headerValue,
        authorization: headerValue,
        'webhook-id': headerValue,
        'webhook-timestamp': headerValue,
        'webhook-signature': headerValue,
      },
      { requiredKeys: [] },
    ),
    body: fc.option(body, { nil: undefined }),
  })
  // Callbacks that pass authentication, at our URLs or not, with hostile bodies.
  const signedCallback = fc
    .tuple(fc.oneof(fc.constantFrom(...ids).map((x) => callbackPath(x)), path), fc.oneof(nastyJsonText, callbackBodies()))
    .map(([p, text]) => ({ method: 'POST', path: p, headers: signHeaders(text), body: text }))
  return fc.oneof({ arbitrary: plain, weight: 4 }, { arbitrary: signedCallback, weight: 1 })
}

function callbackBodies() {
  return fc
    .record(
      {
        callId: fc.oneof(fc.constant('prov-1'), nastyString, jsonLeaf),
        status: fc.oneof(fc.constantFrom('COMPLETED', 'FAILED', 'BUSY', 'NO_ANSWER', 'RINGING'), jsonLeaf),
        durationSec: fc.oneof(fc.integer(), fc.double(), jsonLeaf),
        completedAt: fc.oneof(fc.constantFrom('2025-01-01T00:00:00Z', '2024-02-30T00:00:00Z'), jsonLeaf),
      },
      { requiredKeys: [] },
    )
    .map((b) => JSON.stringify(b))
}

async function everything(h: Harness) {
  const [row] = await h.sql<{ n: number; last: string | null }[]>`SELECT count(*)::int AS n, max(id)::text AS last FROM callbacks`
  const [other] = await h.sql<{ batches: number; events: number; endpoints: string }[]>`
    SELECT (SELECT count(*)::int FROM call_batches) AS batches, (SELECT count(*)::int FROM events) AS events,
           (SELECT coalesce(string_agg(e::text, ',' ORDER BY id), '') FROM event_endpoints e) AS endpoints`
  return { ...(await tableSnapshot(h.sql)), callbacks: row!, ...other! }
}

t.test(`${RUNS} random and adversarial requests: never a 5xx, always problem+json, nothing written on a refusal`, async (t) => {
  const h = await createHarness(t)
  const ids = [
    (await insertCall(h)).id,
    (await insertCall(h, { status: 'IN_PROGRESS' })).id,
    (await insertCall(h, { status: 'IN_PROGRESS', dialed: false })).id,
    (await insertCall(h, { status: 'COMPLETED' })).id,
    (await insertCall(h, { status: 'FAILED' })).id,
    (await insertCall(h, { status: 'EXPIRED' })).id,
  ]
  const seen = new Map<number, number>()
  await fc.assert(
    fc.asyncProperty(requests(h, ids), async (req) => {
      const before = await everything(h)
      let init: RequestInit
      try {
        init = { method: req.method, headers: req.headers, ...(req.body !== undefined && !['GET', 'OPTIONS'].includes(req.method) ? { body: req.body } : {}) }
        new Request(`http://x${req.path}`, init) // a request no client could send is not ours to answer
      } catch {
        return true
      }
      const res = await h.app.request(req.path, init)
      const text = await res.text()
      seen.set(res.status, (seen.get(res.status) ?? 0) + 1)
      if (res.status >= 500) throw new Error(`${res.status} for ${req.method} ${req.path}: ${text.slice(0, 300)}`)
      if (res.status >= 400) {
        if (!/^application\/problem\+json/.test(res.headers.get('content-type') ?? '')) throw new Error(`${res.status} without problem+json`)
        const problem = JSON.parse(text) as { status?: number; code?: string; detail?: string }
        if (problem.status !== res.status || !problem.code || !problem.detail) throw new Error(`a problem body that does not say what is wrong: ${text}`)
        const after = await everything(h)
        // An authenticated callback at its call's URL is kept with its verdict even when refused.
        const kept = req.path.startsWith('/callbacks/') && after.callbacks.n === before.callbacks.n + 1
        if (JSON.stringify({ ...after, callbacks: kept ? before.callbacks : after.callbacks }) !== JSON.stringify(before)) {
          throw new Error(`${res.status} for ${req.method} ${req.path}, yet something was written`)
        }
      }
      return true
    }),
    { numRuns: RUNS, seed: process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : undefined },
  )
  t.comment(`answers: ${JSON.stringify(Object.fromEntries([...seen].sort()))}`)
  t.ok([...seen.keys()].some((s) => s >= 200 && s < 300), 'some requests were valid and succeeded')
  t.ok([...seen.keys()].filter((s) => s >= 400).length >= 5, 'and many kinds of refusal were met')
})
