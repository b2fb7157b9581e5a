import postgres from 'postgres'
import t, { type Test } from 'tap'
import type { CallRow } from '../src/domain/call.ts'
import { syncEnvEndpoint, type DeliveryRow } from '../src/store/events.ts'
import { EventDelivery, type DeliveryOptions } from '../src/services/events/deliver.ts'
import { isPublicAddress } from '../src/services/events/destinations.ts'
import { emitCallEvents } from '../src/services/events/outbox.ts'
import { silentLogger } from '../src/platform/log.ts'
import { startEventReceiver, type EventReceiver } from './support/event-receiver.ts'
import { recordDialResult } from '../src/services/dispatch/record.ts'
import { sweep } from '../src/services/dispatch/sweeps.ts'
import { inFlightCall, POLICY, sendSigned } from './support/callbacks.ts'
import { insertCall, newPhone, postCall } from './support/factory.ts'
import { addEventSink, createHarness, registerWorker, type Harness } from './support/harness.ts'
import { waitFor } from './support/processes.ts'

// Event endpoints, what is sent to them and when: filters, order, retries, giving up, time-outs,
// replay, removal, rotation, and where events may never go.

async function startDelivery(t: Test, h: Harness, options: Partial<DeliveryOptions> = {}): Promise<EventDelivery> {
  const delivery = new EventDelivery({
    sql: h.sql,
    deliveries: h.queue.deliveries,
    listenUrl: h.url,
    options: { timeoutMs: 2_000, perEndpoint: 4, allowInsecureUrls: true, pollMs: 100, ...options },
    log: silentLogger,
  })
  await delivery.start()
  t.teardown(() => delivery.stop())
  return delivery
}

async function register(h: Harness, receiver: EventReceiver, body: Record<string, unknown> = {}): Promise<{ id: string; secret: string }> {
  const res = await h.call('POST', '/event-endpoints', { url: receiver.url, ...body })
  if (res.status !== 201) throw new Error(`POST /event-endpoints answered ${res.status}: ${JSON.stringify(res.body)}`)
  receiver.secrets = [res.body.secret]
  return res.body
}

const deliveries = (h: Harness) => h.sql<DeliveryRow[]>`SELECT * FROM event_deliveries`
const settled = (h: Harness) =>
  waitFor('every delivery settled', async () => (await deliveries(h)).every((d) => d.status !== 'pending'), 60_000)

t.test('endpoints: added with a secret shown once, listed, rotated, removed', async (t) => {
  const h = await createHarness(t)
  const added = await h.call('POST', '/event-endpoints', { url: 'http://127.0.0.1:9/hook', eventTypes: ['call.completed', 'call.failed'] })
  t.equal(added.status, 201)
  t.match(added.body, { url: 'http://127.0.0.1:9/hook', eventTypes: ['call.completed', 'call.failed'], source: 'api' })
  t.match(added.body.secret, /^whsec_[A-Za-z0-9+/]{43}=$/)
  t.equal(added.headers.get('location'), `/event-endpoints/${added.body.id}`)
  const listed = await h.call('GET', '/event-endpoints')
  t.same(listed.body.data.map((e: Record<string, unknown>) => e.id), [added.body.id])
  t.notOk('secret' in listed.body.data[0], 'the list never shows a secret')

  const rotated = await h.call('POST', `/event-endpoints/${added.body.id}/rotate-secret`)
  t.equal(rotated.status, 200)
  t.not(rotated.body.secret, added.body.secret)
  const [row] = await h.sql<{ secrets: string[] }[]>`SELECT secrets FROM event_endpoints WHERE id = ${added.body.id}`
  t.same(row!.secrets, [rotated.body.secret, added.body.secret], 'the new secret signs, the previous one beside it')
  const twice = await h.call('POST', `/event-endpoints/${added.body.id}/rotate-secret`)
  const [row2] = await h.sql<{ secrets: string[] }[]>`SELECT secrets FROM event_endpoints WHERE id = ${added.body.id}`
  t.same(row2!.secrets, [twice.body.secret, rotated.body.secret], 'a second rotation drops the oldest')

  t.equal((await h.call('DELETE', `/event-endpoints/${added.body.id}`)).status, 204)
  t.equal((await h.call('DELETE', `/event-endpoints/${added.body.id}`)).status, 404)
  t.equal((await h.call('POST', `/event-endpoints/${added.body.id}/rotate-secret`)).status, 404)
  t.same((await h.call('GET', '/event-endpoints')).body.data, [])

  for (const [body, path] of [
    [{}, 'body.url'],
    [{ url: 'not a url' }, 'body.url'],
    [{ url: 'http://127.0.0.1:9/x', eventTypes: ['call.nope'] }, 'body.eventTypes.0'],
    [{ url: 'http://127.0.0.1:9/x', eventTypes: [] }, 'body.eventTypes'],
    [{ url: 'http://127.0.0.1:9/x', secret: 'whsec_x' }, 'body.secret'],
  ] as const) {
    const res = await h.call('POST', '/event-endpoints', body)
    t.equal(res.status, 400, JSON.stringify(body))
    t.match(res.body.errors, [{ path }])
  }
  t.equal((await h.call('DELETE', '/event-endpoints/nope')).status, 400)
  t.equal((await h.call('PUT', '/event-endpoints')).status, 405)
})

