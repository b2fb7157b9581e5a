// The call as stored and as shown to clients, and the errors the domain can raise.
//
//   PENDING ──claim──▶ IN_PROGRESS ──final callback COMPLETED──▶ COMPLETED
//      ▲  │                 │  │ └──final callback FAILED/BUSY/NO_ANSWER, 4xx, timeout──▶ FAILED
//      │  │                 │  └──retryable failure, attempts left──┐
//      │  └─TTL passed──▶ EXPIRED                                   │
//      └────────────────────────────────────────────────────────────┘
//
// Every transition is a guarded UPDATE (… WHERE status = <from>) in src/db/calls.ts.

export const CALL_STATUSES = ['PENDING', 'IN_PROGRESS', 'COMPLETED', 'FAILED', 'EXPIRED'] as const
export type CallStatus = (typeof CALL_STATUSES)[number]

export interface CallRow {
  id: string
  phone: string
  script_id: string
  metadata: Record<string, unknown>
  status: CallStatus
  attempts: number
  last_error: string | null
  next_attempt_at: Date | null
  expires_at: Date | null
  provider_call_id: string | null
  provider_status: string | null
  duration_sec: number | null
  job_id: string | null
  claimed_by: number | null
  idempotency_key: string | null
  request_hash: string | null
  created_at: Date
  updated_at: Date
  started_at: Date | null
  dialed_at: Date | null
  ended_at: Date | null
}

export interface CallPayload {
  to: string
  scriptId: string
  metadata: Record<string, unknown>
}

export interface CallResource {
  id: string
  payload: CallPayload
  status: CallStatus
  attempts: number
  lastError: string | null
  nextAttemptAt: string | null
  expiresAt: string | null
  providerCallId: string | null
  providerStatus: string | null
  durationSec: number | null
  createdAt: string
  updatedAt: string
  startedAt: string | null
  endedAt: string | null
}

const iso = (d: Date | null) => (d ? d.toISOString() : null)

export function toResource(row: CallRow): CallResource {
  return {
    id: row.id,
    payload: { to: row.phone, scriptId: row.script_id, metadata: row.metadata },
    status: row.status,
    attempts: row.attempts,
    lastError: row.last_error,
    nextAttemptAt: row.status === 'PENDING' ? iso(row.next_attempt_at) : null,
    expiresAt: iso(row.expires_at),
    providerCallId: row.provider_call_id,
    providerStatus: row.provider_status,
    durationSec: row.duration_sec,
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString(),
    startedAt: iso(row.started_at),
    endedAt: iso(row.ended_at),
  }
}

/** A domain error with a stable code; src/http/problem.ts maps codes to HTTP statuses. */
export class DomainError extends Error {
  readonly code: string
  readonly details: Record<string, unknown>
  constructor(code: string, message: string, details: Record<string, unknown> = {}) {
    super(message)
    this.code = code
    this.details = details
  }
}

export const callNotFound = (id: string) => new DomainError('call_not_found', `No call has id ${id}.`, { callId: id })

export const callNotPending = (id: string, status: CallStatus) =>
  new DomainError(
    'call_not_pending',
    `Call ${id} is ${status}; its payload can only be changed while it is PENDING.`,
    // Not "status": in the problem+json body that member is the HTTP status (RFC 9457).
    { callId: id, callStatus: status },
  )
