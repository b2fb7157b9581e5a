import t from 'tap'
import { createTestDatabase } from './support/db.ts'
import { freePort, runBinary, waitFor } from './support/processes.ts'

// The README's way of running it: bin/orchestrator all, no provider configured, so the
// built-in simulator takes the calls, here with every fault switched on.


t.test('all mode with the simulator and faults: every call ends, the limits hold', async (t) => {
  const db = await createTestDatabase(t)
  const port = await freePort()
  const proc = runBinary(t, 'all', {
    DATABASE_URL: db.url,
    DATABASE_CONNECTIONS: '8', // several processes share the test server's 100 connections
    PORT: String(port),
    HOST: '127.0.0.1',
    API_TOKENS: 'e2e-token',
    ALLOW_SHORT_TOKENS: 'true',
    MAX_CONCURRENT_CALLS: '30',
    RETRY_BASE_SECONDS: '1',
    RETRY_MAX_SECONDS: '2',
    PROVIDER_TIMEOUT_MS: '1000',
    WORKER_POLL_MS: '1000',
    // A request the simulator hangs on has an unknown outcome: its call is held this long.
    CALL_TIMEOUT_SECONDS: '5',
    SIMULATOR_MIN_DURATION_MS: '50',
    SIMULATOR_MAX_DURATION_MS: '400',
    SIMULATOR_STATUS_MIX: 'COMPLETED:8,FAILED:1,BUSY:0.5,NO_ANSWER:0.5',
    SIMULATOR_5XX_RATE: '0.1',
    SIMULATOR_TIMEOUT_RATE: '0.02',
    SIMULATOR_429_RATE: '0.05',
    SIMULATOR_DUPLICATE_CALLBACK_RATE: '0.2',
    SIMULATOR_EARLY_CALLBACK_RATE: '0.1',
    SIMULATOR_LATE_CALLBACK_RATE: '0.1',
  })
  const base = `http://127.0.0.1:${port}`
  const auth = { authorization: 'Bearer e2e-token' }
  await waitFor('the API', async () => (await fetch(`${base}/readyz`).catch(() => undefined))?.ok, 60_000)
  const simulatorUrl = /"simulatorUrl":"([^"]+)"/.exec(proc.output())?.[1]
  t.ok(simulatorUrl, 'the process says it is using the simulator')

  const phones = 30
  const responses = await Promise.all(
    Array.from({ length: 300 }, (_, i) =>
      fetch(`${base}/calls`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...auth },
        body: JSON.stringify({ to: `+4420700${String(i % phones).padStart(5, '0')}`, scriptId: 'e2e', metadata: { i } }),
      }),
    ),
  )
  t.ok(responses.every((r) => r.status === 201), 'all 300 calls accepted')

  const metrics = await waitFor('every call to end', async () => {
    const m = (await (await fetch(`${base}/metrics`, { headers: auth })).json()) as {
      calls: Record<string, number>
      inFlight: number
    }
    return m.calls.PENDING === 0 && m.calls.IN_PROGRESS === 0 ? m : undefined
  }, 300_000)
  t.equal(metrics.calls.COMPLETED! + metrics.calls.FAILED! + metrics.calls.EXPIRED!, 300)
  t.ok(metrics.calls.COMPLETED! > 0)
  const [reported] = await db.sql<{ n: number }[]>`
    SELECT count(*)::int AS n FROM calls WHERE status = 'FAILED' AND provider_status IN ('FAILED', 'BUSY', 'NO_ANSWER')`
  t.ok(reported!.n > 0, 'calls the provider reported as failed ended FAILED')

  const stats = (await (await fetch(`${simulatorUrl}/stats`)).json()) as Record<string, number>
  t.ok(stats.maxInFlight! <= 30, `simulator saw at most 30 at once (${stats.maxInFlight})`)
  t.equal(stats.maxInFlightPerPhone, 1, 'never two at once for one phone')
  t.equal(stats.keysAcceptedTwice, 0, 'no idempotency key placed twice')
  t.equal(stats.callsPlacedTwice, 0, 'no call request placed twice')
  t.equal(stats.phoneOverlaps, 0, 'no call placed while its phone had one live')
  t.equal(stats.callbacksFailed, 0, 'every callback the simulator sent was accepted')

  const [dups] = await db.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM callbacks WHERE verdict = 'already_final' OR repeats > 0`
  t.ok(dups!.n > 0, 'duplicated and late callbacks arrived and changed nothing')
  const [forged] = await db.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM callbacks WHERE verdict = 'rejected'`
  t.equal(forged!.n, 0, 'the simulator signs with the generated secret the API checks')

  proc.child.kill('SIGTERM')
  t.equal(await proc.exited, 0, 'SIGTERM stops it cleanly')
})
