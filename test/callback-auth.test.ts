import t, { type Test } from 'tap'
import { Webhook } from 'standardwebhooks'
import type { Harness } from './support/harness.ts'
import { createHarness, WEBHOOK_SECRET, registerWorker } from './support/harness.ts'
import { callbackPath, deliver, inFlightCall, sendSigned, signHeaders, type Delivery } from './support/callbacks.ts'
import { newPhone } from './support/factory.ts'
import { callRow, callSnapshot, jobState, verdicts } from './support/inspect.ts'

// Who may report a call's outcome: Standard Webhooks signatures (made here by the reference
// `standardwebhooks` package), rotated secrets, or the static API key, at a webhook URL we issued
// (its token binds it to one call and dial). Every refusal is a 401 problem that changes neither
// the call nor its pg-boss job and writes nothing at all: it is only counted (/metrics).

const OTHER_SECRET = 'whsec_' + Buffer.from('a different secret of 32 bytes!!').toString('base64')
const NEW_SECRET = 'whsec_' + Buffer.from('the rotated-in secret, 32 bytes.').toString('base64')

/** A dialed call (provider id recorded) plus the callback body that would complete it. */
async function dialedCall(h: Harness, workerId: number) {
  const providerCallId = `prov-${Math.random().toString(36).slice(2)}`
  const call = await inFlightCall(h, workerId, newPhone(), providerCallId)
  const body = JSON.stringify({ callId: providerCallId, status: 'COMPLETED', durationSec: 42, completedAt: new Date().toISOString() })
  return { call, providerCallId, body }
}

/** Asserts a 401 problem that changed nothing, wrote nothing, and was counted under its code. */
async function assertRefused(t: Test, h: Harness, callId: string, send: () => Promise<Delivery>, code?: string) {
  const before = await callSnapshot(h, callId)
  const [rows] = await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM callbacks`
  const counted = (await h.call('GET', '/metrics')).body.callbacksRefused as Record<string, number>
  const res = await send()
  t.equal(res.status, 401, 'answered 401')
  t.match(res.contentType, /^application\/problem\+json/, 'as problem+json')
  t.equal(res.body.status, 401)
  if (code) t.equal(res.body.code, code)
  t.same(await callSnapshot(h, callId), before, 'call row and job state unchanged')
  t.equal((await callRow(h, callId)).status, 'IN_PROGRESS')
  const [after] = await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM callbacks`
  t.equal(after!.n, rows!.n, 'nothing written to the callbacks table')
  const now = (await h.call('GET', '/metrics')).body.callbacksRefused as Record<string, number>
  t.equal(now[res.body.code] ?? 0, (counted[res.body.code] ?? 0) + 1, `counted as ${res.body.code}`)
}

