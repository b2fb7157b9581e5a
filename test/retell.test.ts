import t from 'tap'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createLogger, silentLogger } from '../src/platform/log.ts'
import { webhookUrl } from '../src/provider/client.ts'
import { createRetellClient, createRetellWebhook, verifyRetellSignature } from '../src/provider/retell.ts'
import { retellEnd, vapiEnd } from '../src/provider/end-reasons.ts'
import { FakeRetell, retellSignature, type RetellCreateBody } from './support/fake-retell.ts'
import type { FakeOptions } from './support/fake-voice-ai.ts'
import { threeCallsThroughAll, throughFaults } from './support/never-twice.ts'
import { WEBHOOK_SECRET } from './support/harness.ts'
import { waitFor } from './support/processes.ts'

// The Retell adapter (src/provider/retell.ts) against a fake of Retell's API written from its
// TypeScript SDK (test/support/fake-retell.ts), and the end reasons of both providers.

const API_KEY = 'retell-key-with-webhook-badge'
const FROM = '+14155550100'

function client(url: string, timeoutMs = 1_000, publicBaseUrl = 'https://orchestrator.example') {
  return createRetellClient({ apiKey: API_KEY, fromNumber: FROM, baseUrl: url, timeoutMs, publicBaseUrl, callbackSecret: WEBHOOK_SECRET, voicemail: 'NO_ANSWER' })
}

async function fakeRetell(t: { teardown(fn: () => Promise<void>): void }, options: Partial<FakeOptions<RetellCreateBody>> & { concurrencyLimit?: number } = {}) {
  const fake = new FakeRetell({ apiKey: API_KEY, durationMs: 60_000, ...options })
  await fake.start()
  t.teardown(() => fake.stop())
  return fake
}

const request = { callId: '5d1e7c2a-2222-4b3c-8d4e-000000000001', dial: 1, to: '+14155550188', scriptId: 'agent_42', metadata: { name: 'Ada', visits: 3 } }

t.test('a dial is the create-phone-call Retell documents: numbers, agent, dynamic variables as strings, our ids, our webhook URL', async (t) => {
  const fake = await fakeRetell(t)
  const result = await client(fake.url).dial(request)
  t.equal(result.kind, 'accepted')
  t.equal(fake.creates[0]!.authorization, `Bearer ${API_KEY}`)
  t.same(fake.creates[0]!.body, {
    from_number: FROM,
    to_number: '+14155550188',
    override_agent_id: 'agent_42',
    retell_llm_dynamic_variables: { name: 'Ada', visits: '3' },
    metadata: { orchestrator_call_id: request.callId, orchestrator_dial: '1' },
    agent_override: { agent: { webhook_url: webhookUrl('https://orchestrator.example', request.callId, 1, WEBHOOK_SECRET) } },
  })
  t.equal(result.kind === 'accepted' && result.providerCallId, [...fake.calls.keys()][0], "the provider's id is the 201's call_id")
})

t.test('what each answer to a create means', async (t) => {
  for (const [fault, kind] of [['502-after', 'unknown'], ['drop-after', 'unknown'], ['502-before', 'unknown'], ['concurrency', 'not_placed']] as const) {
    const fake = await fakeRetell(t, { fault: () => fault })
    const result = await client(fake.url, 500).dial(request)
    t.equal(result.kind, kind, `${fault}: ${kind}`)
    if (fault === 'concurrency') t.equal(result.kind === 'not_placed' && result.retry, true, '429: sent again after the backoff')
  }
  for (const [status, message] of [[402, 'Trial has ended, please add payment method.'], [422, 'Cannot find requested asset under given api key.'], [400, 'Invalid request format']] as const) {
    const server = createServer((_req, res) => {
      res.writeHead(status, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ status: 'error', message }))
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    const result = await client(`http://127.0.0.1:${(server.address() as AddressInfo).port}`).dial(request)
    await new Promise<void>((r) => server.close(() => r()))
    t.same([result.kind, result.kind === 'not_placed' && result.retry], ['not_placed', false], `${status}: refused, final`)
  }
})

