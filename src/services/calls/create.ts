import { jobsForNewCalls } from './jobs.ts'
import { createHash, randomUUID } from 'node:crypto'
import { findByIdempotencyKeys, insertCalls, type NewCall } from '../../store/calls.ts'
import type { Queues } from '../../store/queues.ts'
import { PgError, pgErrorCode, type Tx } from '../../store/sql.ts'
import { suppressedAmongAndNow } from '../../store/suppressions.ts'
import { databaseNow } from '../../store/transitions.ts'
import { scheduleImpossible, type CallRow } from '../../domain/call.ts'
import { DomainError } from '../../domain/errors.ts'
import { windowOf, type CallingPolicy, type CallTiming, type WaitingFor } from '../../domain/policy.ts'
import { dueTime } from './due.ts'
import { timeZonesOf } from './timezones.ts'
import type { CallingWindow } from '../../domain/window.ts'

// Making calls, one (POST /calls) or a thousand (POST /calls/batch): both judge each request
// here, in the transaction that inserts it, with the same rules and the same words, and insert
// what passes with its job by the same two statements.

export interface CreateCallInput {
  to: string
  scriptId: string
  metadata?: Record<string, unknown> | undefined
  expiresAt?: Date | undefined
  notBefore?: Date | undefined
  callingWindow?: CallingWindow | undefined
}

export interface CreateRequest {
  input: CreateCallInput
  idempotencyKey: string | null
}

/** What a request becomes: a new call, the call an earlier request with its key made, or a refusal. */
export type Plan =
  | { kind: 'create'; call: NewCall }
  | { kind: 'replay'; callId: string; call?: CallRow | undefined }
  | { kind: 'refused'; error: DomainError }

/** Stable fingerprint of a create request, so a reused Idempotency-Key with another body is caught. */
export function fingerprint(input: CreateCallInput): string {
  const canonical = (value: unknown): unknown =>
    value && typeof value === 'object' && !Array.isArray(value)
      ? Object.fromEntries(
          Object.keys(value)
            .sort()
            .map((k) => [k, canonical((value as Record<string, unknown>)[k])]),
        )
      : Array.isArray(value)
        ? value.map(canonical)
        : value
  const body = {
    to: input.to,
    scriptId: input.scriptId,
    metadata: input.metadata ?? {},
    expiresAt: input.expiresAt?.toISOString() ?? null,
    notBefore: input.notBefore?.toISOString() ?? null,
    callingWindow: input.callingWindow ?? null,
  }
  return createHash('sha256').update(JSON.stringify(canonical(body))).digest('hex')
}

export const phoneSuppressed = (phone: string) =>
  new DomainError('phone_suppressed', `${phone} is on the do-not-call list; no call to it is made.`, { phone })

export const idempotencyKeyReused = (key: string, callId: string) =>
  new DomainError(
    'idempotency_key_reused',
    `Idempotency-Key "${key}" was already used for a different request (call ${callId}); use a new key for a new call.`,
    { callId },
  )

export const timeZoneUnknown = (phone: string) =>
  new DomainError(
    'time_zone_unknown',
    `The time zone of ${phone} cannot be told from the number, and a calling window applies; give callingWindow.timezone.`,
    { phone },
  )

export const windowNeverOpens = (phone: string, zones: string[]) =>
  new DomainError(
    'calling_window_never_opens',
    `The calling window is never open at once in all the time zones of ${phone} (${zones.join(', ')}); give callingWindow.timezone or a wider window.`,
    { phone, timeZones: zones },
  )

/**
 * The zones a call's window is judged in: its window's own timezone, else the number's (kept
 * even while no window applies, so a window configured later can judge the call). A
 * time_zone_unknown error when a window applies and the number cannot be placed.
 */
export function zonesFor(calling: CallingPolicy, phone: string, window: CallingWindow | null): string[] {
  if (window?.timezone) return [window.timezone]
  const zones = timeZonesOf(phone)
  if (windowOf(calling, { calling_window: window }) && zones.length === 0) throw timeZoneUnknown(phone)
  return zones
}

/** When a call may first go under `calling`; a 422 when its window never opens in every one of its zones. */
export async function firstDue(tx: Tx, calling: CallingPolicy, call: CallTiming): Promise<{ at: Date; waitingFor: WaitingFor | null }> {
  const due = await dueTime(tx, calling, call, await databaseNow(tx))
  if (!due) throw windowNeverOpens(call.phone, call.time_zones)
  return due
}