t.test('events never go to private, loopback or link-local addresses, nor over http', async (t) => {
  const h = await createHarness(t, { allowInsecureEventUrls: false })
  const refused = [
    'http://93.184.216.34/hook',
    'https://127.0.0.1/hook',
    'https://localhost/hook',
    'https://10.1.2.3/hook',
    'https://172.16.0.1/hook',
    'https://192.168.1.1/hook',
    'https://169.254.169.254/latest/meta-data',
    'https://100.64.0.1/hook',
    'https://0.0.0.0/hook',
    'https://[::1]/hook',
    'https://[fe80::1]/hook',
    'https://[fd00::1]/hook',
    'https://[::ffff:127.0.0.1]/hook',
    'https://user:pass@93.184.216.34/hook',
    'ftp://93.184.216.34/hook',
  ]
  for (const url of refused) {
    const res = await h.call('POST', '/event-endpoints', { url })
    t.equal(res.status, 422, url)
    t.equal(res.body.code, 'endpoint_not_allowed')
  }
  const [row] = await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM event_endpoints`
  t.equal(row!.n, 0, 'none was stored')
  const ok = await h.call('POST', '/event-endpoints', { url: 'https://93.184.216.34/hook' })
  t.equal(ok.status, 201, 'a public address over https is taken')

  for (const address of ['8.8.8.8', '93.184.216.34', '2606:4700::1111', '::ffff:8.8.8.8', '64:ff9b::808:808', '2002:808:808::1']) {
    t.ok(isPublicAddress(address), `${address} is public`)
  }
  const notPublic = [
    '127.0.0.2', '10.0.0.1', '192.168.0.1', '169.254.1.1', '::1', '::', 'fe80::2', 'fc00::1', '::ffff:10.0.0.1', '224.0.0.1', 'nonsense',
    // IPv4 inside IPv6: NAT64, 6to4, IPv4-compatible and Teredo carrying an address that is not public.
    '64:ff9b::a9fe:a9fe', '64:ff9b::169.254.169.254', '2002:a9fe:a9fe::1', '2002:c0a8:101::1', '::a9fe:a9fe', '::127.0.0.1',
    '2001:0:4136:e378:8000:63bf:f5fe:56fe',
    // Site-local, discard-only, NAT64 local use, documentation, benchmarking.
    'fec0::1', '100::1', '64:ff9b:1::1', '2001:db8::1', '3fff::1', '2001:2::1', '192.0.2.1', '198.51.100.1', '203.0.113.5', '198.18.0.1',
  ]
  for (const address of notPublic) t.notOk(isPublicAddress(address), `${address} is not`)
  const named = await h.call('POST', '/event-endpoints', { url: 'https://localhost/hook' })
  t.equal(named.status, 422)
  t.notMatch(named.body.detail, /127\.0\.0\.1|::1/, 'the refusal does not say what the name resolved to')
})

t.test('at delivery time too: an endpoint whose address is not public is never connected to', async (t) => {
  const h = await createHarness(t)
  const receiver = await startEventReceiver(t)
  const port = new URL(receiver.url).port
  // As if stored before a rule changed, or a name that resolves elsewhere now (DNS rebinding).
  for (const url of [`https://127.0.0.1:${port}/events`, `https://localhost:${port}/events`, receiver.url]) {
    await h.sql`INSERT INTO event_endpoints (url, secrets) VALUES (${url}, ${['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw']}::text[])`
  }
  const call = await postCall(h)
  await h.call('POST', `/calls/${call.id}/cancel`)
  await startDelivery(t, h, { allowInsecureUrls: false })
  await waitFor('three attempts', async () => (await deliveries(h)).every((d) => d.attempts > 0), 30_000)
  t.equal(receiver.received.length + receiver.rejected, 0, 'the receiver saw nothing')
  const errors = (await deliveries(h)).map((d) => d.last_error).sort()
  t.match(errors, [/127\.0\.0\.1 is not a public address/, /not an https/, /^the host is not a public address$/])
})

