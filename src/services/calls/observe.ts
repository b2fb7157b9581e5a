import type { Fields, Logger } from '../../platform/log.ts'
import { metrics } from '../../platform/metrics.ts'
import type { CallRow } from '../../domain/call.ts'

// What a call's end outside the provider's report leaves for people, once its transaction has
// committed: one log line per call (its id, masked phone and the transition) and its counter.

type EndedBy = 'CANCELLED' | 'SUPPRESSED' | 'EXPIRED'

const counters = {
  CANCELLED: metrics.cancelled,
  SUPPRESSED: metrics.suppressed,
  EXPIRED: metrics.expired,
} as const

export function observeEnded(log: Logger, ended: readonly Pick<CallRow, 'id' | 'phone' | 'attempts'>[], status: EndedBy, scope: Fields = {}): void {
  if (ended.length === 0) return
  counters[status].inc(ended.length)
  for (const call of ended) {
    log.info(`call ${status.toLowerCase()}`, { ...scope, callId: call.id, attempt: call.attempts, phone: call.phone, from: 'PENDING', to: status })
  }
}
