import t from 'tap'
import postgres from 'postgres'
import type { CallingPolicy } from '../src/domain/policy.ts'
import { NO_POLICY } from '../src/domain/policy.ts'
import { claimCalls } from '../src/services/dispatch/claim.ts'
import { recordDialResult } from '../src/services/dispatch/record.ts'
import { CLAIM_LOCK } from '../src/store/locks.ts'
import { inFlightCall, POLICY, sendSigned } from './support/callbacks.ts'
import { newPhone, postCall } from './support/factory.ts'
import { callRow } from './support/inspect.ts'
import { createHarness, registerWorker, type Harness } from './support/harness.ts'

// The claim lock (src/store/locks.ts) is the semaphore: a claim holds it exclusively. A report
// about a call in flight touches nothing a claim locks (claims lock waiting jobs and PENDING
// calls), so it does not queue behind claims, and claims do not queue behind it: at a limit of
// 1,000 that queue was most of a claim's time. A report about any other call still takes the
// lock shared, and whatever it locked before finding that out is let go first.

/** A session of its own, holding the claim lock exclusively as a claim underway does, until released. */
async function claimUnderway(h: Harness) {
  const own = postgres(h.url, { max: 1, onnotice: () => {} })
  let release!: () => void
  const released = new Promise<void>((r) => (release = r))
  let holding!: () => void
  const held = new Promise<void>((r) => (holding = r))
  const done = own.begin(async (tx) => {
    await tx`SELECT pg_advisory_xact_lock(${CLAIM_LOCK})`
    holding()
    await released
  })
  await held
  return {
    release: async () => {
      release()
      await done
      await own.end()
    },
  }
}

/** Backends of this database waiting for an advisory lock. */
async function advisoryWaiters(h: Harness): Promise<number> {
  const [row] = await h.sql<{ n: number }[]>`
    SELECT count(*)::int AS n FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND NOT l.granted AND a.datname = current_database()`
  return row!.n
}

/** Resolves with 'waiting' once a backend waits for the claim lock, or with what `work` returned if it ended first. */
async function waitsForClaimLock<T>(h: Harness, work: Promise<T>): Promise<'waiting' | { done: T }> {
  let settled = false
  const finished = work.then((value) => {
    settled = true
    return { done: value }
  })
  const watch = (async () => {
    for (let i = 0; i < 500 && !settled; i++) {
      if ((await advisoryWaiters(h)) > 0) return 'waiting' as const
      await new Promise((r) => setTimeout(r, 10))
    }
    return finished
  })()
  return Promise.race([finished, watch])
}

t.test('a report about a call in flight is applied while a claim holds the lock: it does not wait for it', async (t) => {
  const h = await createHarness(t)
  const worker = await registerWorker(h)
  const call = await inFlightCall(h, worker, newPhone(), 'prov-in-flight')
  const claim = await claimUnderway(h)
  const delivery = sendSigned(h, call.id, { callId: 'prov-in-flight', status: 'COMPLETED' })
  const seen = await waitsForClaimLock(h, delivery)
  await claim.release()
  const res = await delivery
  t.not(seen, 'waiting', 'the callback never waited for the claim lock')
  t.same(res.body, { verdict: 'applied', callId: call.id, status: 'COMPLETED' })
  t.equal((await callRow(h, call.id)).status, 'COMPLETED')
})

t.test('a report about a PENDING call waits for the claim underway, holding no row it would need', async (t) => {
  const h = await createHarness(t)
  const { id } = await postCall(h, { to: newPhone() })
  const claim = await claimUnderway(h)
  // Dial 1 was never started: the report is refused, but only under the lock, after the claim.
  const delivery = sendSigned(h, id, { callId: 'prov-never', status: 'COMPLETED' })
  t.equal(await waitsForClaimLock(h, delivery), 'waiting', 'the callback waits for the claim lock')
  // The claim can still lock the call's row: the callback let go of it before waiting.
  const other = postgres(h.url, { max: 1, onnotice: () => {} })
  t.teardown(() => other.end())
  const locked = await other.begin(async (tx) => {
    await tx`SET LOCAL lock_timeout = '2s'`
    return tx`SELECT id FROM calls WHERE id = ${id} FOR UPDATE`
  })
  t.equal(locked.length, 1, "the call's row was free for the claim to lock")
  await claim.release()
  const res = await delivery
  t.equal(res.status, 409, 'then judged as before')
  t.equal((await callRow(h, id)).status, 'PENDING')
})

t.test('claims and reports at once, with BUSY sending calls back for a new dial: no deadlock, every call ends', async (t) => {
  const calling: CallingPolicy = { ...NO_POLICY, retries: { BUSY: { limit: 2, delaySeconds: 0 } } }
  const h = await createHarness(t, { calling, maxConcurrentCalls: 1000 })
  const policy = { ...POLICY, maxConcurrentCalls: 1000, calling }
  const workers = await Promise.all([1, 2, 3, 4].map(() => registerWorker(h)))
  const phones = Array.from({ length: 25 }, () => newPhone())
  const ids = (await Promise.all(Array.from({ length: 100 }, (_, i) => postCall(h, { to: phones[i % phones.length] })))).map((c) => c.id)

  const failures: unknown[] = []
  const answers: number[] = []
  const placed = new Map<string, number>() // provider call id → times placed
  let live = 0
  let maxLive = 0
  const livePhones = new Set<string>()
  let twoOnAPhone = 0
  const ended = async () => (await h.sql`SELECT 1 FROM calls WHERE id IN ${h.sql(ids)} AND status IN ('PENDING', 'IN_PROGRESS')`).length === 0

  const work = async (worker: number) => {
    for (let round = 0; round < 400 && !(await ended()); round++) {
      const { claimed } = await claimCalls(h.sql, h.queue, policy, worker, 20).catch((err) => {
        failures.push(err)
        return { claimed: [] }
      })
      await Promise.all(
        claimed.map(async (call) => {
          const providerCallId = `prov-${call.id}-${call.dial}`
          placed.set(providerCallId, (placed.get(providerCallId) ?? 0) + 1)
          if (livePhones.has(call.phone)) twoOnAPhone++
          livePhones.add(call.phone)
          maxLive = Math.max(maxLive, ++live)
          await recordDialResult(h.sql, h.queue, policy, call, { kind: 'accepted', providerCallId })
          // The provider ends it: BUSY half the time (a new dial while the policy allows one).
          const status = Math.random() < 0.5 ? 'BUSY' : 'COMPLETED'
          livePhones.delete(call.phone)
          live--
          const res = await sendSigned(h, call.id, { callId: providerCallId, status }, { dial: call.dial })
          answers.push(res.status)
        }),
      )
      if (claimed.length === 0) await new Promise((r) => setTimeout(r, 5))
    }
  }
  await Promise.all(workers.map(work))

  t.same(failures, [], 'no claim failed (a deadlock would fail one)')
  t.ok(answers.length >= ids.length && answers.every((s) => s === 200), `all ${answers.length} reports applied with 200`)
  t.ok(await ended(), 'every call ended')
  t.ok([...placed.values()].every((n) => n === 1), 'no dial placed twice')
  t.equal(twoOnAPhone, 0, 'never two calls on one phone')
  t.ok(maxLive <= 1000, `at most the limit live (${maxLive})`)
  const busy = await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM call_dials WHERE call_id IN ${h.sql(ids)} AND outcome = 'BUSY'`
  t.ok(busy[0]!.n > 0, `some dials were BUSY and dialed again (${busy[0]!.n})`)
})
