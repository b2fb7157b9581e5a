import type { Tx } from './sql.ts'

// LISTEN/NOTIFY: the channels that wake workers and event delivery loops instead of polling,
// and the NOTIFYs sent inside a transaction, which PostgreSQL delivers only if it commits.

/** Workers LISTEN here; every change that may let a call start NOTIFYs it. */
export const WAKE_CHANNEL = 'call_orchestrator_wake'

/**
 * Wakes every worker at commit (and only if the transaction commits). `slotFreed`: a call in
 * flight ended, so a waiting call may take its slot; the payload says when (the database's
 * clock, ms), which workers use to measure how long the slot stayed empty.
 */
export async function wakeWorkers(tx: Tx, slotFreed = false): Promise<void> {
  await tx`
    SELECT pg_notify(${WAKE_CHANNEL}, CASE WHEN ${slotFreed}::boolean THEN ${SLOT_FREED} || (extract(epoch FROM clock_timestamp()) * 1000)::bigint ELSE '' END)`
}

/** The payload prefix of a wake-up sent because a slot was freed. */
export const SLOT_FREED = 'freed:'

/** The payload of a wake-up sent by request_cancel() and request_retry() (sql/011_call_actions.sql). */
export const ACTION_FILED = 'action'

/** Event delivery loops LISTEN here; a transaction that writes events NOTIFYs it. */
export const EVENTS_CHANNEL = 'call_orchestrator_events'

export async function wakeDeliveries(tx: Tx): Promise<void> {
  await tx`SELECT pg_notify(${EVENTS_CHANNEL}, '')`
}
