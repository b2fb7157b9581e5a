import t from 'tap'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { silentLogger } from '../src/platform/log.ts'
import { metrics } from '../src/platform/metrics.ts'
import { webhookUrl } from '../src/provider/client.ts'
import { createVapiClient, createVapiWebhook, vapiCallName } from '../src/provider/vapi.ts'
import { FakeVapi, vapiSignature, type CreateBody, type CreateFault } from './support/fake-vapi.ts'
import { threeCallsThroughAll, throughFaults } from './support/never-twice.ts'
import { waitFor } from './support/processes.ts'
import { createHarness, readResponse, registerWorker, WEBHOOK_SECRET } from './support/harness.ts'
import { callbackPath, inFlightCall, POLICY } from './support/callbacks.ts'
import { callRow } from './support/inspect.ts'
import { newPhone } from './support/factory.ts'
import { claimCalls } from '../src/services/dispatch/claim.ts'
import { recordDialResult } from '../src/services/dispatch/record.ts'

// The Vapi adapter (src/provider/vapi.ts) against a fake of Vapi's API written from its
// published description (test/support/fake-vapi.ts): the create it sends, what each answer
// means, finding a dial's calls by our ids, the HMAC and Bearer credentials, and, end to end
// with a worker, that a create Vapi may have placed is never sent again: Vapi has no
// idempotency key.

const API_KEY = 'vapi-private-key'
const SECRET = 'vapi-hmac-secret'
const PHONE_NUMBER_ID = 'pn-0001'

function client(fake: { url: string }, timeoutMs = 1_000) {
  return createVapiClient({
    apiKey: API_KEY,
    phoneNumberId: PHONE_NUMBER_ID,
    baseUrl: fake.url,
    timeoutMs,
    publicBaseUrl: 'https://orchestrator.example',
    callbackSecret: WEBHOOK_SECRET,
    voicemail: 'NO_ANSWER',
  })
}

async function fakeVapi(t: { teardown(fn: () => Promise<void>): void }, options: Partial<ConstructorParameters<typeof FakeVapi>[0]> = {}) {
  const fake = new FakeVapi({ apiKey: API_KEY, secret: SECRET, durationMs: 60_000, ...options })
  await fake.start()
  t.teardown(() => fake.stop())
  return fake
}

const request = { callId: '0b7c2f5e-1111-4a2b-9c3d-000000000001', dial: 2, to: '+14155550123', scriptId: 'asst-42', metadata: { name: 'Ada', plan: 'gold' } }

t.test('a dial is the create Vapi documents: assistant, number, customer, our ids and our webhook URL', async (t) => {
  const fake = await fakeVapi(t)
  const result = await client(fake).dial(request)
  t.equal(result.kind, 'accepted')
  t.equal(fake.creates.length, 1)
  const [create] = fake.creates
  t.equal(create!.authorization, `Bearer ${API_KEY}`)
  t.same(create!.body, {
    assistantId: 'asst-42',
    phoneNumberId: PHONE_NUMBER_ID,
    customer: { number: '+14155550123' },
    name: `${request.callId}:2`,
    assistantOverrides: {
      variableValues: { name: 'Ada', plan: 'gold' },
      metadata: { orchestratorCallId: request.callId, orchestratorDial: 2 },
      server: { url: webhookUrl('https://orchestrator.example', request.callId, 2, WEBHOOK_SECRET) },
      serverMessages: ['status-update', 'end-of-call-report'],
    },
  })
  t.ok(create!.body.name!.length <= 40, 'the name fits Vapi\'s 40 characters')
  t.equal(result.kind === 'accepted' && result.providerCallId, [...fake.calls.keys()][0], "the provider's id is the 201's id")
})