t.test('an endpoint gets the types it asked for', async (t) => {
  const h = await createHarness(t)
  const all = await startEventReceiver(t)
  const completedOnly = await startEventReceiver(t)
  await register(h, all)
  await register(h, completedOnly, { eventTypes: ['call.completed'] })
  const row = await insertCall(h, { status: 'COMPLETED' })
  const cancelled = await postCall(h)
  await h.call('POST', `/calls/${cancelled.id}/cancel`)
  await h.sql.begin((tx) => emitCallEvents(tx, h.queue.deliveries, 'call.completed', [row]))
  await startDelivery(t, h)
  await waitFor('both delivered to the first', async () => all.accepted().length === 2)
  await settled(h)
  t.same(all.accepted().map((e) => e.type).sort(), ['call.cancelled', 'call.completed'])
  t.same(completedOnly.accepted().map((e) => e.type), ['call.completed'])
})

t.test('one call’s events arrive in the order they happened, even when the later one’s job looks older', async (t) => {
  // A transaction that starts first can commit second: a callback that waited on the call's row
  // while the dial was being recorded. pg-boss orders a key's jobs by their transaction's start,
  // so the later event's job is the older one; sending by the events' own order fixes that.
  const h = await createHarness(t)
  const receiver = await startEventReceiver(t)
  await register(h, receiver)
  const call = await insertCall(h, { status: 'COMPLETED' })
  let release!: () => void
  const gate = new Promise<void>((resolve) => (release = resolve))
  let started!: (at: Date) => void
  const begun = new Promise<Date>((resolve) => (started = resolve))
  const later = h.sql.begin(async (tx) => {
    const [row] = await tx<{ now: Date }[]>`SELECT now()` // this transaction's start is now
    started(row!.now)
    await gate
    await emitCallEvents(tx, h.queue.deliveries, 'call.completed', [call])
  })
  const start = await begun
  // The next transaction must start on a later millisecond (a JS Date's resolution) of the
  // database's clock: wait for the clock, not for a guessed time.
  await waitFor('the database clock to move on', async () => {
    const [row] = await h.sql<{ moved: boolean }[]>`SELECT clock_timestamp() >= ${start}::timestamptz + interval '1 millisecond' AS moved`
    return row!.moved
  })
  await h.sql.begin((tx) => emitCallEvents(tx, h.queue.deliveries, 'call.dialed', [{ ...call, status: 'IN_PROGRESS' } as CallRow]))
  release()
  await later
  const jobs = await h.sql<{ created_on: Date; data: { callId: string } }[]>`
    SELECT created_on FROM pgboss.job WHERE name = 'event-deliveries' ORDER BY created_on`
  const events = await h.sql<{ type: string }[]>`SELECT type FROM events ORDER BY seq`
  t.same(events.map((e) => e.type), ['call.dialed', 'call.completed'], 'written in this order')
  t.equal(jobs.length, 2)
  t.ok(jobs[0]!.created_on < jobs[1]!.created_on, 'the completed event’s job is the older one')

  await startDelivery(t, h)
  await waitFor('both', async () => receiver.accepted().length === 2)
  t.same(receiver.received.map((e) => e.type), ['call.dialed', 'call.completed'], 'sent in the order written')
})

