import type { Tx } from './sql.ts'

// Advisory lock keys. The claim lock is the global semaphore: a claim holds it exclusively
// while it counts in-flight calls and claims at most the free slots, so the count and the
// claim are one step for every process. Transactions that change or replace a PENDING call's
// queued job, or settle one whose call ends (PATCH, expiry, callbacks, look-ups, the job
// sweeps), hold it shared: they never wait for each other, they never see a claim halfway, and
// they never deadlock with one, which locks job rows before call rows while they lock call
// rows first. Freeing a slot needs no lock: a claim that misses it only claims less.
export const CLAIM_LOCK = 7_261_002

/** Held (tried, never waited for) by the worker refreshing statistics (./statistics.ts): one at a time. */
export const ANALYZE_LOCK = 7_261_004

export async function lockClaims(tx: Tx): Promise<void> {
  await tx`SELECT pg_advisory_xact_lock(${CLAIM_LOCK})`
}

export async function lockClaimsShared(tx: Tx): Promise<void> {
  await tx`SELECT pg_advisory_xact_lock_shared(${CLAIM_LOCK})`
}