t.test('what each answer to a create means', async (t) => {
  const cases: Array<[CreateFault, string, boolean | undefined]> = [
    ['502-before', 'unknown', undefined],
    ['502-after', 'unknown', undefined],
    ['drop-after', 'unknown', undefined],
    ['concurrency', 'not_placed', true],
    ['late', 'unknown', undefined],
  ]
  for (const [fault, kind, retry] of cases) {
    const fake = await fakeVapi(t, { fault: () => fault, lateMs: 1_500 })
    const result = await client(fake, 500).dial(request)
    t.equal(result.kind, kind, `${fault}: ${kind}`)
    if (retry !== undefined) t.equal(result.kind === 'not_placed' && result.retry, retry, `${fault}: worth sending again later`)
  }
  // A refusal of the request itself is final; a connection refused was never sent.
  const refusing = createServer((_req, res) => {
    res.writeHead(400, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ message: ['assistantId must be a UUID'], error: 'Bad Request', statusCode: 400 }))
  })
  await new Promise<void>((r) => refusing.listen(0, '127.0.0.1', r))
  t.teardown(() => new Promise<void>((r) => refusing.close(() => r())))
  const refused = await client({ url: `http://127.0.0.1:${(refusing.address() as AddressInfo).port}` }).dial(request)
  t.same([refused.kind, refused.kind === 'not_placed' && refused.retry], ['not_placed', false], 'a 400 about the request: final')
  // A port that was free a moment ago and has nobody listening now.
  const probe = createServer()
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r))
  const port = (probe.address() as AddressInfo).port
  await new Promise<void>((r) => probe.close(() => r()))
  const nowhere = await client({ url: `http://127.0.0.1:${port}` }).dial(request)
  t.same([nowhere.kind, nowhere.kind === 'not_placed' && nowhere.retry], ['not_placed', true], 'connection refused: not sent, send again later')
})

t.test("finding a dial's calls by our ids, and a look that cannot be sure", async (t) => {
  const fake = await fakeVapi(t)
  const vapi = client(fake)
  if (vapi.idempotent) throw new Error('Vapi has no idempotency key')
  const since = new Date(Date.now() - 60_000)
  t.same(await vapi.findDialed({ callId: request.callId, dial: 2, since }, undefined), { kind: 'none' }, 'nothing placed yet')
  await vapi.dial({ ...request, dial: 1 })
  await vapi.dial({ ...request, callId: '0b7c2f5e-1111-4a2b-9c3d-000000000002' })
  t.same(await vapi.findDialed({ callId: request.callId, dial: 2, since }), { kind: 'none' }, 'another dial of the call, and another call, are not this dial')
  const placed = await vapi.dial(request)
  t.same(await vapi.findDialed({ callId: request.callId, dial: 2, since }), { kind: 'found', providerCallId: placed.kind === 'accepted' ? placed.providerCallId : '' })
  const down = client({ url: 'http://127.0.0.1:9' })
  if (down.idempotent) throw new Error('unreachable')
  t.equal((await down.findDialed({ callId: request.callId, dial: 2, since })).kind, 'error', 'a look that fails says so')
  const lookup = await vapi.lookup(placed.kind === 'accepted' ? placed.providerCallId : '')
  t.same(lookup, { kind: 'live', status: 'in-progress' }, 'GET /call/{id} of a call under way')
})

t.test("Vapi's HMAC credential: hex HMAC-SHA256 of '{timestamp}.{body}', timestamp in seconds or milliseconds, within five minutes", async (t) => {
  const webhook = createVapiWebhook({ secret: SECRET, token: undefined, voicemail: 'NO_ANSWER', log: silentLogger })
  const body = JSON.stringify({ message: { type: 'status-update', status: 'ringing', call: { id: 'v-1' } } })
  const now = Date.now()
  const headers = (h: Record<string, string>) => (name: string) => h[name]
  const seconds = String(Math.floor(now / 1000))
  t.same(webhook.authenticate(headers({ 'x-signature': vapiSignature(SECRET, seconds, body), 'x-timestamp': seconds }), body, now), { ok: true, webhookId: null })
  const ms = String(now)
  t.same(webhook.authenticate(headers({ 'x-signature': vapiSignature(SECRET, ms, body), 'x-timestamp': ms }), body, now), { ok: true, webhookId: null }, 'milliseconds too')
  const refusals: Array<[string, Record<string, string>, RegExp]> = [
    ['another secret', { 'x-signature': vapiSignature('other', seconds, body), 'x-timestamp': seconds }, /no valid signature/],
    ['another body', { 'x-signature': vapiSignature(SECRET, seconds, `${body} `), 'x-timestamp': seconds }, /no valid signature/],
    ['six minutes old', { 'x-signature': vapiSignature(SECRET, String(Number(seconds) - 360), body), 'x-timestamp': String(Number(seconds) - 360) }, /5 minutes/],
    ['no timestamp', { 'x-signature': vapiSignature(SECRET, seconds, body) }, /missing/],
    ['not hex', { 'x-signature': 'zz', 'x-timestamp': seconds }, /no valid signature/],
  ]
  for (const [what, h, reason] of refusals) {
    const check = webhook.authenticate(headers(h), body, now)
    t.ok(!check.ok && check.code === 'invalid_signature' && reason.test(check.detail), `${what}: refused`)
  }
  const bearer = createVapiWebhook({ secret: undefined, token: 'tok-123', voicemail: 'NO_ANSWER', log: silentLogger })
  t.same(bearer.authenticate(headers({ authorization: 'Bearer tok-123' }), body, now), { ok: true, webhookId: null }, 'the Bearer credential')
  t.equal(bearer.authenticate(headers({ authorization: 'Bearer tok-124' }), body, now).ok, false)
  t.equal(createVapiWebhook({ secret: undefined, token: undefined, voicemail: 'NO_ANSWER', log: silentLogger }).configured, false, 'neither: not configured')
})