t.test('a failing event is retried under its webhook-id, given up after its retries, and the call’s later events go on', async (t) => {
  const h = await createHarness(t, { deliveryRetry: { limit: 2, baseSeconds: 1, maxSeconds: 1 } })
  const receiver = await startEventReceiver(t, { verdict: (e) => (e.type === 'call.dialed' ? 'fail' : 'accept') })
  await register(h, receiver)
  const call = await insertCall(h, { status: 'COMPLETED' })
  await h.sql.begin((tx) => emitCallEvents(tx, h.queue.deliveries, 'call.dialed', [{ ...call, status: 'IN_PROGRESS' } as CallRow]))
  await h.sql.begin((tx) => emitCallEvents(tx, h.queue.deliveries, 'call.completed', [call]))
  await startDelivery(t, h)
  await waitFor('the completed event', async () => receiver.accepted().length === 1, 30_000)
  await settled(h)
  t.same(receiver.received.map((e) => e.type), ['call.dialed', 'call.dialed', 'call.dialed', 'call.completed'], 'three tries, then the next event')
  t.equal(new Set(receiver.received.filter((e) => e.type === 'call.dialed').map((e) => e.webhookId)).size, 1, 'one webhook-id for every try')
  const log = await h.sql<Array<DeliveryRow & { type: string }>>`
    SELECT d.*, e.type FROM event_deliveries d JOIN events e ON e.id = d.event_id ORDER BY e.seq`
  t.match(log, [
    { type: 'call.dialed', status: 'failed', attempts: 3, last_status_code: 503, last_error: 'answered 503', delivered_at: null },
    { type: 'call.completed', status: 'delivered', attempts: 1, last_status_code: 204, last_error: null },
  ])

  // Replayed by hand, it is sent again under the same webhook-id.
  receiver.received.length = 0
  const dialedId = log[0]!.event_id
  const replay = await h.call('POST', `/events/${dialedId}/replay`, {})
  t.equal(replay.status, 202)
  t.same(replay.body, { deliveries: 1 })
  await waitFor('the replay', async () => receiver.received.length >= 1, 30_000)
  t.equal(receiver.received[0]!.webhookId, dialedId)
  // Still refused: the replay has its own three tries, then it is given up again.
  await settled(h)
  t.equal(receiver.received.length, 3, 'three tries again')
  t.match((await deliveries(h)).find((d) => d.event_id === dialedId), { status: 'failed', attempts: 6, attempts_before_replay: 3 })
  t.equal((await h.call('POST', '/events/msg_00000000-0000-0000-0000-000000000000/replay')).status, 404)
  t.equal((await h.call('POST', '/events/nope/replay')).status, 400)
  t.equal((await h.call('POST', `/events/${dialedId}/replay`, { endpointId: crypto.randomUUID() })).body.code, 'endpoint_not_found')
})

t.test('each event has retries of its own: earlier events of its call failing do not use them up', async (t) => {
  // Retries were counted per delivery job, and one job carries every pending event of its call:
  // a call whose events each failed once gave up its third event after that event's first try
  // (events-e2e stalled on it, about one run in a hundred).
  const h = await createHarness(t, { deliveryRetry: { limit: 2, baseSeconds: 1, maxSeconds: 1 } })
  const tried = new Set<string>()
  // Every event fails its first try and gets through on its second.
  const receiver = await startEventReceiver(t, { verdict: (e) => (tried.has(e.webhookId) ? 'accept' : (tried.add(e.webhookId), 'fail')) })
  await register(h, receiver)
  const call = await insertCall(h, { status: 'COMPLETED' })
  const types = ['call.dialed', 'call.retry_scheduled', 'call.dialed', 'call.completed'] as const
  await h.sql.begin(async (tx) => {
    for (const type of types) await emitCallEvents(tx, h.queue.deliveries, type, [{ ...call, status: type === 'call.completed' ? 'COMPLETED' : 'IN_PROGRESS' } as CallRow])
  })
  await startDelivery(t, h)
  await settled(h)
  const log = await h.sql<Array<DeliveryRow & { type: string }>>`
    SELECT d.*, e.type FROM event_deliveries d JOIN events e ON e.id = d.event_id ORDER BY e.seq`
  t.same(log.map((d) => [d.type, d.status, d.attempts]), types.map((type) => [type, 'delivered', 2]), 'each delivered on its second try')
  t.same(receiver.accepted().map((e) => e.type), types, 'in the order written')
  // Each event enqueued a job of its own; the first sent them all, the others end finding
  // nothing to send. None is left waiting, retrying or failed.
  await waitFor('every delivery job to end', async () => {
    const [jobs] = await h.sql<{ n: number }[]>`
      SELECT count(*)::int AS n FROM pgboss.job WHERE name = 'event-deliveries' AND state NOT IN ('completed', 'cancelled')`
    return jobs!.n === 0
  }, 30_000)
  t.pass('no delivery job left behind')
})

