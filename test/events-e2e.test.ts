import t from 'tap'
import type { EventRow } from '../src/store/events.ts'
import { listen } from '../src/platform/serve.ts'
import { startEventReceiver, type ReceivedEvent } from './support/event-receiver.ts'
import { createHarness, startSimulator, workerEnv, type Harness } from './support/harness.ts'
import { runBinary, waitFor } from './support/processes.ts'

// Status events from two worker processes to a receiver that fails about half the time (503s and
// dropped connections), judged from the receiver's side: every event arrives, each accepted
// exactly once (a repeat only as a retry under the same webhook-id), one call's events in the
// order they happened, never more than EVENT_MAX_IN_FLIGHT_PER_ENDPOINT at once, every payload as
// the database holds it; and the events tell each call's story as the calls table does.

const CALLS = 120
const PHONES = 30
const PER_ENDPOINT = 2

t.test('every event delivered exactly once, in order, through a receiver that fails half the time', async (t) => {
  const h = await createHarness(t, { calling: { window: null, caps: { perDay: 0, perWeek: 0 }, retries: { BUSY: { limit: 1, delaySeconds: 1 } } } })
  const api = await listen(h.app, { host: '127.0.0.1', port: 0 })
  t.teardown(() => api.close())
  const sim = await startSimulator(t, {
    minDurationMs: 50,
    maxDurationMs: 300,
    statusMix: [
      { status: 'COMPLETED', weight: 6 },
      { status: 'BUSY', weight: 2 },
      { status: 'FAILED', weight: 1 },
      { status: 'NO_ANSWER', weight: 1 },
    ],
  })
  let seed = 7
  const random = () => ((seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31)
  const receiver = await startEventReceiver(t, {
    verdict: () => {
      const r = random()
      return r < 0.35 ? 'fail' : r < 0.5 ? 'drop' : 'accept'
    },
  })
  const registered = await h.call('POST', '/event-endpoints', { url: receiver.url })
  t.equal(registered.status, 201)
  receiver.secrets = [registered.body.secret]

  const env = workerEnv(h, sim.url, api.port, {
    MAX_CONCURRENT_CALLS: '10',
    RETRY_BUSY: '1@1s',
    EVENT_ALLOW_INSECURE_URLS: 'true',
    EVENT_MAX_IN_FLIGHT_PER_ENDPOINT: String(PER_ENDPOINT),
    // Each event's retries are its own: at one failure in two, 40 in a row do not happen.
    EVENT_RETRY_LIMIT: '40',
    EVENT_RETRY_BASE_SECONDS: '1',
    EVENT_RETRY_MAX_SECONDS: '1',
    EVENT_TIMEOUT_MS: '2000',
  })
  const workers = [1, 2].map(() => runBinary(t, 'worker', env))

  // Half as one batch, half one by one.
  const phone = (i: number) => `+1555400${String(i % PHONES).padStart(4, '0')}`
  const batch = await h.call('POST', '/calls/batch', { calls: Array.from({ length: CALLS / 2 }, (_, i) => ({ to: phone(i), scriptId: 'events' })) })
  t.equal(batch.status, 201)
  t.equal(batch.body.created, CALLS / 2)
  for (let i = CALLS / 2; i < CALLS; i++) t.equal((await h.call('POST', '/calls', { to: phone(i), scriptId: 'events' })).status, 201)

  // Budgets that fit in tap's timeout: a run that stalls fails with what it was waiting for.
  const stalled = async (err: unknown) => new Error(`${(err as Error).message}\n${await whereItStands(h.sql, workers)}`)
  try {
    await waitFor('every call to end', async () => {
      const [row] = await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM calls WHERE status IN ('PENDING', 'IN_PROGRESS')`
      return row!.n === 0
    }, 120_000)
    await waitFor('every event to be sent', async () => {
      const [row] = await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM event_deliveries WHERE status = 'pending'`
      return row!.n === 0
    }, 90_000)
  } catch (err) {
    throw await stalled(err)
  }

  t.same(await h.sql`SELECT event_id, attempts, last_error FROM event_deliveries WHERE status = 'failed'`, [], 'none given up')

  const events = await h.sql<EventRow[]>`SELECT * FROM events ORDER BY seq`
  const accepted = receiver.accepted()
  t.ok(receiver.received.length > accepted.length * 1.5, `the receiver failed many attempts (${receiver.received.length} for ${accepted.length} events)`)
  t.equal(receiver.rejected, 0, 'every request verified with the standardwebhooks library')
  t.same(receiver.duplicates(), [], 'no event accepted twice')
  t.same(accepted.map((e) => e.webhookId).sort(), events.map((e) => e.id).sort(), 'every event accepted, and nothing else')
  const byId = new Map(events.map((e) => [e.id, e]))
  t.same(receiver.received.filter((r) => !byId.has(r.webhookId)), [], 'every attempt carried the webhook-id of a stored event')
  t.same(
    accepted.filter((r) => JSON.stringify(r.payload) !== JSON.stringify(byId.get(r.webhookId)!.payload)).map((r) => r.webhookId),
    [],
    'each payload as stored',
  )
  t.ok(receiver.maxInFlight <= PER_ENDPOINT, `at most ${PER_ENDPOINT} deliveries under way at once (saw ${receiver.maxInFlight})`)

  // One call's events, as accepted, in the order they were written.
  const orderOf = (list: Array<{ callId: string | null; webhookId: string }>) => {
    const m = new Map<string, string[]>()
    for (const e of list) if (e.callId) m.set(e.callId, [...(m.get(e.callId) ?? []), e.webhookId])
    return m
  }
  const written = orderOf(events.map((e) => ({ callId: e.call_id, webhookId: e.id })))
  const received = orderOf(accepted)
  const outOfOrder = [...written].filter(([callId, ids]) => JSON.stringify(received.get(callId)) !== JSON.stringify(ids))
  t.same(outOfOrder, [], 'each call’s events arrived in order')

  // Each call's events tell what the calls table says: a dial each, retries, one final event.
  const calls = await h.sql<{ id: string; status: string; dial: number; batch_id: string | null }[]>`SELECT id, status, dial, batch_id FROM calls`
  const typesOf = new Map<string, string[]>()
  for (const e of accepted as ReceivedEvent[]) if (e.callId) typesOf.set(e.callId, [...(typesOf.get(e.callId) ?? []), e.type])
  const wrong = calls.filter((c) => {
    const types = typesOf.get(c.id) ?? []
    const story = [...Array(c.dial).keys()].flatMap((i) => (i < c.dial - 1 ? ['call.dialed', 'call.retry_scheduled'] : ['call.dialed']))
    return JSON.stringify(types) !== JSON.stringify([...story, `call.${c.status.toLowerCase()}`])
  })
  t.same(wrong.map((c) => ({ ...c, types: typesOf.get(c.id) })), [], 'dialed (and retry_scheduled) then the final status, once each')
  t.ok(calls.some((c) => c.dial > 1), 'some calls were retried after BUSY')

  const batchEvents = accepted.filter((e) => e.type === 'batch.completed')
  t.equal(batchEvents.length, 1, 'batch.completed once')
  t.equal(batchEvents[0]?.payload.data.id, batch.body.batchId)
  t.equal(batchEvents[0]?.payload.data.completedAt !== null, true)
  const lastCallEvent = events.filter((e) => e.batch_id && e.call_id).reduce((m, e) => Math.max(m, Number(e.seq)), 0)
  t.ok(Number(byId.get(batchEvents[0]!.webhookId)!.seq) > lastCallEvent, 'written after the last event of its calls')
  t.same(batchEvents[0]?.payload.data.byStatus, Object.fromEntries(
    Object.entries(Object.groupBy(calls.filter((c) => c.batch_id), (c) => c.status)).map(([status, list]) => [status, list!.length]),
  ), 'with its calls by status')

  // The delivery log says what happened.
  const log = await h.sql<{ event_id: string; attempts: number; last_status_code: number | null; delivered_at: Date | null }[]>`
    SELECT event_id, attempts, last_status_code, delivered_at FROM event_deliveries`
  t.equal(log.length, events.length)
  const attemptsSeen = new Map<string, number>()
  for (const r of receiver.received) attemptsSeen.set(r.webhookId, (attemptsSeen.get(r.webhookId) ?? 0) + 1)
  t.same(
    log.filter((d) => d.last_status_code !== 204 || !d.delivered_at || d.attempts < attemptsSeen.get(d.event_id)!),
    [],
    'each logged delivered, with at least as many attempts as the receiver saw',
  )

  for (const w of workers) w.child.kill('SIGTERM')
  t.same(await Promise.all(workers.map((w) => w.exited)), [0, 0])
})

/** What a stalled run was waiting on: the calls not yet final, the deliveries not yet made, their jobs, and what the workers logged. */
async function whereItStands(sql: Harness['sql'], workers: Array<{ output(): string }>): Promise<string> {
  const calls = await sql`
    SELECT c.id, c.status, c.dial, c.attempts, c.next_attempt_at, c.provider_call_id, j.state AS job_state, j.start_after AS job_start_after
    FROM calls c LEFT JOIN pgboss.job j ON j.id = c.job_id
    WHERE c.status IN ('PENDING', 'IN_PROGRESS') LIMIT 20`
  const deliveries = await sql`
    SELECT d.event_id, e.type, e.call_id, d.status, d.attempts, d.last_error, d.next_attempt_at
    FROM event_deliveries d JOIN events e ON e.id = d.event_id
    WHERE d.status <> 'delivered' ORDER BY e.seq LIMIT 20`
  const jobs = await sql`
    SELECT name, state, count(*)::int AS n, min(start_after) AS first_due, min(started_on) AS first_started
    FROM pgboss.job WHERE state <> 'completed' GROUP BY name, state`
  return JSON.stringify({ calls, deliveries, jobs, workerLogs: workers.map((w) => w.output().slice(-4_000)), now: new Date() }, null, 1)
}
