import { Validator } from '@seriousme/openapi-schema-validator'
import t from 'tap'
import { ALLOWED } from '../src/http/app.ts'
import { buildOpenApiDocument, openApiPath, problemsOf } from '../src/http/openapi/document.ts'
import { needsToken, OPERATIONS } from '../src/http/openapi/operations.ts'
import { createHarness } from './support/harness.ts'

// The description is a valid OpenAPI 3.1 document, and it lists exactly the routes the app
// serves: a route added without a description, or described and not served, fails here.

const METHODS = ['get', 'post', 'put', 'patch', 'delete'] as const

t.test('the description is a valid OpenAPI 3.1 document', async (t) => {
  const document = buildOpenApiDocument()
  const validator = new Validator()
  const result = await validator.validate(structuredClone(document))
  t.ok(result.valid, 'valid by the OpenAPI 3.1 schema')
  if (!result.valid) t.comment(JSON.stringify(result.errors, null, 2))
  t.equal(validator.version, '3.1')
  t.match(document.info.version, /^\d+\.\d+\.\d+/, 'info.version is the package version')
  t.same(document.servers.map((server) => server.url), ['/'], 'one server, relative: wherever the description is served')
  t.same(Object.keys(document.components.securitySchemes).sort(), ['bearerAuth', 'callbackApiKey', 'callbackBearer', 'webhookSignature'])
  const paths = document.paths as Record<string, any>
  t.same(paths['/callbacks/call-status'].post.security, [{ webhookSignature: [] }, { callbackApiKey: [] }, { callbackBearer: [] }])
  t.same(paths['/calls'].post.security, [{ bearerAuth: [] }])
  t.equal(new Set(OPERATIONS.map((op) => op.id)).size, OPERATIONS.length, 'operation ids are unique')
})

t.test('it describes exactly the routes the app serves, both ways', async (t) => {
  const h = await createHarness(t)
  // app.all() is the 405 and OPTIONS answer of each path and app.use() the authentication:
  // both are registered as "ALL"; every real route has its own method.
  const served = new Set(h.app.routes.filter((route) => route.method !== 'ALL').map((route) => `${route.method} ${openApiPath(route.path)}`))
  const document = buildOpenApiDocument()
  const described = new Set(
    Object.entries(document.paths).flatMap(([path, item]) =>
      METHODS.filter((m) => (item as Record<string, { operationId?: string }>)[m]?.operationId).map((m) => `${m.toUpperCase()} ${path}`),
    ),
  )
  t.strictSame([...served].filter((r) => !described.has(r)).sort(), [], 'every route served is described')
  t.strictSame([...described].filter((r) => !served.has(r)).sort(), [], 'every route described is served')
  t.ok(served.size > 20, `${served.size} routes`)

  // The 405 table names the same methods, so Allow tells the truth.
  const allowed = new Set(Object.entries(ALLOWED).flatMap(([path, methods]) => methods.map((m) => `${m} ${openApiPath(path)}`)))
  t.strictSame([...allowed].sort(), [...described].sort(), 'ALLOWED lists the described routes')
})

t.test('every method a path does not have is described as its 405 answer', async (t) => {
  const document = buildOpenApiDocument()
  const h = await createHarness(t)
  for (const [path, item] of Object.entries(document.paths as Record<string, Record<string, any>>)) {
    const allow = METHODS.filter((m) => item[m]?.operationId).map((m) => m.toUpperCase())
    for (const method of METHODS.filter((m) => !item[m]?.operationId)) {
      t.same(item[method]?.responses, { 405: { $ref: '#/components/responses/MethodNotAllowed' } }, `${method.toUpperCase()} ${path}: 405`)
    }
    // And the app answers so: one path with its parameters filled in, one method it lacks.
    const missing = METHODS.find((m) => !item[m]?.operationId)
    if (!missing || path.startsWith('/docs/assets')) continue
    const concrete = path.replace(/\{[^}]+\}/g, (p) => (p === '{phone}' ? '%2B966501234567' : '3f0e4c1a-7b2d-4e8f-9a61-0c5d2b7e8f10'))
    const res = await h.app.request(concrete, { method: missing.toUpperCase() })
    t.equal(res.status, 405, `${missing.toUpperCase()} ${concrete} is a 405`)
    t.equal(res.headers.get('allow'), allow.join(', '), `${path}: Allow names the described methods`)
  }
})

t.test('every problem an operation names has an example, and token routes answer 401', async (t) => {
  const document = buildOpenApiDocument()
  for (const op of OPERATIONS) {
    const responses = (document.paths as Record<string, any>)[openApiPath(op.path)][op.method].responses as Record<string, any>
    for (const [status, code] of problemsOf(op)) {
      const example = responses[String(status)]?.content?.['application/problem+json']?.examples?.[code]?.value
      t.equal(example?.code, code, `${op.id}: ${status} ${code}`)
      t.equal(example?.status, status, `${op.id}: ${code} is a ${status}`)
    }
    const unauthorized = responses['401']?.content?.['application/problem+json']?.examples?.unauthorized
    t.equal(needsToken(op), !!unauthorized, `${op.id}: 401 unauthorized documented iff it needs a token`)
    if (op.access === 'public') t.notOk('401' in responses, `${op.id}: public, no 401`)
  }
})

