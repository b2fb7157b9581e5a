import type { Tx } from './sql.ts'

// Advisory lock keys. The claim lock is the global semaphore: a claim holds it exclusively
// while it counts in-flight calls and claims at most the free slots, so the count and the
// claim are one step for every process. Transactions that change a call's queued job (PATCH,
// expiry, callbacks, sweeps) hold it shared: they never wait for each other, and they never
// deadlock with a claim, which locks job rows before call rows while they lock call rows first.
export const CLAIM_LOCK = 7_261_002
export const WORKER_LOCK_CLASS = 7_261_003

export async function lockClaims(tx: Tx): Promise<void> {
  await tx`SELECT pg_advisory_xact_lock(${CLAIM_LOCK})`
}

export async function lockClaimsShared(tx: Tx): Promise<void> {
  await tx`SELECT pg_advisory_xact_lock_shared(${CLAIM_LOCK})`
}

/** Workers LISTEN here; every change that may let a call start NOTIFYs it. */
export const WAKE_CHANNEL = 'call_orchestrator_wake'

export async function wakeWorkers(tx: Tx): Promise<void> {
  // Delivered at commit, and only if the transaction commits.
  await tx`SELECT pg_notify(${WAKE_CHANNEL}, '')`
}
