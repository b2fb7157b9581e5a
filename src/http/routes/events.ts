import type { Hono } from 'hono'
import type { DeliveryRow, EventRow } from '../../store/events.ts'
import type { EventService } from '../../services/events/endpoints.ts'
import { readJson } from '../body.ts'
import * as s from '../schemas.ts'

// Where status events go (/event-endpoints) and what was sent (/events: the delivery log, and
// replay).

const deliveryResource = (d: DeliveryRow) => ({
  endpointId: d.endpoint_id,
  status: d.status,
  attempts: d.attempts,
  lastAttemptAt: d.last_attempt_at?.toISOString() ?? null,
  lastStatusCode: d.last_status_code,
  lastError: d.last_error,
  nextAttemptAt: d.next_attempt_at?.toISOString() ?? null,
  deliveredAt: d.delivered_at?.toISOString() ?? null,
})

const eventResource = ({ event, deliveries }: { event: EventRow; deliveries: DeliveryRow[] }) => ({
  id: event.id,
  type: event.type,
  callId: event.call_id,
  batchId: event.batch_id,
  createdAt: event.created_at.toISOString(),
  payload: event.payload,
  deliveries: deliveries.map(deliveryResource),
})

export function eventRoutes(app: Hono, events: EventService): void {
  app.post('/event-endpoints', async (c) => {
    const body = s.parseBody(s.EndpointBody, await readJson(c))
    const { endpoint, secret } = await events.addEndpoint(body)
    c.header('Location', `/event-endpoints/${endpoint.id}`)
    // The secret is shown here and on rotation only; it is what the receiver verifies with.
    return c.json({ ...endpoint, secret }, 201)
  })

  app.get('/event-endpoints', async (c) => {
    s.parse(s.NoQuery, s.singleQuery(c.req.queries()), 'query')
    return c.json({ data: await events.endpoints() })
  })

  app.delete('/event-endpoints/:id', async (c) => {
    await events.removeEndpoint(s.parse(s.Uuid, c.req.param('id'), 'path.id'))
    return c.body(null, 204)
  })

  app.post('/event-endpoints/:id/rotate-secret', async (c) => {
    const { endpoint, secret } = await events.rotateSecret(s.parse(s.Uuid, c.req.param('id'), 'path.id'))
    return c.json({ ...endpoint, secret })
  })

  app.get('/events', async (c) => {
    const q = s.parse(s.EventsQuery, s.singleQuery(c.req.queries()), 'query')
    const page = await events.events({ callId: q.callId, batchId: q.batchId, type: q.type, limit: q.limit + 1, beforeSeq: q.cursor })
    const shown = page.slice(0, q.limit)
    const nextCursor = page.length > q.limit ? shown[shown.length - 1]!.event.seq : null
    return c.json({ data: shown.map(eventResource), nextCursor })
  })

  app.get('/events/:id', async (c) => {
    return c.json(eventResource(await events.event(s.parse(s.EventId, c.req.param('id'), 'path.id'))))
  })

  app.post('/events/:id/replay', async (c) => {
    const id = s.parse(s.EventId, c.req.param('id'), 'path.id')
    const body = s.parseBody(s.ReplayBody, await readJson(c, undefined, true))
    return c.json(await events.replay(id, body.endpointId), 202)
  })
}
