import { createHash, randomUUID } from 'node:crypto'
import type { NewCall } from '../../store/calls.ts'
import { callsOfBatch, findBatchByKey, getBatch, insertBatch, type BatchRow } from '../../store/batches.ts'
import { lockClaimsShared } from '../../store/locks.ts'
import type { Queues } from '../../store/queues.ts'
import type { Sql } from '../../store/sql.ts'
import { cancelPending } from '../../store/transitions.ts'
import { silentLogger, type Logger } from '../../platform/log.ts'
import { observeEnded } from './observe.ts'
import { emitBatchesCompleted, emitCallEvents } from '../events/outbox.ts'
import { insertPlanned, planCreates, retryKeyRaces, type CreateCallInput } from './create.ts'
import { deleteJob } from './jobs.ts'
import { type CallRow } from '../../domain/call.ts'
import { DomainError } from '../../domain/errors.ts'
import { NO_POLICY, type CallingPolicy } from '../../domain/policy.ts'

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
  queue: Queues
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
      const results: ItemResult[] = new Array(items.length)
      const valid: Array<{ index: number; input: BatchItemInput }> = []
      items.forEach((item, index) => {
        if (isProblem(item)) results[index] = { index, result: 'rejected', problem: item }
        else valid.push({ index, input: item })
      })
      // Each item judged as a single create is (src/services/calls/create.ts), in order, so an item
      // that reuses an earlier item's key is a replay of it or a refusal.
      const plans = await planCreates(tx, calling, deps.callTtlSeconds, valid.map((v) => ({ input: v.input, idempotencyKey: v.input.idempotencyKey ?? null })))
      const calls = new Map<string, CallRow>()
      const fresh: NewCall[] = []
      plans.forEach((plan, i) => {
        const index = valid[i]!.index
        if (plan.kind === 'refused') {
          // Every refusal of a create is 422 (src/http/problem.ts).
          results[index] = { index, result: 'rejected', problem: { status: 422, code: plan.error.code, detail: plan.error.message } }
        } else if (plan.kind === 'replay') {
          results[index] = { index, result: 'replayed', callId: plan.callId }
          if (plan.call) calls.set(plan.call.id, plan.call)
        } else {
          fresh.push({ ...plan.call, batchIndex: index })
          results[index] = { index, result: 'created', callId: plan.call.id }
        }
      })

      const batchId = randomUUID()
      const batch = await insertBatch(tx, { id: batchId, idempotencyKey: batchKey ?? null, requestHash: batchKey ? requestHash : null, items: items.length, calls: fresh.length, results })
      for (const row of await insertPlanned(tx, queue, fresh, { batchId })) calls.set(row.id, row)
      // A batch none of whose items became a call is complete as it is made.
      if (fresh.length === 0) {
        await emitBatchesCompleted(tx, queue.deliveries, [batchId])
        const done = (await getBatch(tx, batchId))!
        return { batch: done, items: results, calls, replayed: false }
      }
      return { batch: { ...batch, by_status: { PENDING: fresh.length } }, items: results, calls, replayed: false }
    })

  return {
    async create(items, batchKey, requestHash) {
      const replayed = async () => {
        const existing = batchKey ? await findBatchByKey(sql, batchKey) : undefined
        return existing && replay(existing, requestHash, batchKey!)
      }
      // A key taken meanwhile by a concurrent request: the same batch (replayed) or an item's
      // (the next attempt sees it as a replay or a refusal, like any other).
      return (await replayed()) ?? retryKeyRaces(() => attempt(items, batchKey, requestHash), replayed)
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
        for (const call of cancelled) await deleteJob(tx, queue.calls, call)
        await emitCallEvents(tx, queue.deliveries, 'call.cancelled', cancelled)
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
