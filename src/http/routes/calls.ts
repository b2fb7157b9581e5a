import type { Hono } from 'hono'
import { hashBatch, type BatchItemInput, type BatchService, type ItemProblem } from '../../services/calls/batches.ts'
import { toResource, type CallRow } from '../../domain/call.ts'
import type { CallService } from '../../services/calls/service.ts'
import { batchResource } from '../../store/batches.ts'
import { parseJsonBody, readBody, readJson } from '../body.ts'
import * as s from '../schemas.ts'

// /calls: create, read, change a pending call, list. Each resource lists the call's dials.

/** The resources of these calls, each with its dials (one query for all). */
async function resourcesOf(calls: CallService, rows: CallRow[]) {
  const dials = await calls.dials(rows.filter((r) => r.dial > 0).map((r) => r.id))
  const holdups = await calls.holdups(rows)
  return rows.map((row) => toResource(row, dials, holdups.get(row.id) ?? null))
}

export function callRoutes(app: Hono, calls: CallService): void {
  const resources = (rows: CallRow[]) => resourcesOf(calls, rows)

  app.post('/calls', async (c) => {
    const key = c.req.header('idempotency-key')
    const idempotencyKey = key === undefined ? undefined : s.parse(s.IdempotencyKey, key, 'header.Idempotency-Key')
    const body = s.parseBody(s.CreateCallBody, await readJson(c))
    const { call, replayed } = await calls.create(body, idempotencyKey)
    c.header('Location', `/calls/${call.id}`)
    if (replayed) c.header('Idempotent-Replayed', 'true')
    return c.json((await resources([call]))[0]!, replayed ? 200 : 201)
  })

  app.get('/calls', async (c) => {
    const q = s.parse(s.ListQuery, s.singleQuery(c.req.queries()), 'query')
    const after = q.cursor === undefined ? undefined : s.decodeCursor(q.cursor)
    const rows = await calls.list({ status: q.status, limit: q.limit + 1, after })
    const page = rows.slice(0, q.limit)
    const nextCursor = rows.length > q.limit ? s.encodeCursor(page[page.length - 1]!.id) : null
    return c.json({ data: await resources(page), nextCursor })
  })

  app.get('/calls/:id', async (c) => {
    const id = s.parse(s.CallId, c.req.param('id'), 'path.id')
    return c.json((await resources([await calls.get(id)]))[0]!)
  })

  app.patch('/calls/:id', async (c) => {
    const id = s.parse(s.CallId, c.req.param('id'), 'path.id')
    const body = s.parseBody(s.UpdateCallBody, await readJson(c))
    return c.json((await resources([await calls.update(id, body)]))[0]!)
  })
}

/** POST /calls/batch and a batch's read and cancel; registered before /calls/:id. */
export function batchRoutes(app: Hono, calls: CallService, batches: BatchService): void {
  const resources = (rows: CallRow[]) => resourcesOf(calls, rows)

  app.post('/calls/batch', async (c) => {
    const key = c.req.header('idempotency-key')
    const batchKey = key === undefined ? undefined : s.parse(s.IdempotencyKey, key, 'header.Idempotency-Key')
    const text = await readBody(c, BATCH_BODY_BYTES)
    const body = s.parseBody(s.BatchBody, parseJsonBody(c, text))
    // Each item on its own: a bad one is answered with its index and problem, the rest go on.
    const items = body.calls.map((item, index): BatchItemInput | ItemProblem => {
      const judged = s.parseItem(s.BatchItem, item, 'calls', index, 'call')
      return 'value' in judged ? judged.value : judged.problem
    })
    const outcome = await batches.create(items, batchKey, hashBatch(text))
    const byId = new Map((await resources([...outcome.calls.values()])).map((r) => [r.id, r]))
    if (outcome.replayed) c.header('Idempotent-Replayed', 'true')
    c.header('Location', `/calls/batch/${outcome.batch.id}`)
    const count = (result: string) => outcome.items.filter((i) => i.result === result).length
    return c.json(
      {
        batchId: outcome.batch.id,
        created: count('created'),
        replayed: count('replayed'),
        rejected: count('rejected'),
        items: outcome.items.map((item) => (item.result === 'rejected' ? item : { index: item.index, result: item.result, call: byId.get(item.callId) })),
      },
      outcome.replayed ? 200 : 201,
    )
  })

  app.get('/calls/batch/:id', async (c) => {
    const id = s.parse(s.CallId, c.req.param('id'), 'path.id')
    const { batch, calls: rows } = await batches.get(id)
    return c.json({ ...batchResource(batch), calls: await resources(rows) })
  })

  app.post('/calls/batch/:id/cancel', async (c) => {
    const id = s.parse(s.CallId, c.req.param('id'), 'path.id')
    const { batch, cancelled } = await batches.cancel(id)
    return c.json({ ...batchResource(batch), cancelled })
  })

  app.post('/calls/:id/cancel', async (c) => {
    const id = s.parse(s.CallId, c.req.param('id'), 'path.id')
    return c.json((await resources([await calls.cancel(id)]))[0]!)
  })

  app.post('/calls/:id/retry', async (c) => {
    const id = s.parse(s.CallId, c.req.param('id'), 'path.id')
    const body = s.parseBody(s.RetryCallBody, await readJson(c, undefined, true))
    return c.json((await resources([await calls.retry(id, body)]))[0]!)
  })
}

/** A batch may carry a thousand calls: up to 2 MiB. */
const BATCH_BODY_BYTES = 2 * 1024 * 1024
