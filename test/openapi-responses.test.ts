import { Ajv2020 } from 'ajv/dist/2020.js'
import addFormatsModule from 'ajv-formats'
import t, { type Test } from 'tap'
import { buildOpenApiDocument, openApiPath } from '../src/http/openapi/document.ts'
import { insertCall, newPhone } from './support/factory.ts'
import { createHarness, type Harness } from './support/harness.ts'

// Real answers of the API checked against the description: status documented, media type
// documented, body valid by the schema (strict objects, so an undocumented field fails), and
// the headers the description promises present. The response schemas are written by hand
// (src/http/openapi/responses.ts); this is what keeps them true.

const addFormats = addFormatsModule as unknown as (ajv: Ajv2020) => Ajv2020
const ID = 'https://call-orchestrator.invalid/openapi.json'
const document = buildOpenApiDocument()
// Not strict: the document's own members (openapi, paths, …) are not JSON Schema keywords;
// only the schemas inside it are compiled, found by JSON pointer.
const ajv = addFormats(new Ajv2020({ strict: false, allErrors: true }))
ajv.addSchema({ ...document, $id: ID })

const pointer = (...parts: string[]) => parts.map((p) => p.replaceAll('~', '~0').replaceAll('/', '~1')).join('/')

type Res = Awaited<ReturnType<Harness['call']>>

/** Checks `res`, the answer to `method` on the path `template` (as the description writes it). */
function conforms(t: Test, method: string, template: string, res: Res): void {
  const operation = (document.paths as Record<string, any>)[template]?.[method.toLowerCase()]
  t.ok(operation, `${method} ${template} is described`)
  const response = operation?.responses?.[String(res.status)]
  t.ok(response, `${method} ${template}: ${res.status} is documented`)
  if (!response) return t.comment(JSON.stringify(res.body))
  for (const header of Object.keys(response.headers ?? {})) {
    if (header === 'Idempotent-Replayed' || header === 'Retry-After' || header === 'WWW-Authenticate') continue
    t.ok(res.headers.has(header), `${method} ${template} ${res.status}: header ${header}`)
  }
  if (!response.content) {
    t.equal(res.body, '', `${method} ${template} ${res.status}: no body`)
    return
  }
  const mediaType = (res.headers.get('content-type') ?? '').split(';')[0]!.trim()
  t.ok(response.content[mediaType], `${method} ${template} ${res.status}: ${mediaType} is documented`)
  if (!response.content[mediaType]?.schema) return
  const validate = ajv.getSchema(`${ID}#/${pointer('paths', template, method.toLowerCase(), 'responses', String(res.status), 'content', mediaType, 'schema')}`)!
  const valid = validate(res.body)
  t.ok(valid, `${method} ${template} ${res.status}: body matches the schema`)
  if (!valid) t.comment(JSON.stringify({ errors: validate.errors, body: res.body }, null, 2))
}

t.test('calls: create, replay, read, list, change, cancel, and problems', async (t) => {
  const h = await createHarness(t)
  const body = { to: newPhone(), scriptId: 'welcomeFlow', metadata: { n: 1 }, callingWindow: { days: ['mon', 'tue'], start: '09:00', end: '17:00', timezone: 'UTC' } }
  const created = await h.call('POST', '/calls', body, { 'idempotency-key': 'k-1' })
  t.equal(created.status, 201)
  conforms(t, 'POST', '/calls', created)
  const replayed = await h.call('POST', '/calls', body, { 'idempotency-key': 'k-1' })
  t.equal(replayed.status, 200)
  conforms(t, 'POST', '/calls', replayed)
  conforms(t, 'POST', '/calls', await h.call('POST', '/calls', { ...body, scriptId: 'other' }, { 'idempotency-key': 'k-1' }))
  conforms(t, 'POST', '/calls', await h.call('POST', '/calls', { to: 'nope' }))
  conforms(t, 'POST', '/calls', await h.call('POST', '/calls', '{', { 'content-type': 'application/json' }))
  conforms(t, 'POST', '/calls', await h.call('POST', '/calls', 'x', { 'content-type': 'text/plain' }))

  const id = created.body.id
  conforms(t, 'GET', '/calls/{id}', await h.call('GET', `/calls/${id}`))
  conforms(t, 'GET', '/calls/{id}', await h.call('GET', '/calls/00000000-0000-4000-8000-000000000000'))
  await h.call('POST', '/calls', { to: newPhone(), scriptId: 's' })
  const page = await h.call('GET', '/calls?limit=1')
  t.type(page.body.nextCursor, 'string')
  conforms(t, 'GET', '/calls', page)
  conforms(t, 'GET', '/calls', await h.call('GET', `/calls?cursor=${page.body.nextCursor}`))
  conforms(t, 'PATCH', '/calls/{id}', await h.call('PATCH', `/calls/${id}`, { metadata: { n: 2 }, notBefore: null }))
  const cancelled = await h.call('POST', `/calls/${id}/cancel`)
  t.equal(cancelled.body.status, 'CANCELLED')
  conforms(t, 'POST', '/calls/{id}/cancel', cancelled)
  conforms(t, 'POST', '/calls/{id}/cancel', await h.call('POST', `/calls/${id}/cancel`))
})

