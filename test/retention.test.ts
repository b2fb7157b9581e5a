import t from 'tap'
import { prune } from '../src/services/dispatch/sweeps.ts'
import { loadSettings } from '../src/settings.ts'
import { addEventSink, createHarness } from './support/harness.ts'
import { insertCall } from './support/factory.ts'

// Callbacks and sent events are kept for CALLBACK_RETENTION and EVENT_RETENTION, then deleted
// by the workers' sweeps, the oldest first and a batch at a time; an event still being
// delivered stays however old.

t.test('CALLBACK_RETENTION and EVENT_RETENTION are durations, 30 days by default', async (t) => {
  t.same(loadSettings({}).retention, { callbackSeconds: 30 * 86_400, eventSeconds: 30 * 86_400 })
  t.same(loadSettings({ CALLBACK_RETENTION: '1m', EVENT_RETENTION: '12h' }).retention, { callbackSeconds: 60, eventSeconds: 12 * 3600 })
  t.throws(() => loadSettings({ EVENT_RETENTION: 'forever' }), { name: 'ConfigError', message: /EVENT_RETENTION/ })
  t.throws(() => loadSettings({ CALLBACK_RETENTION: '0s' }), { name: 'ConfigError', message: /CALLBACK_RETENTION/ })
})

t.test('old callbacks and settled events go, a batch at a time; recent ones and pending deliveries stay', async (t) => {
  const h = await createHarness(t)
  const endpoint = await addEventSink(h)
  const call = await insertCall(h, { status: 'COMPLETED' })
  const ago = (minutes: number) => new Date(Date.now() - minutes * 60_000)
  for (const [i, minutes] of [[1, 120], [2, 90], [3, 61], [4, 10]] as const) {
    await h.sql`INSERT INTO callbacks (received_at, call_id, verdict, dedupe_key) VALUES (${ago(minutes)}, ${call.id}, 'applied', ${`k${i}`})`
  }
  const event = async (id: string, minutes: number, delivery: 'delivered' | 'failed' | 'pending' | null, settledMinutesAgo = minutes) => {
    await h.sql`INSERT INTO events (id, type, call_id, payload, created_at) VALUES (${id}, 'call.completed', ${call.id}, '{}', ${ago(minutes)})`
    if (delivery) {
      await h.sql`
        INSERT INTO event_deliveries (event_id, endpoint_id, status, delivered_at, last_attempt_at)
        VALUES (${id}, ${endpoint}, ${delivery}, ${delivery === 'delivered' ? ago(settledMinutesAgo) : null}, ${ago(settledMinutesAgo)})`
    }
  }
  await event('msg_old_delivered', 120, 'delivered')
  await event('msg_old_failed', 100, 'failed')
  await event('msg_old_pending', 100, 'pending')
  await event('msg_old_but_delivered_lately', 100, 'delivered', 5)
  await event('msg_recent', 5, 'delivered')

  const hour = { callbackSeconds: 3600, eventSeconds: 3600 }
  t.same(await prune(h.sql, hour, 1), { callbacks: 1, events: 1 }, 'one of each, the oldest, per batch')
  t.same((await h.sql`SELECT dedupe_key FROM callbacks ORDER BY received_at`).map((r) => r.dedupe_key), ['k2', 'k3', 'k4'])
  t.same(await prune(h.sql, hour), { callbacks: 2, events: 1 }, 'then the rest past their time')
  t.same(await prune(h.sql, hour), { callbacks: 0, events: 0 }, 'and nothing more')
  t.same((await h.sql`SELECT dedupe_key FROM callbacks`).map((r) => r.dedupe_key), ['k4'], 'the recent callback stays')
  t.same(
    (await h.sql`SELECT id FROM events ORDER BY id`).map((r) => r.id),
    ['msg_old_but_delivered_lately', 'msg_old_pending', 'msg_recent'],
    'counted from delivery or giving up; pending stays',
  )
  t.equal((await h.sql`SELECT count(*)::int AS n FROM event_deliveries WHERE event_id IN ('msg_old_delivered', 'msg_old_failed')`)[0]!.n, 0, 'their deliveries went with them')
})
