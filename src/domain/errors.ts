// The errors the domain can raise, each with a stable code that clients branch on. The API
// answers each as a problem (src/http/problem.ts gives every code its HTTP status, and fails to
// compile if one is missing).

export const DOMAIN_ERROR_CODES = [
  'call_not_found',
  'call_not_pending',
  'call_not_retryable',
  'batch_not_found',
  'suppression_not_found',
  'endpoint_not_found',
  'event_not_found',
  'expiry_passed',
  'idempotency_key_reused',
  'invalid_cursor',
  'phone_suppressed',
  'calling_window_never_opens',
  'schedule_impossible',
  'time_zone_unknown',
  'endpoint_not_allowed',
] as const
export type DomainErrorCode = (typeof DOMAIN_ERROR_CODES)[number]

export class DomainError extends Error {
  readonly code: DomainErrorCode
  readonly details: Record<string, unknown>
  constructor(code: DomainErrorCode, message: string, details: Record<string, unknown> = {}) {
    super(message)
    this.code = code
    this.details = details
  }
}
