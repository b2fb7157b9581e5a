// The call as stored and as shown to clients, and the errors the domain can raise.
//
//   PENDING ──claim──▶ IN_PROGRESS ──provider's final report COMPLETED──▶ COMPLETED
//      │                  │ ▲  └──its final report FAILED/BUSY/NO_ANSWER, a refusal (4xx),
//      │                  │ │     no report by timeout_at──▶ FAILED
//      │                  └─┘ no answer (timeout, dropped connection, 5xx), 408/409/425/429:
//      │                      re-sent under the same Idempotency-Key, slot and phone kept
//      ├─TTL passed──▶ EXPIRED
//      ├─cancel──▶ CANCELLED      ├─number put on the do-not-call list──▶ SUPPRESSED
//      └◀─ BUSY/NO_ANSWER/FAILED under an outcome retry policy; FAILED or EXPIRED retried
//
// The provider's later report on a call we declared FAILED without it corrects the record.
// TRANSITIONS below is the same, as data; test/call-transitions.test.ts holds the store to it.
// Queries on calls live in src/store/calls.ts, state changes in src/store/transitions.ts; each is an
// UPDATE guarded by the state it leaves.

/**
 * The longest a call may wait to be dialed (CALL_TTL_SECONDS, `expiresAt`): pg-boss deletes a
 * queued job a while after it was due (the queue's retention, set above this in
 * src/store/call-jobs.ts), and a call without its job would never be dialed.
 */
export const MAX_WAIT_SECONDS = 365 * 24 * 3600

export const CALL_STATUSES = ['PENDING', 'IN_PROGRESS', 'COMPLETED', 'FAILED', 'EXPIRED', 'SUPPRESSED', 'CANCELLED'] as const
export type CallStatus = (typeof CALL_STATUSES)[number]

/**
 * Which status may follow which, and when: the one statement of it. Every move is a guarded
 * UPDATE in the store (src/store/transitions.ts, src/store/suppressions.ts) that takes the call
 * only from the status it leaves; test/call-transitions.test.ts reads their SQL and holds them
 * to this table, both ways.
 */
export const TRANSITIONS: ReadonlyArray<{ from: CallStatus; to: CallStatus; when: string }> = [
  { from: 'PENDING', to: 'IN_PROGRESS', when: 'a worker claims it: a slot is free and its phone has no call in flight' },
  { from: 'PENDING', to: 'EXPIRED', when: 'its expiresAt passed before it was dialed' },
  { from: 'PENDING', to: 'CANCELLED', when: 'it is cancelled (API, bin/orchestrator calls cancel, request_cancel())' },
  { from: 'PENDING', to: 'SUPPRESSED', when: 'its number is put on the do-not-call list' },
  { from: 'IN_PROGRESS', to: 'COMPLETED', when: 'the provider’s final report is COMPLETED' },
  { from: 'IN_PROGRESS', to: 'FAILED', when: 'the final report is FAILED, BUSY or NO_ANSWER; the provider refused the dial; no request is left; or no final report came by timeout_at' },
  { from: 'IN_PROGRESS', to: 'PENDING', when: 'an outcome retry (RETRY_BUSY, RETRY_NO_ANSWER, RETRY_FAILED): a new dial later' },
  { from: 'FAILED', to: 'COMPLETED', when: 'the provider’s later report corrects a FAILED we declared without it' },
  { from: 'FAILED', to: 'FAILED', when: 'the provider’s later report says how a call we declared FAILED ended' },
  { from: 'FAILED', to: 'PENDING', when: 'it is retried (API, bin/orchestrator calls retry, request_retry())' },
  { from: 'EXPIRED', to: 'PENDING', when: 'it is retried' },
]

export const canMove = (from: CallStatus, to: CallStatus): boolean => TRANSITIONS.some((m) => m.from === from && m.to === to)

/** The statuses a client may cancel a call from (→ CANCELLED), and retry it from (→ PENDING, a new dial). */
export const CANCELLABLE: readonly CallStatus[] = ['PENDING']
export const RETRYABLE: readonly CallStatus[] = ['FAILED', 'EXPIRED']

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
  dial: number
  dial_requests: number
  not_before: Date | null
  calling_window: CallingWindow | null
  time_zones: string[]
  waiting_for: WaitingFor | null
  batch_id: string | null
  batch_index: number | null
  outcome_unknown_at: Date | null
  timeout_at: Date | null
  reconcile_at: Date | null
  idempotency_key: string | null
  request_hash: string | null
  created_at: Date
  updated_at: Date
  started_at: Date | null
  dialed_at: Date | null
  ended_at: Date | null
}

import { DomainError } from './errors.ts'
import type { WaitingFor } from './policy.ts'
import type { CallingWindow } from './window.ts'

/** A row of call_dials: one dial (provider call) of a call. */
export type DialOutcome = 'COMPLETED' | 'FAILED' | 'BUSY' | 'NO_ANSWER' | 'refused' | 'unknown'

export interface DialRow {
  call_id: string
  dial: number
  phone: string
  started_at: Date
  requests: number
  dialed_at: Date | null
  provider_call_id: string | null
  outcome: DialOutcome | null
  error: string | null
  ended_at: Date | null
  end_reason: string | null
  transcript: string | null
  recording_url: string | null
  summary: string | null
  analysis: unknown
}

