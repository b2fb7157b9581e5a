import { createHash, randomUUID } from 'node:crypto'
import * as calls from '../db/calls.ts'
import { dialsOf, type DialRow } from '../db/dials.ts'
import { lockClaimsShared } from '../db/locks.ts'
import type { CallQueue } from '../db/queue.ts'
import { readSettings } from '../db/settings.ts'
import { PgError, pgErrorCode, type Sql, type Tx } from '../db/sql.ts'
import { isSuppressed, refuseSuppressed, suppressionAndNow } from '../db/suppressions.ts'
import { silentLogger, type Logger } from '../log.ts'
import { observeEnded } from './observe.ts'
import { cancelPending, databaseNow } from '../db/transitions.ts'
import { emitCallEvents } from '../events/outbox.ts'
import { deleteJob, insertCallWithJob, rescheduleCall } from './jobs.ts'
import { DomainError, callNotCancellable, callNotFound, callNotPending, type CallRow, type CallStatus } from './model.ts'
import { dueTime, NO_POLICY, policyRestricts, windowOf, type CallingPolicy, type CallTiming } from './policy.ts'
import { timeZonesOf } from './timezones.ts'
import type { CallingWindow } from './window.ts'

// What clients can do to calls. Each function is one transaction; the HTTP layer only
// validates input and shapes the answer.

export interface CreateCallInput {
  to: string
  scriptId: string
  metadata?: Record<string, unknown> | undefined
  expiresAt?: Date | undefined
  notBefore?: Date | undefined
  callingWindow?: CallingWindow | undefined
}

export interface CallChange {
  to?: string | undefined
  scriptId?: string | undefined
  metadata?: Record<string, unknown> | undefined
  /** null: no longer scheduled. */
  notBefore?: Date | null | undefined
  /** null: back to the global CALLING_WINDOW. */
  callingWindow?: CallingWindow | null | undefined
}

export interface CallMetrics {
  counts: Record<CallStatus, number>
  inFlight: number
  limit: number
  paused: boolean
}

export interface CallService {
  create(input: CreateCallInput, idempotencyKey?: string): Promise<{ call: CallRow; replayed: boolean }>
  get(id: string): Promise<CallRow>
  update(id: string, change: CallChange): Promise<CallRow>
  /** PENDING → CANCELLED; a 409 naming its status otherwise. */
  cancel(id: string): Promise<CallRow>
  list(q: calls.ListQuery): Promise<CallRow[]>
  /** The dials of these calls, for their resources. */
  dials(ids: string[]): Promise<DialRow[]>
  metrics(): Promise<CallMetrics>
}

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

