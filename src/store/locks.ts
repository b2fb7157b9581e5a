import type { Tx } from './sql.ts'

// Advisory lock keys. The claim lock is the global semaphore: a claim holds it exclusively
// while it counts in-flight calls and claims at most the free slots, so the count and the
// claim are one step for every process. A claim locks waiting jobs and PENDING calls. Whatever
// else changes or replaces a PENDING call's queued job, or settles one (PATCH, cancel, expiry,
// suppression, the job sweeps, a report about a call not in flight), holds it shared: they
// never wait for each other, they never see a claim halfway, and they never deadlock with one,
// which locks job rows before call rows while they lock call rows first. A report about a call
// in flight (IN_PROGRESS) needs no lock but its row (src/store/callbacks.ts, lockForReport),
// nor do the sweeps that end calls in flight. Freeing a slot needs no lock: a claim that
// misses it only claims less.
export const CLAIM_LOCK = 7_261_002

/** Held (tried, never waited for) by the worker refreshing statistics (./statistics.ts): one at a time. */
export const ANALYZE_LOCK = 7_261_004

export async function lockClaims(tx: Tx): Promise<void> {
  await tx`SELECT pg_advisory_xact_lock(${CLAIM_LOCK})`
}

export async function lockClaimsShared(tx: Tx): Promise<void> {
  await tx`SELECT pg_advisory_xact_lock_shared(${CLAIM_LOCK})`
}