/** What a dial ended with, for the people who ordered the call (sql/022_call_results.sql); the generic contract sends none of it. */
export interface CallResult {
  endReason: string | null
  transcript: string | null
  recordingUrl: string | null
  summary: string | null
  analysis: unknown
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
  /** Why a PENDING call is not dialed yet: notBefore, callingWindow, cap or retry (its own schedule), else paused, slot or phone. */
  waitingFor: string | null
  notBefore: string | null
  expiresAt: string | null
  callingWindow: CallingWindow | null
  timeZones: string[]
  batchId: string | null
  providerCallId: string | null
  providerStatus: string | null
  durationSec: number | null
  createdAt: string
  updatedAt: string
  startedAt: string | null
  endedAt: string | null
  /** Every dial (provider call) the call has made, oldest first. */
  dials: DialResource[]
  /** What its last dial ended with, when the provider said anything (Vapi, Retell); null otherwise. */
  result: CallResult | null
}

export interface DialResource {
  dial: number
  startedAt: string
  requests: number
  dialedAt: string | null
  providerCallId: string | null
  outcome: string | null
  error: string | null
  endedAt: string | null
  /** The provider's own word for how it ended. */
  endReason: string | null
}

const WAITING_FOR_NAMES: Record<WaitingFor, string> = { not_before: 'notBefore', calling_window: 'callingWindow', cap: 'cap', retry: 'retry' }

/**
 * What holds back a PENDING call that its own schedule does not: dispatch paused, every slot
 * taken, or its number with a call in flight. Not stored: it is true of the moment the call is
 * read, not of the call.
 */
export type Holdup = 'paused' | 'slot' | 'phone'

/** The facts a holdup is judged on, read together (src/store/calls.ts, holdupFacts). */
export interface HoldupFacts {
  paused: boolean
  freeSlots: number
  /** Numbers among those asked about that have a call in flight. */
  busyPhones: ReadonlySet<string>
}

export function holdupOf(call: Pick<CallRow, 'status' | 'waiting_for' | 'phone'>, facts: HoldupFacts): Holdup | null {
  if (call.status !== 'PENDING' || call.waiting_for) return null
  if (facts.paused) return 'paused'
  if (facts.busyPhones.has(call.phone)) return 'phone'
  if (facts.freeSlots <= 0) return 'slot'
  return null
}

const iso = (d: Date | null) => (d ? d.toISOString() : null)

/** The result of the last of these dials, if the provider told anything of it. */
function resultOf(dials: DialRow[]): CallResult | null {
  const last = dials.at(-1)
  if (!last || (last.end_reason === null && last.transcript === null && last.recording_url === null && last.summary === null && last.analysis === null)) return null
  return { endReason: last.end_reason, transcript: last.transcript, recordingUrl: last.recording_url, summary: last.summary, analysis: last.analysis ?? null }
}

export function toResource(row: CallRow, dials: DialRow[] = [], holdup: Holdup | null = null): CallResource {
  const own = dials.filter((d) => d.call_id === row.id)
  return {
    id: row.id,
    payload: { to: row.phone, scriptId: row.script_id, metadata: row.metadata },
    status: row.status,
    attempts: row.attempts,
    lastError: row.last_error,
    // While IN_PROGRESS and not yet accepted, the next request under the same key goes out then.
    nextAttemptAt: row.status === 'PENDING' || (row.status === 'IN_PROGRESS' && !row.dialed_at) ? iso(row.next_attempt_at) : null,
    waitingFor: row.status === 'PENDING' ? (row.waiting_for ? WAITING_FOR_NAMES[row.waiting_for] : holdup) : null,
    notBefore: iso(row.not_before),
    expiresAt: iso(row.expires_at),
    callingWindow: row.calling_window,
    timeZones: row.time_zones,
    batchId: row.batch_id,
    providerCallId: row.provider_call_id,
    providerStatus: row.provider_status,
    durationSec: row.duration_sec,
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString(),
    startedAt: iso(row.started_at),
    endedAt: iso(row.ended_at),
    dials: own.map((d) => ({
      dial: d.dial,
      startedAt: d.started_at.toISOString(),
      requests: d.requests,
      dialedAt: iso(d.dialed_at),
      providerCallId: d.provider_call_id,
      outcome: d.outcome,
      error: d.error,
      endedAt: iso(d.ended_at),
      endReason: d.end_reason ?? null,
    })),
    result: resultOf(own),
  }
}

/** A notBefore at or after the call's deadline: it could only ever expire. */
export const scheduleImpossible = (notBefore: Date, expiresAt: Date, callId?: string) =>
  new DomainError(
    'schedule_impossible',
    `notBefore ${notBefore.toISOString()} is not before the call's deadline ${expiresAt.toISOString()}: it would expire without being dialed. Give an earlier notBefore or a later expiresAt.`,
    { ...(callId ? { callId } : {}), notBefore: notBefore.toISOString(), expiresAt: expiresAt.toISOString() },
  )

export const callNotFound = (id: string) => new DomainError('call_not_found', `No call has id ${id}.`, { callId: id })

export const callNotCancellable = (id: string, status: CallStatus) =>
  new DomainError('call_not_pending', `Call ${id} is ${status}; only a PENDING call can be cancelled.`, { callId: id, callStatus: status })

export const callNotRetryable = (id: string, status: CallStatus) =>
  new DomainError('call_not_retryable', `Call ${id} is ${status}; only a FAILED or EXPIRED call can be retried.`, { callId: id, callStatus: status })

export const callNotPending = (id: string, status: CallStatus) =>
  new DomainError(
    'call_not_pending',
    `Call ${id} is ${status}; its payload can only be changed while it is PENDING.`,
    // Not "status": in the problem+json body that member is the HTTP status (RFC 9457).
    { callId: id, callStatus: status },
  )
