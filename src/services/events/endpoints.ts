import { randomBytes } from 'node:crypto'
import { DomainError } from '../../domain/errors.ts'
import * as db from '../../store/events.ts'
import type { DeliveryJobs } from '../../store/delivery-jobs.ts'
import type { Sql } from '../../store/sql.ts'
import { wakeDeliveries } from '../../store/notify.ts'
import { destinationProblem } from './destinations.ts'

// Event endpoints (where status events go) and the event log, as the API offers them.

export interface EndpointView {
  id: string
  url: string
  eventTypes: string[] | null
  source: 'env' | 'api'
  createdAt: string
}

export const endpointView = (e: db.EndpointRow): EndpointView => ({
  id: e.id,
  url: e.url,
  eventTypes: e.event_types,
  source: e.source,
  createdAt: e.created_at.toISOString(),
})

const endpointNotFound = (id: string) => new DomainError('endpoint_not_found', `No event endpoint has id ${id}.`, { endpointId: id })
export const eventNotFound = (id: string) => new DomainError('event_not_found', `No event has id ${id}.`, { eventId: id })

/** A fresh Standard Webhooks secret. */
export const newSecret = () => `whsec_${randomBytes(32).toString('base64')}`

export interface EventService {
  addEndpoint(input: { url: string; eventTypes?: string[] | undefined }): Promise<{ endpoint: EndpointView; secret: string }>
  endpoints(): Promise<EndpointView[]>
  removeEndpoint(id: string): Promise<void>
  /** A new signing secret; the previous one keeps signing beside it until the next rotation. */
  rotateSecret(id: string): Promise<{ endpoint: EndpointView; secret: string }>
  events(q: { callId?: string | undefined; batchId?: string | undefined; type?: string | undefined; limit: number; beforeSeq?: string | undefined }): Promise<Array<{ event: db.EventRow; deliveries: db.DeliveryRow[] }>>
  event(id: string): Promise<{ event: db.EventRow; deliveries: db.DeliveryRow[] }>
  /** Sends an event again (with its webhook-id) to one endpoint, or to every endpoint that takes its type. */
  replay(id: string, endpointId?: string): Promise<{ deliveries: number }>
}

export function createEventService(deps: { sql: Sql; deliveries: DeliveryJobs; allowInsecureUrls: boolean }): EventService {
  const { sql, deliveries } = deps
  return {
    async addEndpoint(input) {
      const problem = await destinationProblem(input.url, deps.allowInsecureUrls)
      if (problem) throw new DomainError('endpoint_not_allowed', `The url ${problem}.`, { url: input.url })
      const secret = newSecret()
      const row = await db.insertEndpoint(sql, { url: input.url, secrets: [secret], eventTypes: input.eventTypes ?? null, source: 'api' })
      return { endpoint: endpointView(row), secret }
    },

    endpoints: async () => (await db.listEndpoints(sql)).map(endpointView),

    async removeEndpoint(id) {
      if (!(await sql.begin((tx) => db.disableEndpoint(tx, id)))) throw endpointNotFound(id)
    },

    async rotateSecret(id) {
      const secret = newSecret()
      const row = await sql.begin(async (tx) => {
        const current = await db.getEndpoint(tx, id)
        if (!current || current.disabled_at) throw endpointNotFound(id)
        return db.setEndpointSecrets(tx, id, [secret, current.secrets[0]!])
      })
      return { endpoint: endpointView(row!), secret }
    },

    async events(q) {
      const events = await db.listEvents(sql, q)
      const deliveries = await db.deliveriesOf(sql, events.map((e) => e.id))
      return events.map((event) => ({ event, deliveries: deliveries.filter((d) => d.event_id === event.id) }))
    },

    async event(id) {
      const event = await db.getEvent(sql, id)
      if (!event) throw eventNotFound(id)
      return { event, deliveries: await db.deliveriesOf(sql, [id]) }
    },

    async replay(id, endpointId) {
      return sql.begin(async (tx) => {
        const event = await db.getEvent(tx, id)
        if (!event) throw eventNotFound(id)
        let endpoints = await db.endpointsFor(tx, event.type)
        if (endpointId) {
          const one = await db.getEndpoint(tx, endpointId)
          if (!one || one.disabled_at) throw endpointNotFound(endpointId)
          endpoints = [{ id: endpointId }]
        }
        await db.insertDeliveries(tx, endpoints.map((e) => ({ eventId: id, endpointId: e.id })))
        await deliveries.enqueue(tx, endpoints.map((e) => ({ endpointId: e.id, callId: event.call_id, batchId: event.call_id ? null : event.batch_id })))
        if (endpoints.length) await wakeDeliveries(tx)
        return { deliveries: endpoints.length }
      })
    },
  }
}