export function createCallService(deps: {
  sql: Sql
  queue: CallQueue
  callTtlSeconds: number
  maxConcurrentCalls: number
  calling?: CallingPolicy | undefined
  log?: Logger | undefined
}): CallService {
  const { sql, queue } = deps
  const log = deps.log ?? silentLogger
  const calling = deps.calling ?? NO_POLICY

  const replay = (existing: CallRow, hash: string, key: string) => {
    if (existing.request_hash !== hash) {
      throw new DomainError(
        'idempotency_key_reused',
        `Idempotency-Key "${key}" was already used for a different request (call ${existing.id}); use a new key for a new call.`,
        { callId: existing.id },
      )
    }
    return { call: existing, replayed: true }
  }

  /**
   * The zones a call's window is judged in: the window's own timezone, else the number's (kept
   * even while no window applies, so a window configured later can judge the call).
   */
  const zonesFor = (phone: string, window: CallingWindow | null): string[] => {
    if (window?.timezone) return [window.timezone]
    const zones = timeZonesOf(phone)
    if (window && zones.length === 0) {
      throw new DomainError(
        'time_zone_unknown',
        `The time zone of ${phone} cannot be told from the number, and a calling window applies; give callingWindow.timezone.`,
        { phone },
      )
    }
    return zones
  }

  /** When a call may first go; a 422 when its window never opens in every one of its zones. */
  const firstDue = async (tx: Tx, call: CallTiming, now?: Date) => {
    const due = await dueTime(tx, calling, call, now ?? (await databaseNow(tx)))
    if (!due) {
      throw new DomainError(
        'calling_window_never_opens',
        `The calling window is never open at once in all the time zones of ${call.phone} (${call.time_zones.join(', ')}); give callingWindow.timezone or a wider window.`,
        { phone: call.phone, timeZones: call.time_zones },
      )
    }
    return due
  }

  return {
    async create(input, idempotencyKey) {
      const hash = idempotencyKey ? fingerprint(input) : null
      if (idempotencyKey) {
        const existing = await calls.findByIdempotencyKey(sql, idempotencyKey)
        if (existing) return replay(existing, hash!, idempotencyKey)
      }
      const window = input.callingWindow ?? null
      const timing: CallTiming = {
        phone: input.to,
        not_before: input.notBefore ?? null,
        calling_window: window,
        time_zones: zonesFor(input.to, windowOf(calling, { calling_window: window })),
      }
      try {
        const call = await sql.begin(async (tx) => {
          const row = {
            id: randomUUID(),
            phone: input.to,
            scriptId: input.scriptId,
            metadata: input.metadata ?? {},
            expiresAt: input.expiresAt ?? null,
            ttlSeconds: deps.callTtlSeconds,
            idempotencyKey: idempotencyKey ?? null,
            requestHash: hash,
            notBefore: timing.not_before,
            callingWindow: window,
            timeZones: timing.time_zones,
          }
          if (!policyRestricts(calling, timing)) {
            // Due now whatever the clock says: the do-not-call check, both inserts and COMMIT go
            // out with BEGIN (one round trip); a listed number fails the check, which rolls the
            // rest back.
            void refuseSuppressed(tx, input.to).catch(() => { /* the transaction rejects with it */ })
            return insertCallWithJob(tx, queue, row, { commit: true })
          }
          const { suppressed, now } = await suppressionAndNow(tx, input.to)
          if (suppressed) throw phoneSuppressed(input.to)
          const due = await firstDue(tx, timing, now)
          return insertCallWithJob(tx, queue, { ...row, dueAt: due.at, waitingFor: due.waitingFor })
        })
        log.info('call created', { callId: call.id, phone: call.phone, to: 'PENDING', dueAt: call.next_attempt_at?.toISOString() })
        return { call, replayed: false }
      } catch (err) {
        // Two requests with the same new key raced; the loser answers like a replay.
        if (idempotencyKey && pgErrorCode(err) === PgError.uniqueViolation) {
          const existing = await calls.findByIdempotencyKey(sql, idempotencyKey)
          if (existing) return replay(existing, hash!, idempotencyKey)
        }
        if (pgErrorCode(err) === PgError.phoneSuppressed) throw phoneSuppressed(input.to)
        throw err
      }
    },

    async get(id) {
      const row = await calls.getCall(sql, id)
      if (!row) throw callNotFound(id)
      return row
    },

    async update(id, change) {
      return sql.begin(async (tx) => {
        // Shared claim lock: a claim of this very call either finished before (we see
        // IN_PROGRESS and refuse) or starts after we commit (and dials the new payload).
        await lockClaimsShared(tx)
        const current = await calls.lockCall(tx, id)
        if (!current) throw callNotFound(id)
        if (current.status !== 'PENDING') throw callNotPending(id, current.status)
        const phoneChanged = change.to !== undefined && change.to !== current.phone
        if (phoneChanged && (await isSuppressed(tx, change.to!))) throw phoneSuppressed(change.to!)
        const rescheduled = phoneChanged || change.notBefore !== undefined || change.callingWindow !== undefined
        const ownWindow = change.callingWindow !== undefined ? change.callingWindow : current.calling_window
        const timeZones = rescheduled ? zonesFor(change.to ?? current.phone, windowOf(calling, { calling_window: ownWindow })) : undefined
        const row = await calls.updatePendingPayload(tx, id, {
          phone: change.to,
          scriptId: change.scriptId,
          metadata: change.metadata,
          notBefore: change.notBefore,
          callingWindow: change.callingWindow,
          timeZones,
        })
        if (!row) throw callNotPending(id, current.status)
        // A new number needs a new job (jobs are keyed by phone); a new schedule a new due time.
        if (rescheduled) {
          const due = await firstDue(tx, row)
          row.job_id = await rescheduleCall(tx, queue, row, due.at, due.waitingFor)
          const fresh = await calls.getCall(tx, id)
          return fresh!
        }
        return row
      })
    },

    async cancel(id) {
      return sql.begin(async (tx) => {
        // As PATCH: a claim of this call either committed first (we see IN_PROGRESS and refuse)
        // or waits for us and finds it CANCELLED; it is never both cancelled and dialed.
        await lockClaimsShared(tx)
        const current = await calls.lockCall(tx, id)
        if (!current) throw callNotFound(id)
        const [cancelled] = await cancelPending(tx, [id])
        if (!cancelled) throw callNotCancellable(id, current.status)
        await deleteJob(tx, queue, cancelled)
        await emitCallEvents(tx, queue, 'call.cancelled', [cancelled])
        return cancelled
      }).then((cancelled) => {
        observeEnded(log, [cancelled], 'CANCELLED')
        return cancelled
      })
    },

    async list(q) {
      const { rows, cursorFound } = await calls.listCalls(sql, q)
      if (!cursorFound) throw new DomainError('invalid_cursor', 'The cursor does not point at a known call; start again without it.')
      return rows
    },

    dials: (ids) => dialsOf(sql, ids),

    async metrics() {
      const [counts, settings] = await Promise.all([calls.countByStatus(sql), readSettings(sql)])
      return {
        counts,
        inFlight: counts.IN_PROGRESS,
        limit: settings.maxConcurrentCalls ?? deps.maxConcurrentCalls,
        paused: settings.paused,
      }
    },
  }
}
