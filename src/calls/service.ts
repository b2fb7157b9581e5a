import { createHash, randomUUID } from 'node:crypto'
import * as calls from '../db/calls.ts'
import { lockClaimsShared } from '../db/locks.ts'
import type { CallQueue } from '../db/queue.ts'
import { PgError, pgErrorCode, type Sql } from '../db/sql.ts'
import { insertCallWithJob, requeueCall } from './jobs.ts'
import { DomainError, callNotFound, callNotPending, type CallRow, type CallStatus } from './model.ts'

// What clients can do to calls. Each function is one transaction; the HTTP layer only
// validates input and shapes the answer.

export interface CreateCallInput {
  to: string
  scriptId: string
  metadata?: Record<string, unknown> | undefined
  expiresAt?: Date | undefined
}

export interface CallService {
  create(input: CreateCallInput, idempotencyKey?: string): Promise<{ call: CallRow; replayed: boolean }>
  get(id: string): Promise<CallRow>
  update(id: string, change: { to?: string; scriptId?: string; metadata?: Record<string, unknown> }): Promise<CallRow>
  list(q: calls.ListQuery): Promise<CallRow[]>
  metrics(): Promise<{ counts: Record<CallStatus, number>; inFlight: number; limit: number }>
}

/** Stable fingerprint of a create request, so a reused Idempotency-Key with another body is caught. */
function fingerprint(input: CreateCallInput): string {
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
  const body = { to: input.to, scriptId: input.scriptId, metadata: input.metadata ?? {}, expiresAt: input.expiresAt?.toISOString() ?? null }
  return createHash('sha256').update(JSON.stringify(canonical(body))).digest('hex')
}

export function createCallService(deps: {
  sql: Sql
  queue: CallQueue
  callTtlSeconds: number
  maxConcurrentCalls: number
}): CallService {
  const { sql, queue } = deps

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

  return {
    async create(input, idempotencyKey) {
      const hash = idempotencyKey ? fingerprint(input) : null
      if (idempotencyKey) {
        const existing = await calls.findByIdempotencyKey(sql, idempotencyKey)
        if (existing) return replay(existing, hash!, idempotencyKey)
      }
      try {
        const call = await sql.begin((tx) =>
          insertCallWithJob(tx, queue, {
            id: randomUUID(),
            phone: input.to,
            scriptId: input.scriptId,
            metadata: input.metadata ?? {},
            expiresAt: input.expiresAt ?? null,
            ttlSeconds: deps.callTtlSeconds,
            idempotencyKey: idempotencyKey ?? null,
            requestHash: hash,
          }),
        )
        return { call, replayed: false }
      } catch (err) {
        // Two requests with the same new key raced; the loser answers like a replay.
        if (idempotencyKey && pgErrorCode(err) === PgError.uniqueViolation) {
          const existing = await calls.findByIdempotencyKey(sql, idempotencyKey)
          if (existing) return replay(existing, hash!, idempotencyKey)
        }
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
        const row = await calls.updatePendingPayload(tx, id, {
          phone: change.to,
          scriptId: change.scriptId,
          metadata: change.metadata,
        })
        if (!row) throw callNotPending(id, current.status)
        // The job is keyed by phone: a new number needs a new job.
        if (row.phone !== current.phone) row.job_id = await requeueCall(tx, queue, row)
        return row
      })
    },

    async list(q) {
      const { rows, cursorFound } = await calls.listCalls(sql, q)
      if (!cursorFound) throw new DomainError('invalid_cursor', 'The cursor does not point at a known call; start again without it.')
      return rows
    },

    async metrics() {
      const counts = await calls.countByStatus(sql)
      return { counts, inFlight: counts.IN_PROGRESS, limit: deps.maxConcurrentCalls }
    },
  }
}
