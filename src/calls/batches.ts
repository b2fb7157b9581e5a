import { createHash, randomUUID } from 'node:crypto'
import { findByIdempotencyKeys } from '../db/calls.ts'
import { callsOfBatch, findBatchByKey, getBatch, insertBatch, insertBatchCalls, type BatchRow, type NewBatchCall } from '../db/batches.ts'
import { lockClaimsShared, wakeWorkers } from '../db/locks.ts'
import type { CallQueue } from '../db/queue.ts'
import { PgError, pgErrorCode, type Sql } from '../db/sql.ts'
import { suppressedAmong } from '../db/suppressions.ts'
import { cancelPending, databaseNow } from '../db/transitions.ts'
import { silentLogger, type Logger } from '../log.ts'
import { observeEnded } from './observe.ts'
import { emitBatchesCompleted, emitCallEvents } from '../events/outbox.ts'
import { deleteJob } from './jobs.ts'
import { DomainError, type CallRow } from './model.ts'
import { dueTime, NO_POLICY, windowOf, type CallingPolicy } from './policy.ts'
import { fingerprint, type CreateCallInput } from './service.ts'
import { timeZonesOf } from './timezones.ts'

// POST /calls/batch: up to MAX_BATCH calls in one request, answered item by item. Every valid
// item is created in one transaction, with its job, by bulk statements (one INSERT for the
// calls, one for the jobs) and one wake-up. An Idempotency-Key covers the whole batch; an item's
// own `idempotencyKey` covers that item, across batches and single creates alike.

export const MAX_BATCH = 1_000

export interface BatchItemInput extends CreateCallInput {
  idempotencyKey?: string | undefined
}

export type ItemProblem = { status: number; code: string; detail: string; errors?: unknown }

export type ItemResult =
  | { index: number; result: 'created' | 'replayed'; callId: string }
  | { index: number; result: 'rejected'; problem: ItemProblem }

export interface BatchOutcome {
  batch: BatchRow
  items: ItemResult[]
  calls: Map<string, CallRow>
  replayed: boolean
}

export interface BatchService {
  /** `items` holds each item's parsed input, or the problem its validation found. */
  create(items: Array<BatchItemInput | ItemProblem>, batchKey: string | undefined, requestHash: string): Promise<BatchOutcome>
  get(id: string): Promise<{ batch: BatchRow; calls: CallRow[] }>
  cancel(id: string): Promise<{ batch: BatchRow; cancelled: number }>
}

const isProblem = (item: BatchItemInput | ItemProblem): item is ItemProblem => 'code' in item && 'status' in item

export const batchNotFound = (id: string) => new DomainError('batch_not_found', `No batch has id ${id}.`, { batchId: id })

export function hashBatch(text: string): string {
  return createHash('sha256').update(text).digest('hex')
}