t.test('batches: create with a refused item, read, cancel', async (t) => {
  const h = await createHarness(t)
  const created = await h.call('POST', '/calls/batch', { calls: [{ to: newPhone(), scriptId: 's', idempotencyKey: 'a' }, { to: 'bad', scriptId: 's' }] }, { 'idempotency-key': 'b-1' })
  t.equal(created.status, 201)
  t.equal(created.body.rejected, 1)
  conforms(t, 'POST', '/calls/batch', created)
  conforms(t, 'GET', '/calls/batch/{id}', await h.call('GET', `/calls/batch/${created.body.batchId}`))
  conforms(t, 'POST', '/calls/batch/{id}/cancel', await h.call('POST', `/calls/batch/${created.body.batchId}/cancel`))
  conforms(t, 'GET', '/calls/batch/{id}', await h.call('GET', `/calls/batch/${created.body.batchId}`))
  conforms(t, 'GET', '/calls/batch/{id}', await h.call('GET', '/calls/batch/00000000-0000-4000-8000-000000000000'))
})

t.test('operations: health, readiness, metrics as JSON and as Prometheus text', async (t) => {
  const h = await createHarness(t)
  await h.call('POST', '/calls', { to: newPhone(), scriptId: 's' })
  conforms(t, 'GET', '/healthz', await h.call('GET', '/healthz'))
  conforms(t, 'GET', '/readyz', await h.call('GET', '/readyz'))
  conforms(t, 'GET', '/metrics', await h.call('GET', '/metrics'))
  conforms(t, 'GET', '/metrics', await h.call('GET', '/metrics?format=prometheus'))
  conforms(t, 'GET', '/metrics', await h.call('GET', '/metrics?format=xml'))
})

t.test('without a token where tokens are set: 401 as described', async (t) => {
  const h = await createHarness(t, { apiTokens: ['secret-token'] })
  conforms(t, 'GET', '/calls', await h.call('GET', '/calls'))
  conforms(t, 'GET', '/dispatch/settings', await h.call('GET', '/dispatch/settings'))
})

