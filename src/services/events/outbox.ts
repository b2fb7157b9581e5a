import { randomUUID } from 'node:crypto'
import { toResource, type CallRow } from '../../domain/call.ts'
import { eventOf, type CallEvent, type EventType } from '../../domain/events.ts'
import { dialsOf } from '../../store/dials.ts'
import { wakeDeliveries } from '../../store/notify.ts'
import { eventTargets, insertEvents, type EventTargets } from '../../store/events.ts'
import type { DeliveryJobs } from '../../store/delivery-jobs.ts'
import type { DeliveryScope } from '../../store/delivery-jobs.ts'
import type { Tx } from '../../store/sql.ts'
import { completeBatches, batchResource } from '../../store/batches.ts'

// Status events, written in the transaction that makes the change they report (an outbox): the
// event row, its delivery log rows and pg-boss delivery jobs commit with the change or not at
// all, so no event is lost and none is invented. Workers deliver them (src/services/events/deliver.ts).
// The event types themselves are in src/domain/events.ts.



interface Emitted {
  type: EventType
  callId: string | null
  batchId: string | null
  data: unknown
}

/**
 * Writes the events, a delivery row per endpoint that takes each, and the delivery jobs.
 * `targets` is what eventTargets() read in this transaction.
 */
async function write(tx: Tx, deliveryJobs: DeliveryJobs, emitted: Emitted[], targets: EventTargets): Promise<void> {
  if (emitted.length === 0) return
  const events = emitted.map((e) => ({
    id: `msg_${randomUUID()}`,
    type: e.type,
    call_id: e.callId,
    batch_id: e.batchId,
    payload: { type: e.type, timestamp: targets.now.toISOString(), data: e.data },
  }))
  const deliveries: Array<{ eventId: string; endpointId: string }> = []
  const scopes = new Map<string, DeliveryScope>()
  for (const event of events) {
    for (const endpoint of targets.endpoints) {
      if (!endpointTakes(endpoint, event.type)) continue
      deliveries.push({ eventId: event.id, endpointId: endpoint.id })
      // One job per endpoint and call (or batch) sends all of that call's new events, in order.
      const scope = { endpointId: endpoint.id, callId: event.call_id, batchId: event.call_id ? null : event.batch_id }
      scopes.set(`${scope.endpointId}:${scope.callId}:${scope.batchId}`, scope)
    }
  }
  // An event no endpoint takes is not written: nothing would ever read it but the event log,
  // and at 100,000 calls a day those rows alone grow the database by hundreds of MB a day.
  const taken = new Set(deliveries.map((d) => d.eventId))
  if (taken.size === 0) return
  await insertEvents(tx, events.filter((e) => taken.has(e.id)), deliveries)
  await deliveryJobs.enqueue(tx, [...scopes.values()])
  await wakeDeliveries(tx)
}

/**
 * `type` for each of these calls (as they are now, after the change), each event carrying the
 * call resource (with its dials as they are now); then batch.completed for any batch whose
 * calls are now all final.
 */
export async function emitCallEvents(
  tx: Tx,
  deliveryJobs: DeliveryJobs,
  type: CallEvent | ((call: CallRow) => CallEvent | undefined),
  calls: CallRow[],
): Promise<void> {
  if (calls.length === 0) return
  const targets = await eventTargets(tx)
  const typed = calls.flatMap((call) => {
    const t = typeof type === 'function' ? type(call) : type
    return t && takes(targets, t) ? [{ call, type: t }] : []
  })
  // The dials are read for the events' bodies only: with no endpoint to take them, not at all.
  if (typed.length > 0) {
    const dials = await dialsOf(tx, typed.filter(({ call }) => call.dial > 0).map(({ call }) => call.id))
    const emitted = typed.map(({ call, type: t }) => ({ type: t, callId: call.id, batchId: call.batch_id, data: toResource(call, dials) }))
    await write(tx, deliveryJobs, emitted, targets)
  }
  await emitBatchesCompleted(tx, deliveryJobs, [...new Set(calls.filter((c) => c.batch_id && c.ended_at).map((c) => c.batch_id!))], targets)
}

/** Whether this endpoint takes events of this type (`event_types` null: every type). */
const endpointTakes = (endpoint: EventTargets['endpoints'][number], type: string) => !endpoint.event_types || endpoint.event_types.includes(type)

/** Whether any endpoint takes events of this type. */
const takes = (targets: EventTargets, type: string) => targets.endpoints.some((e) => endpointTakes(e, type))

/**
 * Marks complete each of these batches whose calls are now all final (once per batch), and
 * writes its batch.completed for the endpoints that take it.
 */
export async function emitBatchesCompleted(tx: Tx, deliveryJobs: DeliveryJobs, batchIds: string[], targets?: EventTargets): Promise<void> {
  const completed = await completeBatches(tx, batchIds)
  if (completed.length === 0) return
  const emitted = completed.map((batch) => ({ type: 'batch.completed' as const, callId: null, batchId: batch.id, data: batchResource(batch) }))
  await write(tx, deliveryJobs, emitted, targets ?? (await eventTargets(tx)))
}
