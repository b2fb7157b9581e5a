import type { CallRow } from './call.ts'

// The status events the service writes (src/services/events/outbox.ts) and delivers to the
// endpoints that subscribe to them.

export const CALL_EVENTS = [
  'call.dialed',
  'call.completed',
  'call.failed',
  'call.expired',
  'call.cancelled',
  'call.suppressed',
  'call.retry_scheduled',
  'call.analyzed',
] as const
export const EVENT_TYPES = [...CALL_EVENTS, 'batch.completed'] as const
export type CallEvent = (typeof CALL_EVENTS)[number]
export type EventType = (typeof EVENT_TYPES)[number]

/** The event a call's new state reports. */
export function eventOf(call: Pick<CallRow, 'status'>): CallEvent | undefined {
  switch (call.status) {
    case 'COMPLETED':
      return 'call.completed'
    case 'FAILED':
      return 'call.failed'
    case 'EXPIRED':
      return 'call.expired'
    case 'CANCELLED':
      return 'call.cancelled'
    case 'SUPPRESSED':
      return 'call.suppressed'
    default:
      return undefined
  }
}
