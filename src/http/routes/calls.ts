import type { Hono } from 'hono'
import { toResource, type CallRow } from '../../calls/model.ts'
import type { CallService } from '../../calls/service.ts'
import { readJson } from '../body.ts'
import * as s from '../schemas.ts'

// /calls: create, read, change a pending call, list. Each resource lists the call's dials.

export function callRoutes(app: Hono, calls: CallService): void {
  const resources = async (rows: CallRow[]) => {
    const dials = await calls.dials(rows.filter((r) => r.dial > 0).map((r) => r.id))
    return rows.map((row) => toResource(row, dials))
  }

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
