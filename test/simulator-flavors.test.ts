import t from 'tap'
import { silentLogger } from '../src/platform/log.ts'
import { createRetellClient } from '../src/provider/retell.ts'
import { createVapiClient } from '../src/provider/vapi.ts'
import { ProviderSimulator, NO_FAULTS } from '../src/simulator/simulator.ts'
import { threeCallsThroughAll } from './support/never-twice.ts'
import { WEBHOOK_SECRET } from './support/harness.ts'

// The built-in simulator as Vapi or Retell (SIMULATOR_FLAVOR; in "all" mode, PROVIDER without
// its key): their paths and bodies, no idempotency (a create sent twice places twice, and its
// stats say so), and their webhooks, which the adapters verify and read.

async function simulator(t: { teardown(fn: () => Promise<void>): void }, flavor: 'vapi' | 'retell') {
  const sim = new ProviderSimulator(
    { secret: 'vapi-secret', apiKey: 'sim-key', flavor, minDurationMs: 60_000, maxDurationMs: 60_000, statusMix: [{ status: 'COMPLETED', weight: 1 }], rates: NO_FAULTS },
    silentLogger,
  )
  await sim.start()
  t.teardown(() => sim.stop())
  return sim
}

const request = { callId: '7c9e6679-7425-40de-944b-e07fc1f90ae7', dial: 1, to: '+14155550111', scriptId: 'agent-1', metadata: { name: 'Ada' } }
const common = { timeoutMs: 2_000, publicBaseUrl: 'http://127.0.0.1:9', callbackSecret: WEBHOOK_SECRET, voicemail: 'NO_ANSWER' as const }

for (const flavor of ['vapi', 'retell'] as const) {
  t.test(`as ${flavor}: a create is placed, found by our ids, looked up; sent again, it is placed again`, async (t) => {
    const sim = await simulator(t, flavor)
    const client =
      flavor === 'vapi'
        ? createVapiClient({ ...common, apiKey: 'sim-key', phoneNumberId: 'pn', baseUrl: sim.url })
        : createRetellClient({ ...common, apiKey: 'sim-key', fromNumber: '+15550100000', baseUrl: sim.url })
    if (client.idempotent) throw new Error(`${flavor} has no idempotency key`)
    const first = await client.dial(request)
    t.equal(first.kind, 'accepted')
    const id = first.kind === 'accepted' ? first.providerCallId : ''
    t.same(await client.findDialed({ callId: request.callId, dial: 1, since: new Date(Date.now() - 60_000) }), { kind: 'found', providerCallId: id })
    t.same(await client.findDialed({ callId: request.callId, dial: 2, since: new Date(Date.now() - 60_000) }), { kind: 'none' })
    t.equal((await client.lookup(id)).kind, 'live')
    const wrongKey = flavor === 'vapi' ? createVapiClient({ ...common, apiKey: 'other', phoneNumberId: 'pn', baseUrl: sim.url }) : createRetellClient({ ...common, apiKey: 'other', fromNumber: '+1', baseUrl: sim.url })
    t.equal((await wrongKey.dial(request)).kind, 'not_placed', 'another key is refused')
    await client.dial(request)
    t.same(sim.stats().keysAcceptedTwice, 1, 'the same dial sent again is placed again: no idempotency, as at the real one')
  })
}

t.test('bin/orchestrator all with PROVIDER=vapi and no key: the built-in simulator plays Vapi, end to end', async (t) => {
  const { h } = await threeCallsThroughAll(t, { PROVIDER: 'vapi', SIMULATOR_MIN_DURATION_MS: '50', SIMULATOR_MAX_DURATION_MS: '100' }, 'asst-1')
  const results = await h.sql<{ end_reason: string; transcript: string }[]>`SELECT end_reason, transcript FROM call_dials`
  t.same(results.map((r) => r.end_reason), ['customer-ended-call', 'customer-ended-call', 'customer-ended-call'])
  t.ok(results.every((r) => /asst-1/.test(r.transcript)), 'with a transcript')
})

t.test('bin/orchestrator all with PROVIDER=retell and no key: the built-in simulator plays Retell, end to end', async (t) => {
  const { h } = await threeCallsThroughAll(t, { PROVIDER: 'retell', SIMULATOR_MIN_DURATION_MS: '50', SIMULATOR_MAX_DURATION_MS: '100' }, 'agent-1')
  const results = await h.sql<{ end_reason: string }[]>`SELECT end_reason FROM call_dials`
  t.same(results.map((r) => r.end_reason), ['user_hangup', 'user_hangup', 'user_hangup'])
})