/**
 * Judges each request in order, in the transaction that will insert it: a key used before is a
 * replay (same body) or a refusal (another body), also when an earlier request of the same
 * list used it; then the do-not-call list, the number's time zones and the calling window.
 * Reads only; what passes gets its id, its job's id and its due time.
 */
export async function planCreates(tx: Tx, calling: CallingPolicy, ttlSeconds: number, requests: CreateRequest[]): Promise<Plan[]> {
  const keys = requests.flatMap((r) => (r.idempotencyKey ? [r.idempotencyKey] : []))
  const used = new Map<string, { id: string; hash: string | null; call?: CallRow }>(
    (await findByIdempotencyKeys(tx, keys)).map((c) => [c.idempotency_key!, { id: c.id, hash: c.request_hash, call: c }]),
  )
  const { suppressed, now } = await suppressedAmongAndNow(tx, [...new Set(requests.map((r) => r.input.to))])
  const plans: Plan[] = []
  for (const { input, idempotencyKey: key } of requests) {
    const refuse = (error: DomainError) => plans.push({ kind: 'refused', error })
    const hash = key ? fingerprint(input) : null
    const earlier = key ? used.get(key) : undefined
    if (earlier) {
      if (earlier.hash === hash) plans.push({ kind: 'replay', callId: earlier.id, call: earlier.call })
      else refuse(idempotencyKeyReused(key!, earlier.id))
      continue
    }
    if (suppressed.has(input.to)) {
      refuse(phoneSuppressed(input.to))
      continue
    }
    // Its deadline: expiresAt, else CALL_TTL_SECONDS from now on the database's clock (the
    // transaction's now(), as the row's created_at).
    const deadline = input.expiresAt ?? new Date(now.getTime() + ttlSeconds * 1000)
    if (input.notBefore && input.notBefore.getTime() >= deadline.getTime()) {
      refuse(scheduleImpossible(input.notBefore, deadline))
      continue
    }
    const window = input.callingWindow ?? null
    let zones: string[]
    try {
      zones = zonesFor(calling, input.to, window)
    } catch (err) {
      refuse(err as DomainError)
      continue
    }
    const timing = { phone: input.to, not_before: input.notBefore ?? null, calling_window: window, time_zones: zones }
    const due = await dueTime(tx, calling, timing, now)
    if (!due) {
      refuse(windowNeverOpens(input.to, zones))
      continue
    }
    const id = randomUUID()
    if (key) used.set(key, { id, hash })
    plans.push({
      kind: 'create',
      call: {
        id,
        jobId: randomUUID(),
        phone: input.to,
        scriptId: input.scriptId,
        metadata: input.metadata ?? {},
        expiresAt: deadline,
        idempotencyKey: key,
        requestHash: hash,
        notBefore: timing.not_before,
        callingWindow: window,
        timeZones: zones,
        dueAt: due.at,
        waitingFor: due.waitingFor,
        batchIndex: null,
      },
    })
  }
  return plans
}

/**
 * The planned calls and their jobs, in the caller's transaction; the insert wakes the workers
 * when it commits. pg-boss's insert goes first: every statement after it is ours.
 */
export async function insertPlanned(
  tx: Tx,
  queue: Queues,
  calls: NewCall[],
  options: { batchId: string | null },
): Promise<CallRow[]> {
  if (calls.length === 0) return []
  await jobsForNewCalls(tx, queue.calls, calls.map((c) => ({ id: c.id, jobId: c.jobId, phone: c.phone, startAfter: c.dueAt })))
  return insertCalls(tx, calls, options)
}

/**
 * Runs `attempt` (a whole transaction) again when it lost a race for a key to a concurrent
 * request (a unique violation): the next attempt sees the winner's row and answers as a replay
 * or a refusal. `settled` may answer instead before an attempt is made again.
 */
export async function retryKeyRaces<T>(attempt: () => Promise<T>, settled: () => Promise<T | undefined> = async () => undefined): Promise<T> {
  for (let tries = 1; ; tries++) {
    try {
      return await attempt()
    } catch (err) {
      if (pgErrorCode(err) !== PgError.uniqueViolation || tries >= 3) throw err
      const answer = await settled()
      if (answer !== undefined) return answer
    }
  }
}
