import t, { type Test } from 'tap'
import type { CallRow } from '../src/domain/call.ts'
import { CLAIM_LOCK } from '../src/store/locks.ts'
import { claimCalls, type DispatchPolicy } from '../src/services/dispatch/claim.ts'
import { postCall } from './support/factory.ts'
import { createHarness, registerWorker, type Harness } from './support/harness.ts'
import { waitFor } from './support/processes.ts'

// PATCH changes a call's payload only while it is PENDING; a claim dials whatever payload the
// row holds when it claims it. Run concurrently, exactly one of two things may happen:
//   - the PATCH commits first: 200, and a claim (if it gets the call) carries the new payload;
//   - the claim commits first: the PATCH is refused with 409, and the old payload is dialed.
// Never a 200 while the old payload is what got dialed.

const policy: DispatchPolicy = {
  maxConcurrentCalls: 10_000,
  maxAttempts: 3,
  retryBaseSeconds: 5,
  retryMaxSeconds: 300,
  callTimeoutSeconds: 1800,
  leaseMs: 15_000,
  reconcileAfterSeconds: 120,
}

interface JobRow {
  id: string
  singleton_key: string
  state: string
}

async function jobsOfCall(h: Harness, callId: string): Promise<JobRow[]> {
  return h.sql<JobRow[]>`SELECT id, singleton_key, state FROM pgboss.job WHERE data->>'callId' = ${callId}`
}

/** After each round: nothing this round left behind may be claimed by the next one. */
async function retirePending(h: Harness) {
  await h.sql`DELETE FROM pgboss.job WHERE state = 'created'`
  await h.sql`
    UPDATE calls SET status = 'EXPIRED', ended_at = now(), last_error = 'retired by the test', updated_at = now()
    WHERE status = 'PENDING'`
}

/** The row and its job agree with each other and with what the claim and the PATCH reported. */
async function checkConsistent(t: Test, h: Harness, row: CallRow, label: string) {
  const jobs = await jobsOfCall(h, row.id)
  t.equal(jobs.length, 1, `${label}: exactly one job carries the call`)
  const job = jobs[0]
  t.equal(row.job_id, job?.id, `${label}: calls.job_id points at it`)
  t.equal(job?.singleton_key, row.phone, `${label}: the job is keyed by the row's phone`)
  t.equal(job?.state, row.status === 'IN_PROGRESS' ? 'active' : 'created', `${label}: job state matches the call`)
}

t.test('sequential: PATCH first, then claim, dials the new payload', async (t) => {
  const h = await createHarness(t)
  const worker = await registerWorker(h)
  const call = await postCall(h, { to: '+15550001000', scriptId: 'old' })
  const patch = await h.call('PATCH', `/calls/${call.id}`, { scriptId: 'new', to: '+15550001001' })
  t.equal(patch.status, 200)
  const { claimed } = await claimCalls(h.sql, h.queue, policy, worker, 30)
  t.equal(claimed.length, 1)
  t.equal(claimed[0]!.id, call.id)
  t.equal(claimed[0]!.script_id, 'new')
  t.equal(claimed[0]!.phone, '+15550001001')
  await checkConsistent(t, h, claimed[0]!, 'patch-then-claim')
})

t.test('sequential: claim first, then PATCH, is refused', async (t) => {
  const h = await createHarness(t)
  const worker = await registerWorker(h)
  const call = await postCall(h, { to: '+15550002000', scriptId: 'old' })
  const { claimed } = await claimCalls(h.sql, h.queue, policy, worker, 30)
  t.equal(claimed.length, 1)
  t.equal(claimed[0]!.script_id, 'old')
  const patch = await h.call('PATCH', `/calls/${call.id}`, { scriptId: 'new', to: '+15550002001' })
  t.equal(patch.status, 409)
  t.equal(patch.body.code, 'call_not_pending')
  const [row] = await h.sql<CallRow[]>`SELECT * FROM calls WHERE id = ${call.id}`
  t.equal(row!.status, 'IN_PROGRESS')
  t.equal(row!.script_id, 'old')
  t.equal(row!.phone, '+15550002000')
  await checkConsistent(t, h, row!, 'claim-then-patch')
})

t.test('a claim waits for a PATCH that is under way and then dials its payload', async (t) => {
  // Holds the shared claim lock the way a PATCH does, to show the claim cannot slip in between
  // the PATCH's check and its write.
  const h = await createHarness(t)
  const worker = await registerWorker(h)
  const call = await postCall(h, { to: '+15550003000', scriptId: 'old' })
  let release!: () => void
  const held = new Promise<void>((resolve) => (release = resolve))
  let locked!: () => void
  const lockTaken = new Promise<void>((resolve) => (locked = resolve))
  const patcher = h.sql.begin(async (tx) => {
    await tx`SELECT pg_advisory_xact_lock_shared(${CLAIM_LOCK})`
    locked()
    await held
    await tx`UPDATE calls SET script_id = 'new', updated_at = now() WHERE id = ${call.id} AND status = 'PENDING'`
  })
  await lockTaken
  let claimDone = false
  const claim = claimCalls(h.sql, h.queue, policy, worker, 30).finally(() => (claimDone = true))
  // Wait until the claim is blocked on the lock (seen in pg_locks), not for a fixed time.
  await waitFor('the claim to wait for the lock', async () => {
    const [w] = await h.sql<{ n: number }[]>`
      SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND objid = ${CLAIM_LOCK} AND NOT granted`
    return w!.n > 0 || claimDone
  })
  t.notOk(claimDone, 'the claim waits')
  release()
  await patcher
  const { claimed } = await claim
  t.equal(claimed.length, 1)
  t.equal(claimed[0]!.script_id, 'new', 'the claim sees the committed PATCH')
})

