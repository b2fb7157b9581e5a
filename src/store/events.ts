import type { DeliveryScope } from './delivery-jobs.ts'
import type { Sql, Tx } from './sql.ts'

// The events, their endpoints and the delivery log (sql/005_batches_events.sql).

type Db = Sql | Tx

export interface EndpointRow {
  id: string
  url: string
  secrets: string[]
  event_types: string[] | null
  source: 'env' | 'api'
  created_at: Date
  disabled_at: Date | null
}

export interface EventRow {
  id: string
  seq: string
  type: string
  call_id: string | null
  batch_id: string | null
  payload: { type: string; timestamp: string; data: unknown }
  created_at: Date
}

export interface DeliveryRow {
  event_id: string
  endpoint_id: string
  status: 'pending' | 'delivered' | 'failed'
  attempts: number
  /** The attempts made before the last replay: the retry limit counts those after. */
  attempts_before_replay: number
  last_attempt_at: Date | null
  last_status_code: number | null
  last_error: string | null
  next_attempt_at: Date | null
  delivered_at: Date | null
}

/** Endpoints that take `type`. */
export async function endpointsFor(db: Db, type: string): Promise<Array<Pick<EndpointRow, 'id'>>> {
  return db<Array<Pick<EndpointRow, 'id'>>>`
    SELECT id FROM event_endpoints WHERE disabled_at IS NULL AND (event_types IS NULL OR ${type} = ANY(event_types))`
}

/**
 * What writing events needs to read first, in one statement: the transaction's clock, which
 * stamps them, and the endpoints that take events now (`event_types` null: every type).
 */
export type EventTargets = { now: Date; endpoints: Array<Pick<EndpointRow, 'id' | 'event_types'>> }

export async function eventTargets(db: Db): Promise<EventTargets> {
  const [row] = await db<EventTargets[]>`
    SELECT now() AS now,
           COALESCE((SELECT jsonb_agg(jsonb_build_object('id', id, 'event_types', event_types) ORDER BY created_at)
                     FROM event_endpoints WHERE disabled_at IS NULL), '[]') AS endpoints`
  return row!
}

/**
 * The events and their delivery rows (each names an event and an endpoint), in one statement:
 * the foreign keys are checked at its end, when the events are there.
 */
export async function insertEvents(
  tx: Tx,
  events: Array<Omit<EventRow, 'seq' | 'created_at'>>,
  deliveries: Array<{ eventId: string; endpointId: string }> = [],
): Promise<void> {
  if (events.length === 0) return
  await tx`
    WITH inserted AS (
      INSERT INTO events (id, type, call_id, batch_id, payload)
      SELECT e.id, e.type, e.call_id, e.batch_id, e.payload
      FROM jsonb_to_recordset(${tx.json(events as never)}) AS e(id text, type text, call_id uuid, batch_id uuid, payload jsonb))
    INSERT INTO event_deliveries (event_id, endpoint_id)
    SELECT * FROM unnest(${deliveries.map((d) => d.eventId)}::text[], ${deliveries.map((d) => d.endpointId)}::uuid[])`
}

export async function insertDeliveries(tx: Tx, deliveries: Array<{ eventId: string; endpointId: string }>): Promise<void> {
  if (deliveries.length === 0) return
  await tx`
    INSERT INTO event_deliveries (event_id, endpoint_id)
    SELECT * FROM unnest(${deliveries.map((d) => d.eventId)}::text[], ${deliveries.map((d) => d.endpointId)}::uuid[])
    ON CONFLICT (event_id, endpoint_id) DO UPDATE SET status = 'pending', next_attempt_at = NULL, attempts_before_replay = event_deliveries.attempts`
}

export async function getEvent(db: Db, id: string): Promise<EventRow | undefined> {
  const [row] = await db<EventRow[]>`SELECT * FROM events WHERE id = ${id}`
  return row
}

export async function getEndpoint(db: Db, id: string): Promise<EndpointRow | undefined> {
  const [row] = await db<EndpointRow[]>`SELECT * FROM event_endpoints WHERE id = ${id}`
  return row
}

export async function listEndpoints(db: Db): Promise<EndpointRow[]> {
  return db<EndpointRow[]>`SELECT * FROM event_endpoints WHERE disabled_at IS NULL ORDER BY created_at`
}

export async function insertEndpoint(db: Db, e: { url: string; secrets: string[]; eventTypes: string[] | null; source: 'env' | 'api' }): Promise<EndpointRow> {
  const [row] = await db<EndpointRow[]>`
    INSERT INTO event_endpoints (url, secrets, event_types, source)
    VALUES (${e.url}, ${e.secrets}::text[], ${e.eventTypes}::text[], ${e.source})
    RETURNING *`
  return row!
}

