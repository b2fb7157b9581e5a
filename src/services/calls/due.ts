import { dueTimeGiven, type CallingPolicy, type CallTiming, type WaitingFor } from '../../domain/policy.ts'
import { capOpensAt } from '../../store/dials.ts'
import type { Tx } from '../../store/sql.ts'

/**
 * When a call may be dialed under the policy (src/domain/policy.ts), with its phone's dial caps
 * read in the caller's transaction; null when its window never opens.
 */
export async function dueTime(
  tx: Tx,
  policy: CallingPolicy,
  call: CallTiming,
  now: Date,
  from: { at: Date; reason: WaitingFor } | undefined = undefined,
): Promise<{ at: Date; waitingFor: WaitingFor | null } | null> {
  const capAt = await capOpensAt(tx, call.phone, policy.caps)
  return dueTimeGiven(policy, call, now, capAt, from)
}
