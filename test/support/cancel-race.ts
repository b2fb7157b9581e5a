import { setTimeout as sleep } from 'node:timers/promises'
import type { Test } from 'tap'
import { claimCalls } from '../../src/dispatch/claim.ts'
import { POLICY } from './callbacks.ts'
import { newPhone, postCall } from './factory.ts'
import { registerWorker, type Harness } from './harness.ts'
import { callRow, jobOf } from './inspect.ts'

/**
 * 40 rounds of a cancel (`cancel`, by whatever path) racing a claim of the same fresh call,
 * with a few staggerings: each round, either the cancel won (the call is CANCELLED, never
 * dialed, without a job, and the claim did not take it) or the claim did (the cancel was
 * refused, as `refused` checks, and the call is in flight with its job active). Both must win
 * some rounds.
 */
export async function raceCancelAgainstClaim<R>(
  t: Test,
  h: Harness,
  path: { cancel: (id: string) => Promise<R>; won: (result: R) => boolean; refused: (result: R, label: string) => void },
): Promise<void> {
  const worker = await registerWorker(h)
  const outcomes = { cancelWon: 0, claimWon: 0 }
  for (let round = 0; round < 40; round++) {
    const label = `round ${round}`
    const call = await postCall(h, { to: newPhone() })
    const [cancelDelay, claimDelay] = ([[0, 0], [0, 1], [1, 0], [0, 2], [2, 0]] as const)[round % 5]!
    const [cancel, claim] = await Promise.all([
      sleep(cancelDelay).then(() => path.cancel(call.id)),
      sleep(claimDelay).then(() => claimCalls(h.sql, h.queue, { ...POLICY, maxConcurrentCalls: 10_000 }, worker, 30)),
    ])
    const claimed = claim.claimed.some((c) => c.id === call.id)
    const row = await callRow(h, call.id)
    if (path.won(cancel)) {
      outcomes.cancelWon++
      t.notOk(claimed, `${label}: a cancelled call is not claimed`)
      t.equal(row.status, 'CANCELLED')
      t.equal(row.attempts, 0, `${label}: never dialed`)
      t.equal(await jobOf(h.sql, call.id), undefined, `${label}: and has no job`)
    } else {
      outcomes.claimWon++
      path.refused(cancel, label)
      t.ok(claimed, `${label}: refused only because the claim took it`)
      t.equal(row.status, 'IN_PROGRESS')
      t.equal((await jobOf(h.sql, call.id))?.state, 'active')
    }
    // End the claimed call so the next round's claim finds only its own.
    await h.sql`UPDATE calls SET status = 'FAILED', ended_at = now(), last_error = 'retired by the test', claimed_by = NULL, next_attempt_at = NULL WHERE status = 'IN_PROGRESS'`
    await h.sql`DELETE FROM pgboss.job WHERE name = 'calls' AND state = 'active'`
  }
  t.comment(`outcomes: ${JSON.stringify(outcomes)}`)
  t.ok(outcomes.cancelWon > 0, `the cancel won some rounds (${outcomes.cancelWon})`)
  t.ok(outcomes.claimWon > 0, `the claim won some rounds (${outcomes.claimWon})`)
}