/**
 * The endpoint EVENT_WEBHOOK_URL configures, created or brought up to date. Endpoints other
 * processes configured are left as they are, and answered: a process never removes an
 * endpoint because its own environment lacks it (only DELETE /event-endpoints/:id does).
 */
export async function syncEnvEndpoint(tx: Tx, e: { url: string; secrets: string[]; eventTypes: string[] | null }): Promise<EndpointRow[]> {
  await tx`
    INSERT INTO event_endpoints (url, secrets, event_types, source) VALUES (${e.url}, ${e.secrets}::text[], ${e.eventTypes}::text[], 'env')
    ON CONFLICT (url) WHERE source = 'env'
    DO UPDATE SET secrets = EXCLUDED.secrets, event_types = EXCLUDED.event_types, disabled_at = NULL`
  return tx<EndpointRow[]>`SELECT * FROM event_endpoints WHERE source = 'env' AND disabled_at IS NULL AND url <> ${e.url} ORDER BY created_at`
}

export async function setEndpointSecrets(tx: Tx, id: string, secrets: string[]): Promise<EndpointRow | undefined> {
  const [row] = await tx<EndpointRow[]>`UPDATE event_endpoints SET secrets = ${secrets}::text[] WHERE id = ${id} AND disabled_at IS NULL RETURNING *`
  return row
}

/** Removes an endpoint: nothing more is sent to it, and what was still to be sent is marked failed. */
export async function disableEndpoint(tx: Tx, id: string): Promise<boolean> {
  const rows = await tx`UPDATE event_endpoints SET disabled_at = now() WHERE id = ${id} AND disabled_at IS NULL RETURNING id`
  if (rows.length === 0) return false
  await tx`
    UPDATE event_deliveries SET status = 'failed', last_error = 'endpoint removed', next_attempt_at = NULL
    WHERE endpoint_id = ${id} AND status = 'pending'`
  return true
}

/** An event to send: `attempts` over its whole life, `tries` since it was last replayed (what its retry limit counts). */
export type PendingEvent = EventRow & { attempts: number; tries: number }

/** The undelivered events of one call (or one batch) for one endpoint, oldest first. */
export async function pendingDeliveries(db: Db, scope: DeliveryScope, limit: number): Promise<PendingEvent[]> {
  return db<PendingEvent[]>`
    SELECT e.*, d.attempts, d.attempts - d.attempts_before_replay AS tries
    FROM events e JOIN event_deliveries d ON d.event_id = e.id AND d.endpoint_id = ${scope.endpointId}
    WHERE ${scope.callId ? db`e.call_id = ${scope.callId}` : db`e.call_id IS NULL AND e.batch_id = ${scope.batchId}`}
      AND d.status = 'pending'
    ORDER BY e.seq
    LIMIT ${limit}`
}

/** After one delivery attempt. */
export async function recordAttempt(
  db: Db,
  d: { eventId: string; endpointId: string; status: DeliveryRow['status']; statusCode: number | null; error: string | null; nextAttemptAt: Date | null },
): Promise<void> {
  await db`
    UPDATE event_deliveries SET
      status = ${d.status}, attempts = attempts + 1, last_attempt_at = now(),
      last_status_code = ${d.statusCode}, last_error = ${d.error}, next_attempt_at = ${d.nextAttemptAt},
      delivered_at = CASE WHEN ${d.status} = 'delivered' THEN now() END
    WHERE event_id = ${d.eventId} AND endpoint_id = ${d.endpointId}`
}

export async function deliveriesOf(db: Db, eventIds: string[]): Promise<DeliveryRow[]> {
  if (eventIds.length === 0) return []
  return db<DeliveryRow[]>`SELECT * FROM event_deliveries WHERE event_id = ANY(${eventIds}::text[]) ORDER BY event_id, endpoint_id`
}

/** Newest first, keyset on seq; by call, batch or type when given. */
export async function listEvents(
  db: Db,
  q: { callId?: string | undefined; batchId?: string | undefined; type?: string | undefined; limit: number; beforeSeq?: string | undefined },
): Promise<EventRow[]> {
  return db<EventRow[]>`
    SELECT * FROM events
    WHERE true
      ${q.callId ? db`AND call_id = ${q.callId}` : db``}
      ${q.batchId ? db`AND batch_id = ${q.batchId}` : db``}
      ${q.type ? db`AND type = ${q.type}` : db``}
      ${q.beforeSeq ? db`AND seq < ${q.beforeSeq}` : db``}
    ORDER BY seq DESC
    LIMIT ${q.limit}`
}