t.test('a delivery job pg-boss failed (its worker gone on its last retry) stops blocking its call’s events at the next sweep', async (t) => {
  const h = await createHarness(t)
  const receiver = await startEventReceiver(t)
  await register(h, receiver)
  const call = await insertCall(h, { status: 'COMPLETED' })
  await h.sql.begin((tx) => emitCallEvents(tx, h.queue.deliveries, 'call.dialed', [{ ...call, status: 'IN_PROGRESS' } as CallRow]))
  // What pg-boss's expiry does to an active job on its last retry: failed, for good. Under
  // key_strict_fifo a failed job holds back every later job of its key.
  await h.sql`UPDATE pgboss.job SET state = 'failed', completed_on = now() WHERE name = 'event-deliveries'`
  await h.sql.begin((tx) => emitCallEvents(tx, h.queue.deliveries, 'call.completed', [call]))
  t.same(await h.queue.deliveries.fetch(h.sql, 10, 4), [], 'held back while the failed job is there')
  t.equal((await sweep(h.sql, h.queue, POLICY, {})).revivedDeliveries, 1, 'the sweep hands the call’s events to a fresh job')
  await startDelivery(t, h)
  await settled(h)
  t.same(receiver.accepted().map((e) => e.type), ['call.dialed', 'call.completed'], 'both sent, in order')
  t.equal((await sweep(h.sql, h.queue, POLICY, {})).revivedDeliveries, 0, 'nothing left to revive')
})

t.test('a receiver that does not answer in time fails that attempt; the retry gets through', async (t) => {
  const h = await createHarness(t)
  const receiver = await startEventReceiver(t, { verdict: (_, n) => (n === 1 ? 'hang' : 'accept') })
  await register(h, receiver)
  const call = await postCall(h)
  await h.call('POST', `/calls/${call.id}/cancel`)
  await startDelivery(t, h, { timeoutMs: 300 })
  await settled(h)
  t.equal(receiver.received.length, 2)
  t.equal(receiver.received[0]!.webhookId, receiver.received[1]!.webhookId)
  const [d] = await deliveries(h)
  t.match(d, { status: 'delivered', attempts: 2, last_status_code: 204 })
})

t.test('a removed endpoint gets nothing more; what was pending for it is marked failed', async (t) => {
  const h = await createHarness(t)
  const receiver = await startEventReceiver(t, { verdict: () => 'fail' })
  const endpoint = await register(h, receiver)
  const call = await postCall(h)
  await h.call('POST', `/calls/${call.id}/cancel`)
  await startDelivery(t, h)
  await waitFor('a first try', async () => receiver.received.length >= 1, 30_000)
  t.equal((await h.call('DELETE', `/event-endpoints/${endpoint.id}`)).status, 204)
  const [d] = await deliveries(h)
  t.match(d, { status: 'failed', last_error: 'endpoint removed' })
  const seen = receiver.received.length
  // The delivery job runs again after its backoff, finds the endpoint removed and ends: wait
  // for that, rather than for a while.
  await waitFor('the endpoint’s delivery jobs to end', async () => {
    const [row] = await h.sql<{ n: number }[]>`
      SELECT count(*)::int AS n FROM pgboss.job
      WHERE name = 'event-deliveries' AND data->>'endpointId' = ${endpoint.id} AND state IN ('created', 'retry', 'active')`
    return row!.n === 0
  }, 30_000)
  t.ok(receiver.received.length <= seen + 1, 'at most the attempt under way when it was removed')
})

t.test('during a rotation both secrets sign, so a receiver with either verifies', async (t) => {
  const h = await createHarness(t)
  const withOld = await startEventReceiver(t)
  const endpoint = await h.call('POST', '/event-endpoints', { url: withOld.url })
  withOld.secrets = [endpoint.body.secret]
  const rotated = await h.call('POST', `/event-endpoints/${endpoint.body.id}/rotate-secret`)
  const call = await postCall(h)
  await h.call('POST', `/calls/${call.id}/cancel`)
  await startDelivery(t, h)
  await settled(h)
  t.equal(withOld.accepted().length, 1, 'verified with the previous secret')
  withOld.secrets = [rotated.body.secret]
  const again = await h.call('POST', `/events/${withOld.received[0]!.webhookId}/replay`)
  t.equal(again.status, 202)
  await waitFor('the replay', async () => withOld.accepted().length === 2, 30_000)
  t.equal(withOld.rejected, 0, 'and with the new one')
})