t.test('the do-not-call list and dispatch settings', async (t) => {
  const h = await createHarness(t)
  const phone = newPhone()
  await h.call('POST', '/calls', { to: phone, scriptId: 's' })
  const added = await h.call('PUT', `/suppressions/${encodeURIComponent(phone)}`, { reason: 'asked' })
  t.equal(added.status, 201)
  conforms(t, 'PUT', '/suppressions/{phone}', added)
  conforms(t, 'PUT', '/suppressions/{phone}', await h.call('PUT', `/suppressions/${encodeURIComponent(phone)}`))
  conforms(t, 'GET', '/suppressions/{phone}', await h.call('GET', `/suppressions/${encodeURIComponent(phone)}`))
  conforms(t, 'POST', '/suppressions/import', await h.call('POST', '/suppressions/import', { entries: [{ phone: newPhone() }, { phone: newPhone(), reason: 'r' }], source: 'crm' }))
  const page = await h.call('GET', '/suppressions?limit=1')
  conforms(t, 'GET', '/suppressions', page)
  conforms(t, 'DELETE', '/suppressions/{phone}', await h.call('DELETE', `/suppressions/${encodeURIComponent(phone)}`))
  conforms(t, 'GET', '/suppressions/{phone}', await h.call('GET', `/suppressions/${encodeURIComponent(phone)}`))

  conforms(t, 'GET', '/dispatch/settings', await h.call('GET', '/dispatch/settings'))
  conforms(t, 'PUT', '/dispatch/settings', await h.call('PUT', '/dispatch/settings', { maxConcurrentCalls: 5 }))
  conforms(t, 'PUT', '/dispatch/settings', await h.call('PUT', '/dispatch/settings', { maxConcurrentCalls: 0 }))
  conforms(t, 'POST', '/dispatch/pause', await h.call('POST', '/dispatch/pause'))
  conforms(t, 'POST', '/dispatch/resume', await h.call('POST', '/dispatch/resume'))
})

t.test('event endpoints and the event log', async (t) => {
  const h = await createHarness(t)
  const endpoint = await h.call('POST', '/event-endpoints', { url: 'http://127.0.0.1:9/hooks', eventTypes: ['call.cancelled'] })
  t.equal(endpoint.status, 201)
  conforms(t, 'POST', '/event-endpoints', endpoint)
  conforms(t, 'GET', '/event-endpoints', await h.call('GET', '/event-endpoints'))
  conforms(t, 'POST', '/event-endpoints/{id}/rotate-secret', await h.call('POST', `/event-endpoints/${endpoint.body.id}/rotate-secret`))

  const call = await h.call('POST', '/calls', { to: newPhone(), scriptId: 's' })
  await h.call('POST', `/calls/${call.body.id}/cancel`)
  const events = await h.call('GET', `/events?callId=${call.body.id}`)
  t.equal(events.body.data.length, 1, 'call.cancelled was recorded')
  conforms(t, 'GET', '/events', events)
  const eventId = events.body.data[0].id
  conforms(t, 'GET', '/events/{id}', await h.call('GET', `/events/${eventId}`))
  conforms(t, 'POST', '/events/{id}/replay', await h.call('POST', `/events/${eventId}/replay`))
  conforms(t, 'GET', '/events/{id}', await h.call('GET', '/events/msg_00000000-0000-4000-8000-000000000000'))
  conforms(t, 'DELETE', '/event-endpoints/{id}', await h.call('DELETE', `/event-endpoints/${endpoint.body.id}`))
})

t.test('the description’s own routes', async (t) => {
  const h = await createHarness(t)
  conforms(t, 'GET', '/openapi.json', await h.call('GET', '/openapi.json'))
  conforms(t, 'GET', '/docs', await h.call('GET', '/docs'))
  conforms(t, 'GET', '/docs/assets/{file}', await h.call('GET', '/docs/assets/nothing.js'))
  conforms(t, 'GET', '/docs/assets/{file}', await h.call('GET', '/docs/assets/swagger-ui.css'))
  conforms(t, 'GET', '/docs/assets/{file}', await h.call('GET', '/docs/assets/swagger-ui-bundle.js'))
  t.equal(openApiPath('/calls/:id/cancel'), '/calls/{id}/cancel')
})

t.test('the status page’s JSON, with a call in flight, one waiting and one failed', async (t) => {
  const h = await createHarness(t)
  await insertCall(h, { status: 'IN_PROGRESS' })
  await insertCall(h, { status: 'PENDING' })
  await insertCall(h, { status: 'FAILED' })
  const status = await h.call('GET', '/status.json')
  t.equal(status.body.inFlight.length, 1)
  t.equal(status.body.recentFailures.length, 1)
  t.ok(status.body.oldestWaiting)
  conforms(t, 'GET', '/status.json', status)
  conforms(t, 'GET', '/', await h.call('GET', '/', undefined, { accept: 'text/html' }))
})
