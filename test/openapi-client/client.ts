// An integrator's script, written against the client generated from the served /openapi.json
// (schema.d.ts, made by openapi-typescript in test/openapi-client.test.ts) and type-checked
// strictly with TypeScript 5 before it runs. It uses only what the description promises.
import createClient from 'openapi-fetch'
import type { components, paths } from './schema.d.ts'

declare const process: { env: Record<string, string | undefined> }

type Problem = components['schemas']['Problem']
// `code` is an enum, not a free string: a branch on a code that does not exist fails to compile.
type IsEnum<T> = string extends T ? false : true
const codeIsAnEnum: IsEnum<Problem['code']> = true
const pendingCode: Problem['code'] = 'call_not_pending'

const baseUrl = process.env.BASE_URL
if (!baseUrl) throw new Error('BASE_URL is not set')
const client = createClient<paths>({ baseUrl })
const seen: Record<string, unknown> = { codeIsAnEnum }

function must<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new Error(`${what}: no data`)
  return value
}

// Create, get, list with an integer limit.
const created = await client.POST('/calls', { body: { to: '+966501234567', scriptId: 'welcomeFlow', metadata: { customerId: 'c-42' } } })
const call = must(created.data, 'POST /calls')
seen.created = created.response.status
const got = await client.GET('/calls/{id}', { params: { path: { id: call.id } } })
seen.got = must(got.data, 'GET /calls/{id}').status
const page = await client.GET('/calls', { params: { query: { limit: 5 } } })
seen.listed = must(page.data, 'GET /calls').data.length

// Cancel twice: the second is a 409 whose problem names the call's status.
const cancelled = await client.POST('/calls/{id}/cancel', { params: { path: { id: call.id } } })
seen.cancelled = must(cancelled.data, 'cancel').status
const again = await client.POST('/calls/{id}/cancel', { params: { path: { id: call.id } } })
if (!again.error) throw new Error('the second cancel was not refused')
const problem: Problem = again.error
seen.again = { status: again.response.status, code: problem.code, callStatus: problem.callStatus, pending: problem.code === pendingCode }

// A batch, one item refused.
const batch = await client.POST('/calls/batch', {
  body: { calls: [{ to: '+966501234568', scriptId: 'welcomeFlow' }, { to: 'not a number', scriptId: 'welcomeFlow' }] },
})
const created2 = must(batch.data, 'POST /calls/batch')
seen.batch = { created: created2.created, rejected: created2.rejected }

// The do-not-call list.
const added = await client.PUT('/suppressions/{phone}', { params: { path: { phone: '+966501234569' } }, body: { reason: 'asked' } })
seen.suppressed = added.response.status
const listed = await client.GET('/suppressions', { params: { query: { limit: 5 } } })
seen.suppressions = must(listed.data, 'GET /suppressions').data.map((s) => s.phone)

console.log(JSON.stringify(seen))