t.test('the delivery log through the API', async (t) => {
  const h = await createHarness(t)
  const receiver = await startEventReceiver(t)
  const endpoint = await register(h, receiver)
  const ids: string[] = []
  for (let i = 0; i < 3; i++) {
    const call = await postCall(h, { to: `+1555600000${i}` })
    await h.call('POST', `/calls/${call.id}/cancel`)
    ids.push(call.id)
  }
  await startDelivery(t, h)
  await settled(h)
  const page1 = await h.call('GET', '/events?limit=2')
  t.equal(page1.status, 200)
  t.equal(page1.body.data.length, 2)
  t.same(page1.body.data.map((e: { callId: string }) => e.callId), [ids[2], ids[1]], 'newest first')
  t.match(page1.body.data[0], {
    type: 'call.cancelled',
    payload: { type: 'call.cancelled', data: { id: ids[2], status: 'CANCELLED' } },
    deliveries: [{ endpointId: endpoint.id, status: 'delivered', attempts: 1, lastStatusCode: 204, lastError: null, nextAttemptAt: null }],
  })
  const page2 = await h.call('GET', `/events?limit=2&cursor=${page1.body.nextCursor}`)
  t.same(page2.body.data.map((e: { callId: string }) => e.callId), [ids[0]])
  t.equal(page2.body.nextCursor, null)
  const one = await h.call('GET', `/events?callId=${ids[1]}`)
  t.same(one.body.data.map((e: { callId: string }) => e.callId), [ids[1]])
  const byId = await h.call('GET', `/events/${page1.body.data[0].id}`)
  t.same(byId.body, page1.body.data[0])
  t.equal((await h.call('GET', '/events?type=call.nope')).status, 400)
  t.equal((await h.call('GET', '/events?cursor=abc')).status, 400)
  t.equal((await h.call('GET', '/events/msg_00000000-0000-0000-0000-000000000000')).status, 404)
})

t.test('EVENT_WEBHOOK_URL: the env endpoint follows the environment, and leaves other processes\' alone', async (t) => {
  const h = await createHarness(t)
  const secretA = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'
  const secretB = 'whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD'
  const env = (url: string, secrets: string[]) => h.sql.begin((tx) => syncEnvEndpoint(tx, { url, secrets, eventTypes: null }))
  const rows = () => h.sql<{ url: string; secrets: string[]; disabled: boolean }[]>`
    SELECT url, secrets, disabled_at IS NOT NULL AS disabled FROM event_endpoints WHERE source = 'env' ORDER BY created_at`
  t.same(await env('https://a.example/hook', [secretA]), [], 'the first: no other endpoint')
  await Promise.all([env('https://a.example/hook', [secretA]), env('https://a.example/hook', [secretA])])
  t.same(await rows(), [{ url: 'https://a.example/hook', secrets: [secretA], disabled: false }], 'one row however many processes start')
  await env('https://a.example/hook', [secretB, secretA])
  t.same((await rows())[0]!.secrets, [secretB, secretA], 'a rotation in the environment')
  const others = await env('https://b.example/hook', [secretB])
  t.same(others.map((e) => e.url), ['https://a.example/hook'], 'another URL is answered with the endpoint already there')
  t.same(await rows(), [
    { url: 'https://a.example/hook', secrets: [secretB, secretA], disabled: false },
    { url: 'https://b.example/hook', secrets: [secretB], disabled: false },
  ], 'and both stay: removing one is the API\'s to do')
})