t.test("finding a dial's calls: list-calls filtered on our metadata", async (t) => {
  const fake = await fakeRetell(t)
  const retell = client(fake.url)
  if (retell.idempotent) throw new Error('Retell has no idempotency key')
  const since = new Date(Date.now() - 60_000)
  t.same(await retell.findDialed({ callId: request.callId, dial: 1, since }), { kind: 'none' })
  await retell.dial({ ...request, dial: 2 })
  const placed = await retell.dial(request)
  t.same(await retell.findDialed({ callId: request.callId, dial: 1, since }), { kind: 'found', providerCallId: placed.kind === 'accepted' ? placed.providerCallId : '' })
  t.same(fake.listFilters.at(-1), {
    metadata: [
      { key: 'orchestrator_call_id', type: 'string', op: 'eq', value: request.callId },
      { key: 'orchestrator_dial', type: 'string', op: 'eq', value: '1' },
    ],
  }, 'the v3 metadata filter')
  const id = placed.kind === 'accepted' ? placed.providerCallId : ''
  t.same(await retell.lookup(id), { kind: 'live', status: 'ongoing' }, 'get-call of a call under way')
})

t.test("Retell's signature: v=<ms>,d=<hex HMAC-SHA256 of body + ms>, keyed with the API key, within five minutes", async (t) => {
  // The SDK's own test vector (its webhook-auth test).
  const at = 1_700_000_000_000
  const vector = 'v=1700000000000,d=07024cabe7dd8f6d1c6e4a8324ca92c812e6ad4a7ee506c04f7e462e3321823e'
  t.equal(verifyRetellSignature(vector, '{"event":"call_ended"}', 'test-api-key', at), true, "the SDK's test vector")
  t.equal(retellSignature('test-api-key', '{"event":"call_ended"}', at), vector, "and the fake's signatures are the SDK's")
  t.match(verifyRetellSignature(vector, '{"event":"call_ended"} ', 'test-api-key', at), /no valid signature/, 'another body')
  t.match(verifyRetellSignature(vector, '{"event":"call_ended"}', 'other-key', at), /no valid signature/, 'another key')
  t.match(verifyRetellSignature(vector, '{"event":"call_ended"}', 'test-api-key', at + 300_001), /5 minutes/, 'five minutes and a millisecond later')
  t.equal(verifyRetellSignature(vector, '{"event":"call_ended"}', 'test-api-key', at + 300_000), true, 'five minutes exactly')
  t.match(verifyRetellSignature(`x${vector}`, '{"event":"call_ended"}', 'test-api-key', at), /not v=/, 'anchored')
  t.match(verifyRetellSignature(undefined, '{}', 'test-api-key', at), /missing/)
})

t.test('webhooks: call_ended ends the call, call_analyzed too if it comes alone; call_started is progress', async (t) => {
  const webhook = createRetellWebhook({ apiKey: API_KEY, voicemail: 'COMPLETED', log: silentLogger })
  const call = { call_id: 'r-1', duration_ms: 41_600, end_timestamp: Date.parse('2030-01-01T09:00:42Z'), disconnection_reason: 'dial_busy' }
  t.same(webhook.read({ event: 'call_ended', call }), {
    kind: 'final',
    report: { providerCallId: 'r-1', providerStatus: 'BUSY', endReason: 'dial_busy', durationSec: 42, completedAt: new Date('2030-01-01T09:00:42Z') },
  })
  const analyzed = webhook.read({ event: 'call_analyzed', call: { ...call, disconnection_reason: 'voicemail_reached' } })
  t.equal(analyzed.kind === 'final' && analyzed.report.providerStatus, 'COMPLETED', 'voicemail is COMPLETED with VOICEMAIL_OUTCOME=COMPLETED')
  t.same(webhook.read({ event: 'call_started', call }), { kind: 'progress', event: 'call_started' })
  t.equal(webhook.read({ message: { type: 'end-of-call-report' } }).kind, 'invalid', "Vapi's body is not Retell's")
  const body = JSON.stringify({ event: 'call_ended', call })
  const now = Date.now()
  t.same(webhook.authenticate((n) => (n === 'x-retell-signature' ? retellSignature(API_KEY, body, now) : undefined), body, now), { ok: true, webhookId: null })
  t.equal(webhook.authenticate(() => undefined, body, now).ok, false)
  t.equal(createRetellWebhook({ apiKey: undefined, voicemail: 'NO_ANSWER', log: silentLogger }).configured, false)
})

