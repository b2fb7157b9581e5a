import type { Test } from 'tap'
import type { ProviderClient } from '../../src/provider/client.ts'
import type { ProviderWebhook } from '../../src/provider/webhook.ts'
import { metrics } from '../../src/platform/metrics.ts'
import { listen } from '../../src/platform/serve.ts'
import { startDispatcher } from './dispatcher.ts'
import type { CreateFault, FakeVoiceAi } from './fake-voice-ai.ts'
import { newPhone } from './factory.ts'
import { createHarness } from './harness.ts'
import { freePort, runBinary, waitFor } from './processes.ts'
import { createTestDatabase } from './db.ts'

// One scenario for every provider without idempotency keys (test/vapi.test.ts,
// test/retell.test.ts): a worker dials 24 calls over 6 phones at a limit of 4 through a fake of
// the provider's API whose first create of each call meets, in turn: a 502 after placing, a
// dropped connection after placing, an answer after the client gave up, a 502 without placing,
// and no fault (twice). Judged from the provider's side.

const FAULTS: CreateFault[] = ['502-after', 'drop-after', 'late', '502-before', 'none', 'none']
const TIMEOUT_MS = 400

export async function throughFaults<Body>(
  t: Test,
  setup: {
    webhook: ProviderWebhook
    /** The fake, started (and stopped at the end), with these faults and end reasons. */
    fake: (o: { fault: (n: number, body: Body) => CreateFault; endReason: (body: Body) => string; durationMs: number; lateMs: number; listDelayMs: number }) => Promise<FakeVoiceAi<Body>>
    /** The call's metadata.i, as the provider got it. */
    indexOf: (body: Body) => number
    /** The dial a create is for, as the provider got it. */
    dialOf: (body: Body) => string
    client: (fakeUrl: string, publicBaseUrl: string, timeoutMs: number) => ProviderClient
    /** The provider's end reasons, in turn, with the providerStatus each must become. */
    reasons: Array<[string, string]>
  },
): Promise<void> {
  const LIMIT = 4
  const h = await createHarness(t, { webhook: setup.webhook, maxConcurrentCalls: LIMIT })
  const api = await listen(h.app, { host: '127.0.0.1', port: 0 })
  t.teardown(async () => void (await api.close()))
  const seen = new Set<string>()
  const fake = await setup.fake({
    // Longer than a resend's backoff (1 s): the call is still live when it is looked for.
    durationMs: 1_500,
    lateMs: 700,
    listDelayMs: 100,
    fault: (_n, body) => {
      const dial = setup.dialOf(body)
      if (seen.has(dial)) return 'none'
      seen.add(dial)
      return FAULTS[setup.indexOf(body) % FAULTS.length]!
    },
    endReason: (body) => setup.reasons[setup.indexOf(body) % setup.reasons.length]![0],
  })
  const client = setup.client(fake.url, `http://127.0.0.1:${api.port}`, TIMEOUT_MS)
  await startDispatcher(t, h, fake.url, {
    provider: client,
    pollMs: 100,
    maxConcurrentCalls: LIMIT,
    leaseMs: 4 * TIMEOUT_MS + 5_000,
    settleMs: TIMEOUT_MS,
    retryBaseSeconds: 1,
    retryMaxSeconds: 1,
    maxAttempts: 4,
  })

  const looked = async (result: string) => (await metrics.lookups.get()).values.find((v) => v.labels.result === result)?.value ?? 0
  const requested = async () => (await metrics.providerRequests.get()).values.reduce((n, v) => n + v.value, 0)
  const before = { found: await looked('found'), none: await looked('none'), requests: await requested() }
  const phones = Array.from({ length: 6 }, () => newPhone())
  const ids: string[] = []
  for (let i = 0; i < 24; i++) {
    const res = await h.call('POST', '/calls', { to: phones[i % phones.length], scriptId: 'agent-1', metadata: { i } })
    t.equal(res.status, 201)
    ids.push(res.body.id)
  }
  await waitFor('every call ended', async () => (await h.sql`SELECT 1 FROM calls WHERE id IN ${h.sql(ids)} AND status IN ('PENDING', 'IN_PROGRESS')`).length === 0, 60_000)

  t.same(fake.placedTwice(), [], 'no dial placed twice')
  t.ok(fake.maxLive <= LIMIT, `at most ${LIMIT} live at the provider (${fake.maxLive})`)
  t.equal(fake.phoneOverlaps, 0, 'never two live on one phone')
  t.equal(fake.calls.size, 24, 'every call placed once')
  // Of each six calls, three first creates placed the call without our learning its id, and one placed nothing.
  t.equal((await looked('found')) - before.found, 12, 'the 12 calls placed by an unanswered create were found and adopted')
  t.equal((await looked('none')) - before.none, 8, 'for the 4 whose create placed nothing, two looks found nothing')
  t.equal(fake.creates.length, 28, 'and only those 4 were sent again')
  t.equal((await requested()) - before.requests, fake.creates.length, 'orchestrator_provider_requests_total counts the creates sent, not the calls adopted')
  const rows = await h.sql<{ provider_status: string; metadata: { i: number } }[]>`SELECT provider_status, metadata FROM calls WHERE id IN ${h.sql(ids)}`
  t.same(rows.filter((r) => r.provider_status !== setup.reasons[r.metadata.i % setup.reasons.length]![1]), [], "every call's providerStatus is its provider's end reason mapped")
  t.ok(fake.webhookAnswers.length > 0 && fake.webhookAnswers.every((s) => s === 200), 'every webhook delivery answered 200')
}

/**
 * `bin/orchestrator all` with a provider's environment (`PROVIDER`, its keys and base URL, the
 * fake's), on a database of its own; three calls created through its API, waited for until every
 * one is COMPLETED. Returns the database and the process, for what each test checks after.
 */
export async function threeCallsThroughAll(t: Test, providerEnv: Record<string, string>, scriptId: string) {
  const h = await createTestDatabase(t)
  const port = await freePort()
  const proc = runBinary(t, 'all', {
    DATABASE_URL: h.url,
    DATABASE_CONNECTIONS: '8',
    PORT: String(port),
    PUBLIC_BASE_URL: `http://127.0.0.1:${port}`,
    CALLBACK_URL_SECRET: 'a-key-of-at-least-32-characters-000000',
    WORKER_POLL_MS: '200',
    ...providerEnv,
  })
  const api = `http://127.0.0.1:${port}`
  await waitFor('the API', async () => (await fetch(`${api}/readyz`).catch(() => undefined))?.ok, 30_000)
  const ids: string[] = []
  for (const phone of [newPhone(), newPhone(), newPhone()]) {
    const res = await fetch(`${api}/calls`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ to: phone, scriptId }) })
    t.equal(res.status, 201)
    ids.push(((await res.json()) as { id: string }).id)
  }
  await waitFor('every call completed', async () => (await h.sql<{ status: string }[]>`SELECT status FROM calls WHERE id IN ${h.sql(ids)}`).every((r) => r.status === 'COMPLETED'), 30_000)
  t.notMatch(proc.output(), /"level":"(error|fatal)"/, 'no error logged')
  return { h, api, proc, ids }
}
