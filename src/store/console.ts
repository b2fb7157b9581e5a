import type { CallRow, DialRow } from '../domain/call.ts'
import { listCalls, type ListQuery } from './calls.ts'
import { callsOfBatch, getBatch, type BatchRow } from './batches.ts'
import { dialsOf } from './dials.ts'
import type { Sql } from './sql.ts'

// What the console (/console) reads: calls to filter, and one call's whole story.

/** The console's filters: those of GET /calls, and phone, batch and creation time. */
export type ConsoleFilter = ListQuery

/** Newest first, keyset pages on (created_at, id): GET /calls's own query. */
export async function consoleCalls(sql: Sql, f: ConsoleFilter): Promise<CallRow[]> {
  return (await listCalls(sql, f)).rows
}

export interface ReportRow {
  received_at: Date
  source: string
  webhook_id: string | null
  provider_call_id: string | null
  provider_status: string | null
  verdict: string
  reason: string | null
  repeats: number
}

export interface EventWithDeliveries {
  id: string
  type: string
  created_at: Date
  deliveries: Array<{ url: string; status: string; attempts: number; last_status_code: number | null; last_error: string | null; delivered_at: string | null }>
}

export interface Timeline {
  call: CallRow
  dials: DialRow[]
  reports: ReportRow[]
  events: EventWithDeliveries[]
}

/** One call with its dials, the provider's reports on it and their verdicts, and its events with their deliveries. */
export async function callTimeline(sql: Sql, id: string): Promise<Timeline | undefined> {
  const [call] = await sql<CallRow[]>`SELECT * FROM calls WHERE id = ${id}`
  if (!call) return undefined
  const dials = await dialsOf(sql, [id])
  const reports = await sql<ReportRow[]>`
    SELECT received_at, source, webhook_id, provider_call_id, provider_status, verdict, reason, repeats
    FROM callbacks WHERE call_id = ${id} ORDER BY received_at`
  const events = await sql<EventWithDeliveries[]>`
    SELECT e.id, e.type, e.created_at,
      COALESCE((SELECT json_agg(json_build_object('url', p.url, 'status', d.status, 'attempts', d.attempts,
                  'last_status_code', d.last_status_code, 'last_error', d.last_error, 'delivered_at', d.delivered_at) ORDER BY p.created_at)
                FROM event_deliveries d JOIN event_endpoints p ON p.id = d.endpoint_id WHERE d.event_id = e.id), '[]') AS deliveries
    FROM events e WHERE e.call_id = ${id} ORDER BY e.seq`
  return { call, dials, reports, events }
}

/** A batch with its calls by status, and its calls in item order. */
export async function batchProgress(sql: Sql, id: string): Promise<{ batch: BatchRow; calls: CallRow[] } | undefined> {
  const batch = await getBatch(sql, id)
  if (!batch) return undefined
  return { batch, calls: await callsOfBatch(sql, id) }
}