t.test('server messages: the report and a status-update "ended" end the call; the rest is progress', async (t) => {
  const webhook = createVapiWebhook({ secret: SECRET, token: undefined, voicemail: 'NO_ANSWER', log: silentLogger })
  const call = { id: 'v-9', startedAt: '2030-01-01T09:00:00.000Z', endedAt: '2030-01-01T09:00:42.400Z' }
  t.same(webhook.read({ message: { type: 'end-of-call-report', endedReason: 'customer-busy', call } }), {
    kind: 'final',
    report: { providerCallId: 'v-9', providerStatus: 'BUSY', endReason: 'customer-busy', durationSec: 42, completedAt: new Date('2030-01-01T09:00:42.400Z') },
  })
  const ended = webhook.read({ message: { type: 'status-update', status: 'ended', endedReason: 'assistant-ended-call', call } })
  t.equal(ended.kind === 'final' && ended.report.providerStatus, 'COMPLETED')
  t.same(webhook.read({ message: { type: 'status-update', status: 'ringing', call } }), { kind: 'progress', event: 'status-update ringing' })
  t.same(webhook.read({ message: { type: 'transcript', call } }), { kind: 'progress', event: 'transcript' })
  t.equal(webhook.read({ callId: 'x', status: 'COMPLETED' }).kind, 'invalid', "the generic contract's body is not Vapi's")
  t.equal(webhook.read({ message: { type: 'end-of-call-report', endedReason: 'voicemail', call: {} } }).kind, 'invalid', 'a report without a call id')
  const before = (await metrics.unknownEndReasons.get()).values.find((v) => v.labels.provider === 'vapi')?.value ?? 0
  const odd = webhook.read({ message: { type: 'end-of-call-report', endedReason: 'call.brand-new-reason', call } })
  t.equal(odd.kind === 'final' && odd.report.providerStatus, 'FAILED', 'a word Vapi does not publish: FAILED')
  const after = (await metrics.unknownEndReasons.get()).values.find((v) => v.labels.provider === 'vapi')?.value ?? 0
  t.equal(after - before, 1, 'and counted')
})

t.test('end to end with a worker: creates that may have placed the call are looked for, never sent twice', async (t) => {
  await throughFaults<CreateBody>(t, {
    webhook: createVapiWebhook({ secret: SECRET, token: undefined, voicemail: 'NO_ANSWER', log: silentLogger }),
    fake: (o) => fakeVapi(t, { ...o, statusUpdate: true }),
    indexOf: (body) => Number(body.assistantOverrides?.variableValues?.i),
    dialOf: (body) => body.name ?? '',
    client: (url, publicBaseUrl, timeoutMs) =>
      createVapiClient({ apiKey: API_KEY, phoneNumberId: PHONE_NUMBER_ID, baseUrl: url, timeoutMs, publicBaseUrl, callbackSecret: WEBHOOK_SECRET, voicemail: 'NO_ANSWER' }),
    reasons: [
      ['customer-ended-call', 'COMPLETED'],
      ['customer-busy', 'BUSY'],
      ['customer-did-not-answer', 'NO_ANSWER'],
      ['voicemail', 'NO_ANSWER'],
      ['pipeline-error-openai-llm-failed', 'FAILED'],
    ],
  })
})

t.test('bin/orchestrator all with PROVIDER=vapi: calls go to Vapi, its server messages end them', async (t) => {
  const fake = await fakeVapi(t, { durationMs: 50, endReason: () => 'assistant-ended-call' })
  const { api } = await threeCallsThroughAll(t, { PROVIDER: 'vapi', VAPI_BASE_URL: fake.url, VAPI_API_KEY: API_KEY, VAPI_PHONE_NUMBER_ID: PHONE_NUMBER_ID, VAPI_WEBHOOK_SECRET: SECRET }, 'asst-7')
  t.equal(fake.calls.size, 3, 'Vapi placed three calls')
  t.ok([...fake.calls.values()].every((c) => c.body.assistantId === 'asst-7' && c.body.assistantOverrides?.server?.url?.startsWith(`${api}/callbacks/call-status?`)), 'with our webhook URL')
  await waitFor('a report for each', async () => fake.webhookAnswers.length >= 3, 30_000)
  t.ok(fake.webhookAnswers.every((s) => s === 200), 'its server messages were taken')
})

