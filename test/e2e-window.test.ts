import t from 'tap'
import { createTestDatabase } from './support/db.ts'
import { startSimulator, WEBHOOK_SECRET } from './support/harness.ts'
import { freePort, runBinary, waitFor } from './support/processes.ts'

// `bin/orchestrator all` with CALLING_WINDOW set: calls to London numbers created outside the
// window on London's clock wait (neither dialed nor failed), and once CALLING_WINDOW moves to
// a window that opens in a few seconds they are dialed when it opens, as the provider's own
// record of when each request reached it shows.

/** HH:MM:SS on London's clock, `seconds` from now. */
function londonClock(seconds: number): string {
  return new Intl.DateTimeFormat('en-GB', { timeZone: 'Europe/London', hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' })
    .format(new Date(Date.now() + seconds * 1000))
}

t.test('calls wait outside CALLING_WINDOW and are dialed inside it', async (t) => {
  const db = await createTestDatabase(t)
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const sim = await startSimulator(t, { minDurationMs: 50, maxDurationMs: 200 })
  // A window's start is HH:MM:SS on London's clock: the instant it names, `seconds` from now.
  const at = (seconds: number) => Math.floor((Date.now() + seconds * 1000) / 1000) * 1000
  const start = (window: string) =>
    runBinary(t, 'all', {
      DATABASE_URL: db.url,
      DATABASE_CONNECTIONS: '8',
      PORT: String(port),
      HOST: '127.0.0.1',
      PROVIDER_BASE_URL: sim.url,
      PUBLIC_BASE_URL: base,
      WEBHOOK_SECRET,
      WORKER_POLL_MS: '500',
      CALLING_WINDOW: window,
    })

  // First under a window that opens in twelve hours: the calls made now wait for it. Nothing
  // here depends on how long a start takes: the wait is twelve hours.
  const far = at(12 * 3600)
  const first = start(`sun-sat ${londonClock(12 * 3600)}-${londonClock(13 * 3600)}`)
  await waitFor('the API', async () => (await fetch(`${base}/readyz`).catch(() => undefined))?.ok, 60_000)
  for (let i = 0; i < 10; i++) {
    const res = await fetch(`${base}/calls`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ to: `+4420790000${String(i).padStart(2, '0')}`, scriptId: 'window' }),
    })
    const body = (await res.json()) as { id: string; waitingFor: string; nextAttemptAt: string; timeZones: string[] }
    t.equal(res.status, 201)
    t.equal(body.waitingFor, 'callingWindow', 'it waits for the window')
    t.equal(body.nextAttemptAt, new Date(far).toISOString(), 'until it opens')
    t.same(body.timeZones, ['Europe/London'])
  }
  first.child.kill('SIGTERM')
  t.equal(await first.exited, 0)

  // Then under one that opens in a few seconds (CALLING_WINDOW changed): the worker moves the
  // waiting calls to it, and they are dialed once it has opened, whenever this start is done.
  const opening = at(3)
  const second = start(`sun-sat ${londonClock(3)}-${londonClock(3603)}`)
  await waitFor('every call to end', async () => {
    const [open] = await db.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM calls WHERE status <> 'COMPLETED'`
    return open!.n === 0
  }, 90_000)
  const dialed = await db.sql<{ started_at: Date }[]>`SELECT started_at FROM call_dials`
  t.equal(dialed.length, 10, 'each dialed once')
  t.ok(dialed.every((d) => d.started_at.getTime() >= opening), 'and every one inside the window, by the database’s clock')
  t.equal(sim.dials.length, 10, 'the provider saw ten requests')
  t.same(sim.dials.filter((d) => d.at < opening).map((d) => new Date(d.at).toISOString()), [], 'none before the window opened, by its own clock')
  second.child.kill('SIGTERM')
  t.equal(await second.exited, 0)
})
