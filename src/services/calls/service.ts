import * as calls from '../../store/calls.ts'
import type { DialRow } from '../../domain/call.ts'
import { dialsOf } from '../../store/dials.ts'
import { lockClaimsShared } from '../../store/locks.ts'
import type { Queues } from '../../store/queues.ts'
import { readSettings } from '../../store/settings.ts'
import type { Sql } from '../../store/sql.ts'
import { isSuppressed } from '../../store/suppressions.ts'
import { silentLogger, type Logger } from '../../platform/log.ts'
import { observeEnded } from './observe.ts'
import { cancelCall, retryCall } from './actions.ts'
import { firstDue, insertPlanned, phoneSuppressed, planCreates, retryKeyRaces, zonesFor, type CreateCallInput } from './create.ts'
import { rescheduleCall } from './jobs.ts'
import { callNotFound, callNotPending, holdupOf, scheduleImpossible, type CallRow, type CallStatus, type Holdup } from '../../domain/call.ts'
import { DomainError } from '../../domain/errors.ts'
import { NO_POLICY, type CallingPolicy } from '../../domain/policy.ts'
import type { CallingWindow } from '../../domain/window.ts'

// What clients can do to calls. Each function is one transaction; the HTTP layer only
// validates input and shapes the answer.

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
  /**
   * FAILED or EXPIRED → PENDING, for a new dial: a 409 naming its status otherwise. It may wait
   * until `expiresAt`, or by default as long as it first could, counted from now.
   */
  retry(id: string, options?: { expiresAt?: Date | undefined }): Promise<CallRow>
  list(q: calls.ListQuery): Promise<CallRow[]>
  /** The dials of these calls, for their resources. */
  dials(ids: string[]): Promise<DialRow[]>
  /** What holds back each of these calls that is PENDING with nothing of its own to wait for (paused, slot, phone). */
  holdups(rows: CallRow[]): Promise<Map<string, Holdup>>
  metrics(): Promise<CallMetrics>
}

export function createCallService(deps: {
  sql: Sql
  queue: Queues
  callTtlSeconds: number
  maxConcurrentCalls: number
  calling?: CallingPolicy | undefined
  log?: Logger | undefined
}): CallService {
  const { sql, queue } = deps
  const log = deps.log ?? silentLogger
  const calling = deps.calling ?? NO_POLICY


  return {
    async create(input, idempotencyKey) {
      const created = await retryKeyRaces(() =>
        sql.begin(async (tx) => {
          const [plan] = await planCreates(tx, calling, deps.callTtlSeconds, [{ input, idempotencyKey: idempotencyKey ?? null }])
          if (plan!.kind === 'refused') throw plan!.error
          if (plan!.kind === 'replay') return { call: plan!.call!, replayed: true }
          const [call] = await insertPlanned(tx, queue, [plan!.call], { batchId: null })
          return { call: call!, replayed: false }
        }),
      )
      if (!created.replayed) {
        log.info('call created', { callId: created.call.id, phone: created.call.phone, to: 'PENDING', dueAt: created.call.next_attempt_at?.toISOString() })
      }
      return created
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
        if (change.notBefore && current.expires_at && change.notBefore.getTime() >= current.expires_at.getTime()) {
          throw scheduleImpossible(change.notBefore, current.expires_at, id)
        }
        const phoneChanged = change.to !== undefined && change.to !== current.phone
        if (phoneChanged && (await isSuppressed(tx, change.to!))) throw phoneSuppressed(change.to!)
        const rescheduled = phoneChanged || change.notBefore !== undefined || change.callingWindow !== undefined
        const ownWindow = change.callingWindow !== undefined ? change.callingWindow : current.calling_window
        const timeZones = rescheduled ? zonesFor(calling, change.to ?? current.phone, ownWindow) : undefined
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
          const due = await firstDue(tx, calling, row)
          row.job_id = await rescheduleCall(tx, queue.calls, row, due.at, due.waitingFor)
          const fresh = await calls.getCall(tx, id)
          return fresh!
        }
        return row
      })
    },

    async cancel(id) {
      const cancelled = await sql.begin((tx) => cancelCall(tx, queue, id))
      observeEnded(log, [cancelled], 'CANCELLED')
      return cancelled
    },

    async retry(id, options = {}) {
      const retried = await sql.begin((tx) => retryCall(tx, { queue, calling }, id, options))
      log.info('call retried', { callId: id, phone: retried.phone, to: 'PENDING', dueAt: retried.next_attempt_at?.toISOString() })
      return retried
    },

    async list(q) {
      const { rows, cursorFound } = await calls.listCalls(sql, q)
      if (!cursorFound) throw new DomainError('invalid_cursor', 'The cursor does not point at a known call; start again without it.')
      return rows
    },

    dials: (ids) => dialsOf(sql, ids),

    async holdups(rows) {
      const free = rows.filter((r) => r.status === 'PENDING' && !r.waiting_for)
      const holdups = new Map<string, Holdup>()
      if (free.length === 0) return holdups
      const facts = await calls.holdupFacts(sql, [...new Set(free.map((r) => r.phone))], deps.maxConcurrentCalls)
      for (const row of free) {
        const holdup = holdupOf(row, facts)
        if (holdup) holdups.set(row.id, holdup)
      }
      return holdups
    },

    async metrics() {
      const counts = await calls.countByStatus(sql)
      const settings = await readSettings(sql)
      return {
        counts,
        inFlight: counts.IN_PROGRESS,
        limit: settings.maxConcurrentCalls ?? deps.maxConcurrentCalls,
        paused: settings.paused,
      }
    },
  }
}
