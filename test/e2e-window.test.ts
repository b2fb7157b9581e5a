import t from 'tap'
import { createTestDatabase } from './support/db.ts'
import { startSimulator, WEBHOOK_SECRET } from './support/harness.ts'
import { freePort, runBinary, waitFor } from './support/processes.ts'

// `bin/orchestrator all` with CALLING_WINDOW set: calls to London numbers created before the
// window opens on London's clock wait (neither dialed nor failed) and are dialed once it opens,
// as the provider's own record of when each request reached it shows.

/** HH:MM:SS on London's clock, `seconds` from now. */
function londonClock(seconds: number): string {
  return new Intl.DateTimeFormat('en-GB', { timeZone: 'Europe/London', hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' })
    .format(new Date(Date.now() + seconds * 1000))
}

t.test('calls wait outside CALLING_WINDOW and are dialed inside it', async (t) => {
  const db = await createTestDatabase(t)
  const port = await freePort()
  const opensIn = 15
  // The window opens at this second (HH:MM:SS drops the milliseconds).
  const opening = Math.floor((Date.now() + opensIn * 1000) / 1000) * 1000
  const base = `http://127.0.0.1:${port}`
  const sim = await startSimulator(t, { minDurationMs: 50, maxDurationMs: 200 })
  const proc = runBinary(t, 'all', {
    DATABASE_URL: db.url,
    DATABASE_POOL_MAX: '5',
    PORT: String(port),
    HOST: '127.0.0.1',
    PROVIDER_BASE_URL: sim.url,
    PUBLIC_BASE_URL: base,
    WEBHOOK_SECRET,
    WORKER_POLL_MS: '500',
    CALLING_WINDOW: `sun-sat ${londonClock(opensIn)}-${londonClock(opensIn + 3600)}`,
  })
  await waitFor('the API', async () => (await fetch(`${base}/readyz`).catch(() => undefined))?.ok, 60_000)
  const ids: string[] = []
  for (let i = 0; i < 10; i++) {
    const res = await fetch(`${base}/calls`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ to: `+4420790000${String(i).padStart(2, '0')}`, scriptId: 'window' }),
    })
    const body = (await res.json()) as { id: string; waitingFor: string; nextAttemptAt: string; timeZones: string[] }
    t.equal(res.status, 201)
    t.equal(body.waitingFor, 'callingWindow', 'it waits for the window')
    t.equal(body.nextAttemptAt, new Date(opening).toISOString(), 'until it opens')
    t.same(body.timeZones, ['Europe/London'])
    ids.push(body.id)
  }

  await waitFor('every call to end', async () => {
    const [open] = await db.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM calls WHERE status <> 'COMPLETED'`
    return open!.n === 0
  }, 90_000)
  const dialed = await db.sql<{ started_at: Date }[]>`SELECT started_at FROM call_dials`
  t.equal(dialed.length, 10, 'each dialed once')
  t.ok(dialed.every((d) => d.started_at.getTime() >= opening), 'and every one inside the window, by the database’s clock')
  t.equal(sim.dials.length, 10, 'the provider saw ten requests')
  t.same(sim.dials.filter((d) => d.at < opening).map((d) => new Date(d.at).toISOString()), [], 'none before the window opened, by its own clock')
  proc.child.kill('SIGTERM')
  t.equal(await proc.exited, 0)
})