t.test('PATCH racing claimCalls, 40 rounds', async (t) => {
  const h = await createHarness(t)
  const worker = await registerWorker(h)
  const outcomes = { patchWon: 0, claimWon: 0, patchWonNotClaimed: 0 }

  for (let round = 0; round < 40; round++) {
    const label = `round ${round}`
    const oldPhone = `+1555${String(round).padStart(3, '0')}0000`
    const newPhone = `+1555${String(round).padStart(3, '0')}9999`
    const changeTo = round % 2 === 1
    const call = await postCall(h, { to: oldPhone, scriptId: 'oldScript', metadata: { round } })
    const change: Record<string, unknown> = { scriptId: 'newScript' }
    if (changeTo) change.to = newPhone
    if (round % 4 === 0) change.metadata = { round, patched: true }

    // Both at once: which one wins is up to the database, and whichever does, the checks below
    // hold. (Each order on its own, and the claim waiting on a PATCH under way, are the tests
    // above, so neither outcome goes unchecked on a machine where one always wins.)
    const [patch, claim] = await Promise.all([
      h.call('PATCH', `/calls/${call.id}`, change),
      claimCalls(h.sql, h.queue, policy, worker, 30),
    ])

    t.ok(patch.status === 200 || patch.status === 409, `${label}: PATCH answers 200 or 409 (got ${patch.status})`)
    const mine = claim.claimed.filter((c) => c.id === call.id)
    t.equal(claim.claimed.length, mine.length, `${label}: the claim took no other call`)
    t.ok(mine.length <= 1, `${label}: claimed at most once`)
    const dialed = mine[0]
    const [row] = await h.sql<CallRow[]>`SELECT * FROM calls WHERE id = ${call.id}`

    if (patch.status === 200) {
      outcomes.patchWon++
      const expectedPhone = changeTo ? newPhone : oldPhone
      t.equal(patch.body.payload.scriptId, 'newScript', `${label}: PATCH answer has the new script`)
      t.equal(patch.body.payload.to, expectedPhone)
      t.equal(patch.body.status, 'PENDING', `${label}: PATCH changed a PENDING call`)
      if (dialed) {
        t.equal(dialed.script_id, 'newScript', `${label}: PATCH won, so the dialed row has the new script`)
        t.equal(dialed.phone, expectedPhone, `${label}: … and the new number`)
        t.same(dialed.metadata, change.metadata ?? { round }, `${label}: … and the new metadata`)
        t.equal(dialed.job_id, row!.job_id, `${label}: … claimed through its current job`)
      } else {
        // Only a changed number can leave the call unclaimed: its new job was queued by a
        // transaction that began after the claim's, so that claim does not see it yet.
        outcomes.patchWonNotClaimed++
        t.ok(changeTo, `${label}: without a new number the claim must get the call`)
      }
      t.equal(row!.script_id, 'newScript', `${label}: the row has the new script`)
      t.equal(row!.phone, expectedPhone, `${label}: the row has the new number`)
      t.equal(row!.status, dialed ? 'IN_PROGRESS' : 'PENDING')
      const oldJobs = await h.sql`SELECT 1 FROM pgboss.job WHERE data->>'callId' = ${call.id} AND singleton_key = ${oldPhone}`
      if (changeTo) t.equal(oldJobs.length, 0, `${label}: no job left for the old number`)
    } else {
      outcomes.claimWon++
      t.equal(patch.body.code, 'call_not_pending', `${label}: 409 is call_not_pending`)
      t.equal(patch.body.callStatus, 'IN_PROGRESS', `${label}: 409 names IN_PROGRESS`)
      t.ok(dialed, `${label}: a PATCH is only refused because the claim took the call`)
      t.equal(dialed?.script_id, 'oldScript', `${label}: claim won, so the dialed row has the old script`)
      t.equal(dialed?.phone, oldPhone, `${label}: … and the old number`)
      t.same(dialed?.metadata, { round }, `${label}: … and the old metadata`)
      t.equal(row!.status, 'IN_PROGRESS')
      t.equal(row!.script_id, 'oldScript', `${label}: the refused PATCH changed nothing`)
      t.equal(row!.phone, oldPhone)
      t.same(row!.metadata, { round })
    }
    // The forbidden outcome, stated once more on its own.
    t.notOk(patch.status === 200 && dialed?.script_id === 'oldScript', `${label}: never 200 with the old payload dialed`)
    if (dialed) {
      t.equal(row!.attempts, 1)
      t.equal(row!.claimed_by, worker)
      t.ok(row!.started_at)
    } else {
      t.equal(row!.attempts, 0)
      t.equal(row!.claimed_by, null)
    }
    await checkConsistent(t, h, row!, label)
    await retirePending(h)
  }
  t.equal(outcomes.patchWon + outcomes.claimWon, 40)
  t.comment(`outcomes: ${JSON.stringify(outcomes)}`)
})
