import type { Test } from 'tap'
import { claimCalls } from '../../src/services/dispatch/claim.ts'
import { POLICY } from './callbacks.ts'
import { newPhone, postCall } from './factory.ts'
import { registerWorker, type Harness } from './harness.ts'
import { callRow, jobOf } from './inspect.ts'

/**
 * 40 rounds of a cancel (`cancel`, by whatever path) and a claim of the same fresh call: each
 * round, either the cancel won (the call is CANCELLED, never dialed, without a job, and the
 * claim did not take it) or the claim did (the cancel was refused, as `refused` checks, and the
 * call is in flight with its job active). Most rounds send both at once and let the database
 * decide; every fourth sends the cancel first and every fourth the claim first, and those must
 * be won by the one sent first, so both outcomes are checked on any machine, under any load.
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
    const cancelNow = () => path.cancel(call.id)
    const claimNow = () => claimCalls(h.sql, h.queue, { ...POLICY, maxConcurrentCalls: 10_000 }, worker, 30)
    const order = round % 4 === 1 ? 'cancel first' : round % 4 === 3 ? 'claim first' : 'together'
    let cancel: R
    let claim: Awaited<ReturnType<typeof claimNow>>
    if (order === 'cancel first') {
      cancel = await cancelNow()
      claim = await claimNow()
    } else if (order === 'claim first') {
      claim = await claimNow()
      cancel = await cancelNow()
    } else [cancel, claim] = await Promise.all([cancelNow(), claimNow()])
    const claimed = claim.claimed.some((c) => c.id === call.id)
    if (order !== 'together') t.equal(path.won(cancel), order === 'cancel first', `${label} (${order}): won by the first`)
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
}
