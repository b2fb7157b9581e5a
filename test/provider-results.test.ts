import t from 'tap'
import { silentLogger } from '../src/platform/log.ts'
import { createRetellWebhook } from '../src/provider/retell.ts'
import { createVapiWebhook } from '../src/provider/vapi.ts'
import { resultOf } from '../src/provider/webhook.ts'
import { callbackPath, inFlightCall } from './support/callbacks.ts'
import { retellSignature } from './support/fake-retell.ts'
import { vapiSignature } from './support/fake-vapi.ts'
import { newPhone } from './support/factory.ts'
import { addEventSink, createHarness, readResponse, registerWorker, type Harness } from './support/harness.ts'

// What users came for: the call resource (and its events) carries what the last dial ended
// with, as Vapi or Retell told it (result: endReason, transcript, recordingUrl, summary,
// analysis); a report that comes after the end with more (Retell's call_analyzed, Vapi's report
// after its status-update) adds it and is told as call.analyzed.

const SECRET = 'vapi-hmac-secret'
const RETELL_KEY = 'retell-key'

async function post(h: Harness, callId: string, body: string, headers: Record<string, string>) {
  return readResponse(await h.app.request(callbackPath(callId, 1), { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body }))
}

const vapiHeaders = (body: string) => {
  const at = String(Math.floor(Date.now() / 1000))
  return { 'x-signature': vapiSignature(SECRET, at, body), 'x-timestamp': at }
}

async function eventsOf(h: Harness, callId: string) {
  return (await h.sql<{ type: string; payload: { data: { result: unknown } } }[]>`SELECT type, payload FROM events WHERE call_id = ${callId} ORDER BY seq`).map((e) => [e.type, e.payload.data.result])
}

t.test('Vapi: a status-update ends the call, the end-of-call-report after it brings the transcript, recording and analysis', async (t) => {
  const h = await createHarness(t, { webhook: createVapiWebhook({ secret: SECRET, token: undefined, voicemail: 'NO_ANSWER', log: silentLogger }) })
  await addEventSink(h)
  const call = await inFlightCall(h, await registerWorker(h), newPhone(), 'v-1')
  const ended = JSON.stringify({ message: { type: 'status-update', status: 'ended', endedReason: 'customer-ended-call', call: { id: 'v-1' } } })
  t.same((await post(h, call.id, ended, vapiHeaders(ended))).body, { verdict: 'applied', callId: call.id, status: 'COMPLETED' })
  const first = await h.call('GET', `/calls/${call.id}`)
  t.same(first.body.result, { endReason: 'customer-ended-call', transcript: null, recordingUrl: null, summary: null, analysis: null }, 'the end reason first')

  const report = JSON.stringify({
    message: {
      type: 'end-of-call-report',
      endedReason: 'customer-ended-call',
      call: { id: 'v-1' },
      artifact: { transcript: 'AI: Hello Ada.\nUser: Hi.', recording: { mono: { combinedUrl: 'https://storage.vapi.ai/v-1-mono.wav' } } },
      analysis: { summary: 'Ada confirmed.', successEvaluation: 'true', structuredData: { confirmed: true } },
    },
  })
  t.same((await post(h, call.id, report, vapiHeaders(report))).body, { verdict: 'already_final', callId: call.id, status: 'COMPLETED' })
  const read = await h.call('GET', `/calls/${call.id}`)
  t.same(read.body.result, {
    endReason: 'customer-ended-call',
    transcript: 'AI: Hello Ada.\nUser: Hi.',
    recordingUrl: 'https://storage.vapi.ai/v-1-mono.wav',
    summary: 'Ada confirmed.',
    analysis: { summary: 'Ada confirmed.', successEvaluation: 'true', structuredData: { confirmed: true } },
  })
  t.equal(read.body.dials[0].endReason, 'customer-ended-call')
  const events = await eventsOf(h, call.id)
  t.same(events.map(([type]) => type), ['call.dialed', 'call.completed', 'call.analyzed'], 'the analysis is an event of its own')
  t.same(events.at(-1)![1], read.body.result, 'carrying the result')
  // The same report again adds nothing: no second call.analyzed.
  const again = JSON.stringify({ ...JSON.parse(report), extra: 1 })
  await post(h, call.id, again, vapiHeaders(again))
  t.equal((await eventsOf(h, call.id)).length, 3)
})