t.test('GET /openapi.json is served without a token, as JSON', async (t) => {
  const h = await createHarness(t, { apiTokens: ['secret-token'] })
  const res = await h.call('GET', '/openapi.json')
  t.equal(res.status, 200)
  t.match(res.headers.get('content-type'), /^application\/json/)
  t.equal(res.body.openapi, '3.1.0')
  t.strictSame(res.body, JSON.parse(JSON.stringify(buildOpenApiDocument())))
  t.equal((await h.call('GET', '/calls')).status, 401, 'while the API itself still needs one')
  const post = await h.call('POST', '/openapi.json', {})
  t.equal(post.status, 405)
  t.equal(post.headers.get('allow'), 'GET')
})

t.test('GET /docs is a page whose scripts and styles this server serves', async (t) => {
  const h = await createHarness(t, { apiTokens: ['secret-token'] })
  const page = await h.call('GET', '/docs')
  t.equal(page.status, 200)
  t.match(page.headers.get('content-type'), /^text\/html/)
  t.match(page.headers.get('content-security-policy'), /frame-ancestors 'none'/, 'never framed by another site (its Authorize button takes a token)')
  t.equal(page.headers.get('x-frame-options'), 'DENY')
  const scripts = [...(page.body as string).matchAll(/<script src="([^"]+)"/g)].map((m) => m[1]!)
  const styles = [...(page.body as string).matchAll(/<link rel="stylesheet" href="([^"]+)"/g)].map((m) => m[1]!)
  t.ok(scripts.length >= 1, 'it loads a script')
  t.notOk(/https?:\/\//.test(page.body), 'nothing from another host')
  t.match(page.body, /url: 'openapi\.json'/, 'it shows this server’s description')
  for (const src of scripts) {
    const res = await h.app.request(new URL(src, 'http://localhost/docs').pathname)
    t.equal(res.status, 200, `${src} is served`)
    t.match(res.headers.get('content-type'), /^text\/javascript/, `${src} is JavaScript`)
    const text = await res.text()
    t.ok(text.includes('SwaggerUIBundle'), `${src} defines SwaggerUIBundle`)
  }
  for (const href of styles) {
    const res = await h.app.request(new URL(href, 'http://localhost/docs').pathname)
    t.equal(res.status, 200, `${href} is served`)
    t.match(res.headers.get('content-type'), /^text\/css/)
  }
  const missing = await h.call('GET', '/docs/assets/index.html')
  t.equal(missing.status, 404, 'only the page’s own files are served from the package')
  t.equal(missing.body.code, 'route_not_found')
  t.equal((await h.call('GET', '/docs/assets/..%2Fpackage.json')).status, 404)
})

t.test('the route table decides access: every admin and read route, as it says', async (t) => {
  const admin = 'a'.repeat(32)
  const reader = 'r'.repeat(32)
  const h = await createHarness(t, { apiTokens: [admin], readTokens: [reader] })
  const concrete = (path: string) => path.replace(/:(\w+)/g, (_, name) => (name === 'phone' ? '%2B966501234567' : name === 'file' ? 'x.js' : '3f0e4c1a-7b2d-4e8f-9a61-0c5d2b7e8f10'))
  for (const op of OPERATIONS.filter((o) => o.access === 'admin' || o.access === 'read' || o.access === 'console')) {
    const path = concrete(op.path)
    const send = (token?: string) =>
      h.app.request(path, {
        method: op.method.toUpperCase(),
        headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
        ...(op.method === 'get' ? {} : { body: '{}' }),
      })
    t.equal((await send()).status, 401, `${op.method.toUpperCase()} ${op.path}: no token, 401`)
    const read = await send(reader)
    if (op.access === 'admin' || op.access === 'console') {
      t.equal(read.status, 403, `${op.method.toUpperCase()} ${op.path}: a read token may not`)
      t.equal(((await read.json()) as { code: string }).code, 'read_only_token')
    } else {
      t.notOk([401, 403].includes(read.status), `${op.method.toUpperCase()} ${op.path}: a read token may (${read.status})`)
    }
    t.notOk([401, 403].includes((await send(admin)).status), `${op.method.toUpperCase()} ${op.path}: an admin token may`)
  }
  // Public routes want nothing.
  for (const op of OPERATIONS.filter((o) => o.access === 'public' && o.method === 'get')) {
    t.not((await h.app.request(concrete(op.path))).status, 401, `GET ${op.path} is public`)
  }
})

t.test('every instant is described as format: date-time', async (t) => {
  const instants: string[] = []
  const undescribed: string[] = []
  const isDateTime = (schema: any): boolean => schema?.format === 'date-time' || (schema?.anyOf ?? []).some(isDateTime)
  const walk = (node: unknown, where: string) => {
    if (!node || typeof node !== 'object') return
    const properties = (node as { properties?: Record<string, unknown> }).properties
    for (const [name, schema] of Object.entries(properties ?? {})) {
      if (!/At$|^at$|^notBefore$|^timestamp$/.test(name)) continue
      instants.push(`${where}.${name}`)
      if (!isDateTime(schema)) undescribed.push(`${where}.${name}`)
    }
    for (const [key, value] of Object.entries(node)) walk(value, `${where}/${key}`)
  }
  walk(buildOpenApiDocument(), '')
  t.ok(instants.length > 30, `${instants.length} instants`)
  t.same(undescribed, [])
  // Query limits are integers, as a client sends them.
  const document = buildOpenApiDocument() as { paths: Record<string, any> }
  for (const path of ['/calls', '/suppressions', '/events']) {
    const limit = document.paths[path].get.parameters.find((p: { name: string }) => p.name === 'limit')
    t.same([limit.schema.type, limit.schema.minimum, limit.schema.maximum, limit.schema.default], ['integer', 1, 100, 20], `${path}: limit is an integer`)
  }
})
