import type { Tx } from './sql.ts'

// Advisory lock keys. The claim lock is the global semaphore: a claim holds it exclusively
// while it counts in-flight calls and claims at most the free slots, so the count and the
// claim are one step for every process. Transactions that change or replace a PENDING call's
// queued job, or settle one whose call ends (PATCH, expiry, callbacks, look-ups, the job
// sweeps), hold it shared: they never wait for each other, they never see a claim halfway, and
// they never deadlock with one, which locks job rows before call rows while they lock call
// rows first. Freeing a slot needs no lock: a claim that misses it only claims less.
export const CLAIM_LOCK = 7_261_002

export async function lockClaims(tx: Tx): Promise<void> {
  await tx`SELECT pg_advisory_xact_lock(${CLAIM_LOCK})`
}

export async function lockClaimsShared(tx: Tx): Promise<void> {
  await tx`SELECT pg_advisory_xact_lock_shared(${CLAIM_LOCK})`
}

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