t.test('Standard Webhooks signatures (one secret)', async (t) => {
  const h = await createHarness(t)
  const worker = await registerWorker(h)

  t.test('a valid signature is accepted and completes the call', async (t) => {
    const { call, body } = await dialedCall(h, worker)
    const res = await deliver(h, body, signHeaders(body), callbackPath(call.id))
    t.equal(res.status, 200)
    t.equal(res.body.verdict, 'applied')
    t.equal(res.body.callId, call.id)
    t.equal(res.body.status, 'COMPLETED')
    t.equal((await callRow(h, call.id)).status, 'COMPLETED')
    t.equal(await jobState(h, call.job_id), 'completed')
  })

  t.test('a tampered body is refused', async (t) => {
    const { call, body } = await dialedCall(h, worker)
    const headers = signHeaders(body)
    const tampered = body.replace('"COMPLETED"', '"FAILED"')
    t.not(tampered, body)
    await assertRefused(t, h, call.id, () => deliver(h, tampered, headers, callbackPath(call.id)), 'invalid_signature')
  })

  t.test('a body signed with another secret is refused', async (t) => {
    const { call, body } = await dialedCall(h, worker)
    await assertRefused(t, h, call.id, () => deliver(h, body, signHeaders(body, { secret: OTHER_SECRET }), callbackPath(call.id)), 'invalid_signature')
  })

  t.test('a timestamp more than 5 minutes old is refused', async (t) => {
    const { call, body } = await dialedCall(h, worker)
    const at = new Date(Date.now() - 6 * 60_000)
    await assertRefused(t, h, call.id, () => deliver(h, body, signHeaders(body, { at }), callbackPath(call.id)), 'invalid_signature')
  })

  t.test('a timestamp more than 5 minutes ahead is refused', async (t) => {
    const { call, body } = await dialedCall(h, worker)
    const at = new Date(Date.now() + 6 * 60_000)
    await assertRefused(t, h, call.id, () => deliver(h, body, signHeaders(body, { at }), callbackPath(call.id)), 'invalid_signature')
  })

  t.test('a timestamp a little off (within tolerance) is accepted', async (t) => {
    const { call, body } = await dialedCall(h, worker)
    const res = await deliver(h, body, signHeaders(body, { at: new Date(Date.now() - 4 * 60_000) }), callbackPath(call.id))
    t.equal(res.status, 200)
    t.equal((await callRow(h, call.id)).status, 'COMPLETED')
  })

  for (const header of ['webhook-id', 'webhook-timestamp', 'webhook-signature']) {
    t.test(`a missing ${header} header is refused`, async (t) => {
      const { call, body } = await dialedCall(h, worker)
      const headers = signHeaders(body)
      delete headers[header]
      await assertRefused(t, h, call.id, () => deliver(h, body, headers, callbackPath(call.id)), 'invalid_signature')
    })
  }

  t.test('no authentication at all is refused', async (t) => {
    const { call, body } = await dialedCall(h, worker)
    await assertRefused(t, h, call.id, () => deliver(h, body, { 'content-type': 'application/json' }, callbackPath(call.id)))
  })

  t.test('garbage signatures are refused', async (t) => {
    const { call, body } = await dialedCall(h, worker)
    const valid = signHeaders(body)['webhook-signature']!
    const garbage = [
      'v1,not-base64-at-all!!!',
      'v1,',
      'garbage',
      valid.replace(/^v1,/, 'v2,'), // the right bytes under a version we do not accept
      valid.replace(/^v1,/, ''), // the right bytes without a version
      `v1,${Buffer.alloc(32).toString('base64')}`, // the right length, the wrong bytes
    ]
    for (const signature of garbage) {
      t.test(JSON.stringify(signature), async (t) => {
        await assertRefused(t, h, call.id, () => deliver(h, body, { ...signHeaders(body), 'webhook-signature': signature }, callbackPath(call.id)), 'invalid_signature')
      })
    }
  })

  t.test('a timestamp that is not unix seconds is refused', async (t) => {
    const { call, body } = await dialedCall(h, worker)
    const headers = signHeaders(body)
    headers['webhook-timestamp'] = new Date().toISOString()
    await assertRefused(t, h, call.id, () => deliver(h, body, headers, callbackPath(call.id)), 'invalid_signature')
  })

  t.test('a signature made for another webhook-id is refused', async (t) => {
    const { call, body } = await dialedCall(h, worker)
    const headers = signHeaders(body, { id: 'msg_original' })
    headers['webhook-id'] = 'msg_replayed'
    await assertRefused(t, h, call.id, () => deliver(h, body, headers, callbackPath(call.id)), 'invalid_signature')
  })

  t.test('a signature header with several entries, one of them valid, is accepted', async (t) => {
    const { call, body } = await dialedCall(h, worker)
    const headers = signHeaders(body, { id: 'msg_multi' })
    const at = new Date(Number(headers['webhook-timestamp']) * 1000)
    const wrong = new Webhook(OTHER_SECRET).sign('msg_multi', at, body)
    headers['webhook-signature'] = `v2,abc ${wrong} ${headers['webhook-signature']} v1,${Buffer.alloc(32).toString('base64')}`
    const res = await deliver(h, body, headers, callbackPath(call.id))
    t.equal(res.status, 200)
    t.equal(res.body.verdict, 'applied')
    t.equal((await callRow(h, call.id)).status, 'COMPLETED')
  })

  t.test('a signed callback is refused when only an API key is presented', async (t) => {
    // No API key is configured in this harness: a key must not stand in for the signature.
    const { call, body } = await dialedCall(h, worker)
    await assertRefused(t, h, call.id, () =>
      deliver(h, body, { 'content-type': 'application/json', authorization: 'Bearer whatever' }, callbackPath(call.id)),
    )
  })

  t.test('no refused callback left a row; each was counted, also in Prometheus form', async (t) => {
    const [rows] = await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM callbacks WHERE verdict = 'rejected'`
    t.equal(rows!.n, 0)
    const text = (await h.call('GET', '/metrics?format=prometheus')).body as string
    t.match(text, /orchestrator_callbacks_refused_total\{reason="invalid_signature"\} \d+/)
  })
})

t.test('the webhook URL binds a callback to its call and dial', async (t) => {
  const h = await createHarness(t)
  const worker = await registerWorker(h)

  t.test("a captured callback re-sent to another call's URL is refused: its token is the first call's", async (t) => {
    const c = await dialedCall(h, worker)
    const d = await dialedCall(h, worker)
    const body = JSON.stringify({ callId: d.providerCallId, status: 'FAILED' })
    const cPath = callbackPath(c.call.id)
    const replayed = cPath.replace(c.call.id, d.call.id)
    await assertRefused(t, h, d.call.id, () => deliver(h, body, signHeaders(body), replayed), 'invalid_callback_url')
    const otherDial = callbackPath(d.call.id, 1).replace('dial=1', 'dial=2')
    await assertRefused(t, h, d.call.id, () => deliver(h, body, signHeaders(body), otherDial), 'invalid_callback_url')
  })

  t.test('a URL without its token, or with a made-up one, is refused', async (t) => {
    const { call, body } = await dialedCall(h, worker)
    const paths = [
      `/callbacks/call-status?callId=${call.id}&dial=1`,
      `/callbacks/call-status?callId=${call.id}&dial=1&token=${'A'.repeat(43)}`,
      `/callbacks/call-status?callId=${call.id}&dial=1&token=short`,
      `/callbacks/call-status?dial=1&token=${callbackPath(call.id).split('token=')[1]}`,
      `${callbackPath(call.id)}&dial=1`,
      '/callbacks/call-status',
    ]
    for (const path of paths) {
      await assertRefused(t, h, call.id, () => deliver(h, body, signHeaders(body), path), 'invalid_callback_url')
    }
  })

  t.test("a token made with another secret is refused", async (t) => {
    const { call, body } = await dialedCall(h, worker)
    await assertRefused(t, h, call.id, () => deliver(h, body, signHeaders(body), callbackPath(call.id, 1, OTHER_SECRET)), 'invalid_callback_url')
  })
})

t.test('rotated secrets: signatures made with either secret are accepted', async (t) => {
  const h = await createHarness(t, { webhookSecrets: [NEW_SECRET, WEBHOOK_SECRET] })
  const worker = await registerWorker(h)

  for (const [name, secret] of [['new', NEW_SECRET], ['old', WEBHOOK_SECRET]] as const) {
    t.test(`signed with the ${name} secret`, async (t) => {
      const { call, body } = await dialedCall(h, worker)
      const res = await deliver(h, body, signHeaders(body, { secret }), callbackPath(call.id))
      t.equal(res.status, 200)
      t.equal(res.body.verdict, 'applied')
      t.equal((await callRow(h, call.id)).status, 'COMPLETED')
    })
  }

  t.test('a secret that is neither is refused', async (t) => {
    const { call, body } = await dialedCall(h, worker)
    await assertRefused(t, h, call.id, () => deliver(h, body, signHeaders(body, { secret: OTHER_SECRET }), callbackPath(call.id)), 'invalid_signature')
  })
})

const URL_SECRET = 'a callback URL secret of 32 chars or more'

t.test('the API-key alternative (with CALLBACK_URL_SECRET, which the URLs are made with)', async (t) => {
  const h = await createHarness(t, { webhookSecrets: [], webhookApiKey: 'k', callbackUrlSecret: URL_SECRET })
  const worker = await registerWorker(h)
  const json = { 'content-type': 'application/json' }

  t.test('Authorization: Bearer <key> is accepted', async (t) => {
    const { call, body } = await dialedCall(h, worker)
    const res = await deliver(h, body, { ...json, authorization: 'Bearer k' }, callbackPath(call.id, 1, URL_SECRET))
    t.equal(res.status, 200)
    t.equal(res.body.verdict, 'applied')
    t.equal((await callRow(h, call.id)).status, 'COMPLETED')
  })

  t.test('X-Api-Key: <key> is accepted', async (t) => {
    const { call, body } = await dialedCall(h, worker)
    const res = await deliver(h, body, { ...json, 'x-api-key': 'k' }, callbackPath(call.id, 1, URL_SECRET))
    t.equal(res.status, 200)
    t.equal((await callRow(h, call.id)).status, 'COMPLETED')
  })

  t.test('a wrong key is refused', async (t) => {
    const { call, body } = await dialedCall(h, worker)
    const wrong: Record<string, string>[] = [{ authorization: 'Bearer kk' }, { 'x-api-key': 'K' }, { authorization: 'k' }, { 'x-api-key': '' }, {}]
    for (const headers of wrong) {
      t.test(JSON.stringify(headers), async (t) => {
        await assertRefused(t, h, call.id, () => deliver(h, body, { ...json, ...headers }, callbackPath(call.id, 1, URL_SECRET)), 'invalid_api_key')
      })
    }
  })

  t.test('a URL minted with the API key, which every API-key callback carries, is refused', async (t) => {
    const { call, body } = await dialedCall(h, worker)
    await assertRefused(t, h, call.id, () => deliver(h, body, { ...json, authorization: 'Bearer k' }, callbackPath(call.id, 1, 'k')), 'invalid_callback_url')
  })

  t.test('a Standard Webhooks signature does not replace the key when no secret is configured', async (t) => {
    const { call, body } = await dialedCall(h, worker)
    await assertRefused(t, h, call.id, () => deliver(h, body, signHeaders(body), callbackPath(call.id, 1, URL_SECRET)), 'invalid_api_key')
  })
})

t.test('a secret and an API key both configured: the key is no way around the signature', async (t) => {
  const h = await createHarness(t, { webhookApiKey: 'k' })
  const worker = await registerWorker(h)
  const json = { 'content-type': 'application/json' }

  t.test('an unsigned callback with the right key, at the right URL, is refused', async (t) => {
    const { call, body } = await dialedCall(h, worker)
    await assertRefused(t, h, call.id, () => deliver(h, body, { ...json, authorization: 'Bearer k' }, callbackPath(call.id)), 'invalid_signature')
  })

  t.test('a URL minted with the API key is refused, even signed', async (t) => {
    const { call, body } = await dialedCall(h, worker)
    await assertRefused(t, h, call.id, () => deliver(h, body, signHeaders(body), callbackPath(call.id, 1, 'k')), 'invalid_callback_url')
  })

  t.test('signed, at the URL made with the secret: applied', async (t) => {
    const { call, body } = await dialedCall(h, worker)
    t.equal((await deliver(h, body, signHeaders(body), callbackPath(call.id))).body.verdict, 'applied')
  })
})

t.test('neither a secret nor an API key configured: every callback is refused', async (t) => {
  const h = await createHarness(t, { webhookSecrets: [] })
  const worker = await registerWorker(h)
  const { call, body } = await dialedCall(h, worker)
  await assertRefused(t, h, call.id, () => deliver(h, body, signHeaders(body), callbackPath(call.id)), 'callbacks_not_configured')
  await assertRefused(t, h, call.id, () => deliver(h, body, { 'content-type': 'application/json', authorization: 'Bearer k' }, callbackPath(call.id)), 'callbacks_not_configured')
  await assertRefused(t, h, call.id, () => sendSigned(h, call.id, body), 'callbacks_not_configured')
})

t.test('a callback at a URL we never issued is refused before its body is read', async (t) => {
  const h = await createHarness(t)
  const worker = await registerWorker(h)
  const { call } = await dialedCall(h, worker)
  // More than the 64 KiB a callback body may have: read first, this was a 413.
  const big = JSON.stringify({ callId: 'p', status: 'COMPLETED', padding: 'x'.repeat(200_000) })
  await assertRefused(t, h, call.id, () => deliver(h, big, signHeaders(big), `/callbacks/call-status?callId=${call.id}&dial=1&token=${'A'.repeat(43)}`), 'invalid_callback_url')
})