t.test('Retell: call_ended with the transcript, then call_analyzed with the summary and analysis', async (t) => {
  const h = await createHarness(t, { webhook: createRetellWebhook({ apiKey: RETELL_KEY, voicemail: 'NO_ANSWER', log: silentLogger }) })
  await addEventSink(h)
  const call = await inFlightCall(h, await registerWorker(h), newPhone(), 'r-1')
  const base = { call_id: 'r-1', disconnection_reason: 'user_hangup', duration_ms: 30_000, transcript: 'Agent: Hello.\nUser: Bye.', recording_url: 'https://dxc03zgurdly9.cloudfront.net/r-1.wav' }
  const deliver = (event: string, callBody: object) => {
    const body = JSON.stringify({ event, call: callBody })
    return post(h, call.id, body, { 'x-retell-signature': retellSignature(RETELL_KEY, body, Date.now()) })
  }
  t.same((await deliver('call_ended', base)).body, { verdict: 'applied', callId: call.id, status: 'COMPLETED' })
  t.same((await h.call('GET', `/calls/${call.id}`)).body.result, {
    endReason: 'user_hangup',
    transcript: 'Agent: Hello.\nUser: Bye.',
    recordingUrl: 'https://dxc03zgurdly9.cloudfront.net/r-1.wav',
    summary: null,
    analysis: null,
  })
  const analysis = { call_summary: 'The user said goodbye.', user_sentiment: 'Neutral', call_successful: true, in_voicemail: false }
  t.same((await deliver('call_analyzed', { ...base, call_analysis: analysis })).body, { verdict: 'already_final', callId: call.id, status: 'COMPLETED' })
  const read = await h.call('GET', `/calls/${call.id}`)
  t.equal(read.body.result.summary, 'The user said goodbye.')
  t.same(read.body.result.analysis, analysis)
  t.same((await eventsOf(h, call.id)).map(([type]) => type), ['call.dialed', 'call.completed', 'call.analyzed'])
})

t.test('a result is made safe to keep and show: bounded text, http(s) links only, an analysis object of at most 64 KiB', async (t) => {
  t.equal(resultOf({}), undefined, 'nothing')
  t.equal(resultOf({ recordingUrl: 'javascript:alert(1)' }), undefined, 'a script URL is no recording')
  t.equal(resultOf({ recordingUrl: 'https://a.example/x y.wav' })?.recordingUrl, undefined, 'nor one with spaces')
  t.equal(resultOf({ transcript: 'x'.repeat(300 * 1024) })!.transcript!.length, 256 * 1024, 'a transcript is cut at 256 KiB')
  t.equal(resultOf({ transcript: 'x', analysis: ['a'] })!.analysis, null, 'an analysis that is not an object is dropped')
  t.equal(resultOf({ transcript: 'x', analysis: { big: 'y'.repeat(70 * 1024) } })!.analysis, null, 'and one over 64 KiB')
})

t.test("the console's call page shows how the call ended: end reason, summary, the recording to play, the transcript, escaped", async (t) => {
  const h = await createHarness(t, { webhook: createVapiWebhook({ secret: SECRET, token: undefined, voicemail: 'NO_ANSWER', log: silentLogger }) })
  const call = await inFlightCall(h, await registerWorker(h), newPhone(), 'v-2')
  const report = JSON.stringify({
    message: {
      type: 'end-of-call-report',
      endedReason: 'assistant-ended-call',
      call: { id: 'v-2' },
      artifact: { transcript: 'User: <script>alert(1)</script> I will come.', recording: { mono: { combinedUrl: 'https://storage.vapi.ai/v-2.wav?sig=a&b=c' } } },
      analysis: { summary: 'Coming on <b>Monday</b>.', structuredData: { day: 'Monday' } },
    },
  })
  t.equal((await post(h, call.id, report, vapiHeaders(report))).status, 200)
  const res = await h.app.request(`/console/calls/${call.id}`)
  const page = await res.text()
  t.equal(res.status, 200)
  t.match(res.headers.get('content-security-policy'), /media-src https:/, 'the recording may play, from https only')
  t.match(page, /<code>assistant-ended-call<\/code>/)
  t.match(page, /<dd data-summary>Coming on &lt;b&gt;Monday&lt;\/b&gt;\.<\/dd>/, 'the summary, escaped')
  t.match(page, /<audio controls preload="none" src="https:\/\/storage\.vapi\.ai\/v-2\.wav\?sig=a&amp;b=c"><\/audio>/, 'a player for the recording')
  t.match(page, /<pre data-transcript>User: &lt;script&gt;alert\(1\)&lt;\/script&gt; I will come\.<\/pre>/, 'the transcript, escaped')
  t.notMatch(page, /<script>alert/, 'nothing of it runs')
  t.match(page, /&quot;day&quot;: &quot;Monday&quot;/, 'the analysis, as JSON')
})
