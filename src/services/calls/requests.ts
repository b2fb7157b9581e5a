import { recordActionOutcome, takeRequestedAction, type ActionRow } from '../../store/actions.ts'
import type { Queues } from '../../store/queues.ts'
import type { Sql } from '../../store/sql.ts'
import { cancelCall, retryCall } from './actions.ts'
import { type CallRow } from '../../domain/call.ts'
import { DomainError } from '../../domain/errors.ts'
import type { CallingPolicy } from '../../domain/policy.ts'

// The cancels and retries operators file from psql (request_cancel, request_retry), carried
// out by workers with the API's own code (src/services/calls/actions.ts). Each request is taken, carried
// out in a savepoint and written down in one transaction: done, or refused with the reason the
// API would give; nothing of a refused action is kept, and no request is carried out twice.

export interface ActionResult {
  request: ActionRow
  outcome: 'done' | 'refused'
  call?: CallRow | undefined
  detail: string
}

/** Carries out up to `limit` waiting requests, oldest first; returns what became of each. */
export async function carryOutRequestedActions(
  sql: Sql,
  deps: { queue: Queues; calling: CallingPolicy },
  limit = 20,
): Promise<ActionResult[]> {
  const results: ActionResult[] = []
  while (results.length < limit) {
    const result = await sql.begin(async (tx) => {
      const request = await takeRequestedAction(tx)
      if (!request) return undefined
      let call: CallRow | undefined
      let refusal: DomainError | undefined
      try {
        call = await tx.savepoint((sp) =>
          request.action === 'cancel' ? cancelCall(sp, deps.queue, request.call_id) : retryCall(sp, deps, request.call_id, { expiresAt: request.expires_at ?? undefined }),
        )
      } catch (err) {
        if (!(err instanceof DomainError)) throw err
        refusal = err
      }
      const outcome = refusal ? ('refused' as const) : ('done' as const)
      const detail = refusal ? `${refusal.message} (${refusal.code})` : `the call is ${call!.status}`
      await recordActionOutcome(tx, request.id, outcome, detail)
      return { request, outcome, call, detail }
    })
    if (!result) break
    results.push(result)
  }
  return results
}