t.test('batch.completed once when the last two calls of a batch end at the same moment', async (t) => {
  // Each transaction ends one call and then looks whether the batch is done; without a lock,
  // each still sees the other's call open (not yet committed), and no one completes the batch.
  const h = await createHarness(t)
  await addEventSink(h) // these events are looked at: an endpoint takes them
  for (let round = 0; round < 10; round++) {
    const res = await h.call('POST', '/calls/batch', { calls: [{ to: `+1555610${round}001`, scriptId: 'x' }, { to: `+1555610${round}002`, scriptId: 'x' }] })
    const ids: string[] = res.body.items.map((i: { call: { id: string } }) => i.call.id)
    let arrived = 0
    let bothEnded!: () => void
    const barrier = new Promise<void>((resolve) => (bothEnded = resolve))
    await Promise.all(
      ids.map((id) =>
        h.sql.begin(async (tx) => {
          const [row] = await tx<CallRow[]>`
            UPDATE calls SET status = 'CANCELLED', ended_at = now(), job_id = NULL WHERE id = ${id} RETURNING *`
          if (++arrived === 2) bothEnded()
          await barrier
          await emitCallEvents(tx, h.queue.deliveries, 'call.cancelled', [row!])
        }),
      ),
    )
    const events = await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM events WHERE type = 'batch.completed' AND batch_id = ${res.body.batchId}`
    t.equal(events[0]!.n, 1, `round ${round}: batch.completed written once`)
    const [batch] = await h.sql<{ completed_at: Date | null }[]>`SELECT completed_at FROM call_batches WHERE id = ${res.body.batchId}`
    t.ok(batch!.completed_at, `round ${round}: the batch is complete`)
  }
})

t.test('calls of one batch end side by side: while others are open, no one locks the batch row, only one open call', async (t) => {
  // Every call that ended used to lock its batch's row to the end of its transaction, so a
  // batch's callbacks queued one behind the other. Now a transaction pins one other open call
  // of the batch (FOR SHARE): only that call's end waits for it.
  const h = await createHarness(t)
  await addEventSink(h)
  const res = await h.call('POST', '/calls/batch', { calls: [1, 2, 3, 4].map((n) => ({ to: `+1555620000${n}`, scriptId: 'x' })) })
  const batchId: string = res.body.batchId
  const ids: string[] = res.body.items.map((i: { call: { id: string } }) => i.call.id)
  const end = async (id: string, hold?: Promise<void>) =>
    h.sql.begin(async (tx) => {
      await tx`SET LOCAL lock_timeout = '2s'`
      const [row] = await tx<CallRow[]>`UPDATE calls SET status = 'CANCELLED', ended_at = now(), job_id = NULL WHERE id = ${id} RETURNING *`
      await emitCallEvents(tx, h.queue.deliveries, 'call.cancelled', [row!])
      await hold
    })
  let release!: () => void
  const held = new Promise<void>((r) => (release = r))
  const first = end(ids[0]!, held)
  const other = postgres(h.url, { max: 1, onnotice: () => {} })
  t.teardown(() => other.end())
  const lockable = (query: (tx: postgres.TransactionSql) => Promise<unknown>) =>
    other.begin(async (tx) => {
      await tx`SET LOCAL lock_timeout = '100ms'`
      await query(tx)
    }).then(() => true, (err) => (err.code === '55P03' ? false : Promise.reject(err)))
  // Wait until the first transaction has pinned a call.
  let pinned: string[] = []
  for (let i = 0; i < 100 && pinned.length === 0; i++) {
    const free = await Promise.all(ids.slice(1).map((id) => lockable((tx) => tx`SELECT 1 FROM calls WHERE id = ${id} FOR UPDATE`)))
    pinned = ids.slice(1).filter((_, i) => !free[i])
  }
  t.equal(pinned.length, 1, 'the open transaction pins one other open call of the batch')
  t.ok(await lockable((tx) => tx`SELECT 1 FROM call_batches WHERE id = ${batchId} FOR NO KEY UPDATE`), 'and not the batch row')
  const unpinned = ids.slice(1).filter((id) => !pinned.includes(id))
  await end(unpinned[0]!)
  t.pass('another call of the batch ended while that transaction was open')
  release()
  await first
  // The last two at once: the batch completes, once.
  await Promise.all([end(pinned[0]!), end(unpinned[1]!)])
  const events = await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM events WHERE type = 'batch.completed' AND batch_id = ${batchId}`
  t.equal(events[0]!.n, 1, 'batch.completed written once')
})

t.test('batch.completed exactly once however the calls of a batch end at once (30 batches of 6)', async (t) => {
  const h = await createHarness(t)
  await addEventSink(h)
  const batches = await Promise.all(Array.from({ length: 30 }, (_, b) =>
    h.call('POST', '/calls/batch', { calls: Array.from({ length: 6 }, (_, i) => ({ to: `+1555630${String(b).padStart(2, '0')}0${i}`, scriptId: 'x' })) })))
  await Promise.all(batches.flatMap((res) =>
    res.body.items.map(async ({ call }: { call: { id: string } }) => {
      await new Promise((r) => setTimeout(r, Math.random() * 20))
      await h.sql.begin(async (tx) => {
        const [row] = await tx<CallRow[]>`UPDATE calls SET status = 'CANCELLED', ended_at = now(), job_id = NULL WHERE id = ${call.id} RETURNING *`
        await new Promise((r) => setTimeout(r, Math.random() * 10))
        await emitCallEvents(tx, h.queue.deliveries, 'call.cancelled', [row!])
      })
    })))
  const rows = await h.sql<{ id: string; completed: boolean; events: number }[]>`
    SELECT b.id, b.completed_at IS NOT NULL AS completed,
           (SELECT count(*)::int FROM events e WHERE e.batch_id = b.id AND e.type = 'batch.completed') AS events
    FROM call_batches b`
  t.equal(rows.length, 30)
  t.same(rows.filter((r) => !r.completed || r.events !== 1), [], 'every batch completed, with one batch.completed')
})

t.test('a batch none of whose items became a call is complete at once', async (t) => {
  const h = await createHarness(t)
  await addEventSink(h) // these events are looked at: an endpoint takes them
  const res = await h.call('POST', '/calls/batch', { calls: [{ to: 'nope', scriptId: 'x' }] })
  t.equal(res.status, 201)
  t.equal(res.body.created, 0)
  const read = await h.call('GET', `/calls/batch/${res.body.batchId}`)
  t.ok(read.body.completedAt, 'completed')
  const [event] = await h.sql<{ type: string }[]>`SELECT type FROM events WHERE batch_id = ${res.body.batchId}`
  t.equal(event?.type, 'batch.completed')
})

t.test('a final report that comes before the dial’s 202 was recorded still tells call.dialed first', async (t) => {
  const calling = { window: null, caps: { perDay: 0, perWeek: 0 }, retries: { BUSY: { limit: 1, delaySeconds: 60 } } }
  const h = await createHarness(t, { calling })
  await addEventSink(h) // these events are looked at: an endpoint takes them
  const w = await registerWorker(h)
  const typesOf = async (id: string) => (await h.sql<{ type: string }[]>`SELECT type FROM events WHERE call_id = ${id} ORDER BY seq`).map((e) => e.type)

  // Claimed, its request sent, the provider's callback first: the worker has not recorded the 202.
  const completed = await inFlightCall(h, w, newPhone(), null)
  const first = await sendSigned(h, completed.id, { callId: 'prov-early-1', status: 'COMPLETED' })
  t.equal(first.body.verdict, 'applied', JSON.stringify(first.body))
  t.same(await typesOf(completed.id), ['call.dialed', 'call.completed'])
  const [row] = await h.sql<CallRow[]>`SELECT * FROM calls WHERE id = ${completed.id}`
  t.equal(row!.provider_call_id, 'prov-early-1')
  t.ok(row!.dialed_at, 'the call was dialed: the provider said how it ended')
  // The worker's late record of the 202 changes nothing and tells nothing more.
  const late = await recordDialResult(h.sql, h.queue, POLICY, completed, { kind: 'accepted', providerCallId: 'prov-early-1' })
  t.equal(late.outcome, 'stale')
  t.same(await typesOf(completed.id), ['call.dialed', 'call.completed'])

  const busy = await inFlightCall(h, w, newPhone(), null)
  t.equal((await sendSigned(h, busy.id, { callId: 'prov-early-2', status: 'BUSY' })).body.status, 'PENDING')
  t.same(await typesOf(busy.id), ['call.dialed', 'call.retry_scheduled'], 'before a retry too')

  // A call already dialed gets no second call.dialed.
  const normal = await inFlightCall(h, w, newPhone(), 'prov-normal')
  await sendSigned(h, normal.id, { callId: 'prov-normal', status: 'COMPLETED' })
  t.same(await typesOf(normal.id), ['call.dialed', 'call.completed'])
})