t.test("a concurrency refusal at the end of a call: nothing rang, so a new dial after the backoff, not a failure", async (t) => {
  const webhook = createVapiWebhook({ secret: SECRET, token: undefined, voicemail: 'NO_ANSWER', log: silentLogger })
  const h = await createHarness(t, { webhook })
  const call = await inFlightCall(h, await registerWorker(h), newPhone(), 'v-refused')
  const deliver = async (endedReason: string, id: string, dial: number) => {
    const body = JSON.stringify({ message: { type: 'end-of-call-report', endedReason, call: { id } } })
    const at = String(Math.floor(Date.now() / 1000))
    return readResponse(
      await h.app.request(callbackPath(call.id, dial), { method: 'POST', headers: { 'content-type': 'application/json', 'x-signature': vapiSignature(SECRET, at, body), 'x-timestamp': at }, body }),
    )
  }
  const res = await deliver('call.start.error-subscription-concurrency-limit-reached', 'v-refused', 1)
  t.same([res.status, res.body], [200, { verdict: 'applied', callId: call.id, status: 'PENDING' }], 'the call waits for a new dial')
  const row = await callRow(h, call.id)
  t.ok(row.next_attempt_at && row.next_attempt_at.getTime() > Date.now(), 'after the backoff')
  t.match(row.last_error, /placed nothing \(call\.start\.error-subscription-concurrency-limit-reached\)/)
  const dials = await h.sql<{ dial: number; outcome: string }[]>`SELECT dial, outcome FROM call_dials WHERE call_id = ${call.id}`
  t.same(dials, [{ dial: 1, outcome: 'refused' }], 'the dial that placed nothing is refused, not FAILED')
  // The next dial, placed this time, ends as Vapi says.
  await h.sql`UPDATE calls SET next_attempt_at = now() WHERE id = ${call.id}`
  await h.sql`UPDATE pgboss.job SET start_after = now() WHERE id = ${row.job_id}`
  const { claimed } = await claimCalls(h.sql, h.queue, POLICY, await registerWorker(h), 30)
  t.same(claimed.map((c) => [c.id, c.dial]), [[call.id, 2]], 'dialed again, as dial 2')
  await recordDialResult(h.sql, h.queue, POLICY, claimed[0]!, { kind: 'accepted', providerCallId: 'v-placed' })
  const ended = await deliver('customer-ended-call', 'v-placed', 2)
  t.same(ended.body, { verdict: 'applied', callId: call.id, status: 'COMPLETED' })
})

t.test('a server message that tells no end is acknowledged and keeps nothing; a malformed one is still refused', async (t) => {
  const webhook = createVapiWebhook({ secret: SECRET, token: undefined, voicemail: 'NO_ANSWER', log: silentLogger })
  const h = await createHarness(t, { webhook })
  const call = await inFlightCall(h, await registerWorker(h), newPhone(), 'v-progress')
  const send = async (body: string) => {
    const at = String(Math.floor(Date.now() / 1000))
    return readResponse(await h.app.request(callbackPath(call.id, 1), { method: 'POST', headers: { 'content-type': 'application/json', 'x-signature': vapiSignature(SECRET, at, body), 'x-timestamp': at }, body }))
  }
  const ringing = await send(JSON.stringify({ message: { type: 'status-update', status: 'ringing', call: { id: 'v-progress' } } }))
  t.same([ringing.status, ringing.body], [200, { verdict: 'progress', callId: call.id }])
  t.same(await h.sql`SELECT 1 FROM callbacks`, [], 'nothing kept')
  t.equal((await callRow(h, call.id)).status, 'IN_PROGRESS')
  const broken = await send('{"message":')
  t.same([broken.status, broken.body.code], [400, 'malformed_json'])
  const noCall = await send(JSON.stringify({ message: { type: 'end-of-call-report', endedReason: 'customer-busy' } }))
  t.same([noCall.status, noCall.body.code], [400, 'validation_failed'])
  t.same((await h.sql<{ verdict: string }[]>`SELECT verdict FROM callbacks ORDER BY id`).map((r) => r.verdict), ['rejected', 'rejected'], 'those two are kept, as refused')
})
