import { metrics } from '../platform/metrics.ts'
import type { Logger } from '../platform/log.ts'
import type { MappedEnd } from './end-reasons.ts'
import type { ProviderName } from './client.ts'

// A word for a call's end that the provider's published list does not have is mapped to
// FAILED, counted, and logged the first time this process meets it: providers add words, and
// an operator should hear of a new one once, not once per call.

const SEEN_LIMIT = 1_000
const seen = new Set<string>()

export function noteEndReason(provider: ProviderName, reason: string, end: MappedEnd, log: Logger): void {
  if (end.known) return
  metrics.unknownEndReasons.inc({ provider })
  const key = `${provider}:${reason}`
  if (seen.has(key) || seen.size >= SEEN_LIMIT) return
  seen.add(key)
  log.warn('a call ended for a reason the provider does not publish; counted as FAILED', { provider, endReason: reason || '(none)' })
}