t.test('end reasons: each family of each provider, voicemail either way, and an unknown word', async (t) => {
  const vapi: Array<[string, string]> = [
    ['customer-ended-call', 'COMPLETED'], ['assistant-said-end-call-phrase', 'COMPLETED'], ['exceeded-max-duration', 'COMPLETED'],
    ['customer-busy', 'BUSY'], ['customer-did-not-answer', 'NO_ANSWER'], ['voicemail', 'NO_ANSWER'],
    ['twilio-failed-to-connect-call', 'FAILED'], ['pipeline-error-openai-llm-failed', 'FAILED'], ['call.in-progress.error-vapifault-worker-died', 'FAILED'],
  ]
  for (const [word, status] of vapi) t.same([word, vapiEnd(word, 'NO_ANSWER')], [word, { status, notPlaced: false, known: true }])
  const retell: Array<[string, string]> = [
    ['user_hangup', 'COMPLETED'], ['agent_hangup', 'COMPLETED'], ['max_duration_reached', 'COMPLETED'],
    ['dial_busy', 'BUSY'], ['dial_no_answer', 'NO_ANSWER'], ['voicemail_reached', 'NO_ANSWER'],
    ['dial_failed', 'FAILED'], ['error_llm_websocket_open', 'FAILED'], ['invalid_destination', 'FAILED'],
  ]
  for (const [word, status] of retell) t.same([word, retellEnd(word, 'NO_ANSWER')], [word, { status, notPlaced: false, known: true }])
  t.equal(vapiEnd('voicemail', 'COMPLETED').status, 'COMPLETED')
  t.equal(retellEnd('voicemail_reached', 'COMPLETED').status, 'COMPLETED')
  t.same(vapiEnd('call.start.error-subscription-concurrency-limit-reached', 'NO_ANSWER'), { status: 'FAILED', notPlaced: true, known: true }, 'a concurrency refusal placed nothing')
  t.same(retellEnd('concurrency_limit_reached', 'NO_ANSWER'), { status: 'FAILED', notPlaced: true, known: true })
  t.same(retellEnd('a_word_retell_never_published', 'NO_ANSWER'), { status: 'FAILED', notPlaced: false, known: false }, 'an unknown word: FAILED, and flagged')
})

t.test('end to end with a worker: creates that may have placed the call are found by their metadata, never sent twice', async (t) => {
  await throughFaults<RetellCreateBody>(t, {
    webhook: createRetellWebhook({ apiKey: API_KEY, voicemail: 'NO_ANSWER', log: silentLogger }),
    fake: (o) => fakeRetell(t, o),
    indexOf: (body) => Number(body.retell_llm_dynamic_variables?.i),
    dialOf: (body) => `${body.metadata?.orchestrator_call_id}:${body.metadata?.orchestrator_dial}`,
    client: (url, publicBaseUrl, timeoutMs) => client(url, timeoutMs, publicBaseUrl),
    reasons: [
      ['user_hangup', 'COMPLETED'],
      ['dial_busy', 'BUSY'],
      ['dial_no_answer', 'NO_ANSWER'],
      ['voicemail_reached', 'NO_ANSWER'],
      ['error_llm_websocket_lost_connection', 'FAILED'],
    ],
  })
})

t.test('at start, a MAX_CONCURRENT_CALLS over the account’s limit is said', async (t) => {
  const fake = await fakeRetell(t, { concurrencyLimit: 20 })
  const lines: string[] = []
  const log = createLogger('info', {}, { destination: { write: (line: string) => void lines.push(line) } })
  await client(fake.url).checkLimit!(30, log)
  t.match(lines.join(''), /MAX_CONCURRENT_CALLS is more than the Retell account can place at once/)
  lines.length = 0
  await client(fake.url).checkLimit!(20, log)
  t.notMatch(lines.join(''), /more than/, 'at the limit: nothing to say')
})

t.test('bin/orchestrator all with PROVIDER=retell: calls go to Retell, its webhooks end them', async (t) => {
  const fake = await fakeRetell(t, { durationMs: 50, endReason: () => 'agent_hangup' })
  const { h } = await threeCallsThroughAll(t, { PROVIDER: 'retell', RETELL_BASE_URL: fake.url, RETELL_API_KEY: API_KEY, RETELL_FROM_NUMBER: FROM }, 'agent_7')
  t.equal(fake.calls.size, 3, 'Retell placed three calls')
  await waitFor('call_analyzed after each call_ended', async () => fake.webhookAnswers.length >= 6, 30_000)
  t.ok(fake.webhookAnswers.every((s) => s === 200), 'call_ended and call_analyzed taken for each')
  const verdicts = await h.sql<{ verdict: string; n: number }[]>`SELECT verdict, count(*)::int AS n FROM callbacks GROUP BY verdict ORDER BY verdict`
  t.same(verdicts, [{ verdict: 'already_final', n: 3 }, { verdict: 'applied', n: 3 }], 'call_ended applied, call_analyzed kept as already_final')
})