export function createBatchService(deps: {
  sql: Sql
  queue: CallQueue
  callTtlSeconds: number
  calling?: CallingPolicy | undefined
  log?: Logger | undefined
}): BatchService {
  const { sql, queue } = deps
  const log = deps.log ?? silentLogger
  const calling = deps.calling ?? NO_POLICY

  /** The stored answer of a batch replayed under its Idempotency-Key. */
  const replay = async (batch: BatchRow, requestHash: string, key: string): Promise<BatchOutcome> => {
    if (batch.request_hash !== requestHash) {
      throw new DomainError(
        'idempotency_key_reused',
        `Idempotency-Key "${key}" was already used for a different batch (${batch.id}); use a new key for a new batch.`,
        { batchId: batch.id },
      )
    }
    const results = (batch as BatchRow & { results: ItemResult[] }).results
    const ids = results.flatMap((r) => (r.result === 'rejected' ? [] : [r.callId]))
    const calls = new Map((await sql<CallRow[]>`SELECT * FROM calls WHERE id = ANY(${ids}::uuid[])`).map((c) => [c.id, c]))
    return { batch, items: results, calls, replayed: true }
  }

  const attempt = async (items: Array<BatchItemInput | ItemProblem>, batchKey: string | undefined, requestHash: string): Promise<BatchOutcome> =>
    sql.begin(async (tx) => {
      const now = await databaseNow(tx)
      const results: ItemResult[] = new Array(items.length)
      const calls = new Map<string, CallRow>()
      const valid: Array<{ index: number; input: BatchItemInput; hash: string | null }> = []
      items.forEach((item, index) => {
        if (isProblem(item)) results[index] = { index, result: 'rejected', problem: item }
        else valid.push({ index, input: item, hash: item.idempotencyKey ? fingerprint(item) : null })
      })

      // Items whose own key was used before: the same request is a replay, another a 422.
      const keys = valid.flatMap((v) => (v.input.idempotencyKey ? [v.input.idempotencyKey] : []))
      const existing = new Map((await findByIdempotencyKeys(tx, keys)).map((c) => [c.idempotency_key!, c]))
      const suppressed = await suppressedAmong(tx, valid.map((v) => v.input.to))
      const fresh: NewBatchCall[] = []
      const claimedKeys = new Map<string, { id: string; hash: string | null }>()
      for (const { index, input, hash } of valid) {
        const reject = (status: number, code: string, detail: string) => (results[index] = { index, result: 'rejected', problem: { status, code, detail } })
        const key = input.idempotencyKey
        const earlier = key ? (existing.get(key) ?? claimedKeys.get(key)) : undefined
        if (earlier) {
          const earlierHash = 'request_hash' in earlier ? earlier.request_hash : earlier.hash
          if (earlierHash !== hash) reject(422, 'idempotency_key_reused', `Idempotency-Key "${key}" was already used for a different call (${earlier.id}).`)
          else {
            results[index] = { index, result: 'replayed', callId: earlier.id }
            if ('request_hash' in earlier) calls.set(earlier.id, earlier)
          }
          continue
        }
        if (suppressed.has(input.to)) {
          reject(422, 'phone_suppressed', `${input.to} is on the do-not-call list; no call to it is made.`)
          continue
        }
        const window = input.callingWindow ?? null
        const zones = window?.timezone ? [window.timezone] : timeZonesOf(input.to)
        if (windowOf(calling, { calling_window: window }) && !window?.timezone && zones.length === 0) {
          reject(422, 'time_zone_unknown', `The time zone of ${input.to} cannot be told from the number, and a calling window applies; give callingWindow.timezone.`)
          continue
        }
        const due = await dueTime(tx, calling, { phone: input.to, not_before: input.notBefore ?? null, calling_window: window, time_zones: zones }, now)
        if (!due) {
          reject(422, 'calling_window_never_opens', `The calling window is never open at once in all the time zones of ${input.to} (${zones.join(', ')}).`)
          continue
        }
        const id = randomUUID()
        if (key) claimedKeys.set(key, { id, hash })
        fresh.push({
          id,
          jobId: randomUUID(),
          phone: input.to,
          scriptId: input.scriptId,
          metadata: input.metadata ?? {},
          expiresAt: input.expiresAt ?? null,
          idempotencyKey: key ?? null,
          requestHash: hash,
          notBefore: input.notBefore ?? null,
          callingWindow: window,
          timeZones: zones,
          dueAt: due.at,
          waitingFor: due.waitingFor,
          batchIndex: index,
        })
        results[index] = { index, result: 'created', callId: id }
      }

      const batchId = randomUUID()
      // Independent statements, sent together (postgres.js pipelines them on the transaction's connection).
      const [batch, , rows] = await Promise.all([
        insertBatch(tx, { id: batchId, idempotencyKey: batchKey ?? null, requestHash: batchKey ? requestHash : null, items: items.length, calls: fresh.length, results }),
        queue.enqueueMany(tx, fresh.map((c) => ({ id: c.id, jobId: c.jobId, phone: c.phone, startAfter: c.dueAt }))),
        insertBatchCalls(tx, batchId, deps.callTtlSeconds, fresh),
        fresh.length ? wakeWorkers(tx) : undefined,
      ])
      for (const row of rows) calls.set(row.id, row)
      // A batch none of whose items became a call is complete as it is made.
      if (fresh.length === 0) {
        await emitBatchesCompleted(tx, queue, [batchId])
        const done = (await getBatch(tx, batchId))!
        return { batch: done, items: results, calls, replayed: false }
      }
      return { batch: { ...batch, by_status: fresh.length ? { PENDING: fresh.length } : ({} as Record<string, number>) }, items: results, calls, replayed: false }
    })

  return {
    async create(items, batchKey, requestHash) {
      if (batchKey) {
        const existing = await findBatchByKey(sql, batchKey)
        if (existing) return replay(existing, requestHash, batchKey)
      }
      for (let tries = 1; ; tries++) {
        try {
          return await attempt(items, batchKey, requestHash)
        } catch (err) {
          // A key taken meanwhile by a concurrent request: the same batch (replay it) or an item
          // key (look again: it is now a replay or a conflict like any other).
          if (pgErrorCode(err) !== PgError.uniqueViolation || tries >= 3) throw err
          if (batchKey) {
            const existing = await findBatchByKey(sql, batchKey)
            if (existing) return replay(existing, requestHash, batchKey)
          }
        }
      }
    },

    async get(id) {
      const batch = await getBatch(sql, id)
      if (!batch) throw batchNotFound(id)
      return { batch, calls: await callsOfBatch(sql, id) }
    },

    async cancel(id) {
      return sql.begin(async (tx) => {
        await lockClaimsShared(tx)
        const pending = await tx<CallRow[]>`SELECT * FROM calls WHERE batch_id = ${id} AND status = 'PENDING' FOR UPDATE`
        const cancelled = await cancelPending(tx, pending.map((c) => c.id))
        for (const call of cancelled) await deleteJob(tx, queue, call)
        await emitCallEvents(tx, queue, 'call.cancelled', cancelled)
        const batch = await getBatch(tx, id)
        if (!batch) throw batchNotFound(id)
        return { batch, cancelled }
      }).then(({ batch, cancelled }) => {
        observeEnded(log, cancelled, 'CANCELLED', { batchId: id })
        return { batch, cancelled: cancelled.length }
      })
    },
  }
}
