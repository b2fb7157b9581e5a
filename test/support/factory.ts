import { randomUUID } from 'node:crypto'
import type { CallRow, CallStatus } from '../../src/domain/call.ts'
import type { Sql } from '../../src/store/sql.ts'
import type { Harness } from './harness.ts'

// Calls for tests, in any state (as river's testfactory does for jobs): straight into the
// tables with every column a state's CHECK constraints ask for, or through the API as a
// client makes them. A waiting or in-flight call gets its pg-boss job, as the service keeps it.

let phoneSeq = 0
/** A fresh E.164 number per call site, so calls in one file never block each other. */
export function newPhone(): string {
  phoneSeq += 1
  return `+9665${String(10_000_000 + phoneSeq).padStart(8, '0')}`
}

export interface CallSeed {
  status?: CallStatus
  phone?: string
  scriptId?: string
  metadata?: Record<string, unknown>
  createdAt?: Date
  /** IN_PROGRESS only: accepted by the provider (the default), or still waiting to be re-sent. */
  dialed?: boolean
}

/** Columns a call has in each state, over what it has when PENDING. */
function stateColumns(status: CallStatus, dialed: boolean) {
  const started = { attempts: 1, dial: 1, dial_requests: 1, started_at: new Date() }
  const ended = { ...started, ended_at: new Date(), provider_call_id: `prov-${randomUUID()}` }
  switch (status) {
    case 'PENDING':
      return {}
    case 'IN_PROGRESS':
      return dialed
        ? { ...started, dialed_at: new Date(), provider_call_id: `prov-${randomUUID()}`, timeout_at: new Date(Date.now() + 3_600_000) }
        : // Between two requests: the next one is due in an hour, so no worker takes it meanwhile.
          { ...started, next_attempt_at: new Date(Date.now() + 3_600_000) }
    case 'COMPLETED':
      return { ...ended, dialed_at: new Date(), provider_status: 'COMPLETED' }
    case 'FAILED':
      return { ...ended, dialed_at: new Date(), provider_status: 'BUSY', last_error: 'provider reported BUSY' }
    case 'EXPIRED':
      return { ended_at: new Date(), last_error: 'expired before it could be dialed' }
  }
}

/** Inserts a call in `seed.status` (PENDING by default) with its job when it has one. */
export async function insertCall(h: Pick<Harness, 'sql' | 'queue'>, seed: CallSeed = {}): Promise<CallRow> {
  const status = seed.status ?? 'PENDING'
  return h.sql.begin(async (tx) => {
    const id = randomUUID()
    const phone = seed.phone ?? newPhone()
    let jobId: string | null = null
    if (status === 'PENDING' || status === 'IN_PROGRESS') {
      jobId = await h.queue.calls.enqueue(tx, { id, phone })
      // An in-flight call's job is active (fetched), which also blocks its phone.
      if (status === 'IN_PROGRESS') await tx`UPDATE pgboss.job SET state = 'active', started_on = now() WHERE id = ${jobId}`
    }
    const row = {
      id,
      phone,
      script_id: seed.scriptId ?? 'seeded',
      metadata: tx.json((seed.metadata ?? {}) as never),
      status,
      job_id: jobId,
      created_at: seed.createdAt ?? new Date(),
      ...stateColumns(status, seed.dialed ?? true),
    }
    const [inserted] = await tx<CallRow[]>`INSERT INTO calls ${tx(row)} RETURNING *`
    return inserted!
  })
}

/** Moves an existing call to `status`, as insertCall would have made it (its job is left as it is). */
export async function moveToStatus(sql: Sql, id: string, status: CallStatus, dialed = true): Promise<void> {
  const columns = {
    status,
    attempts: 0,
    dial: 0,
    dial_requests: 0,
    started_at: null,
    dialed_at: null,
    ended_at: null,
    next_attempt_at: null,
    claimed_by: null,
    provider_call_id: null,
    provider_status: null,
    timeout_at: null,
    last_error: null,
    ...stateColumns(status, dialed),
    updated_at: new Date(),
  }
  await sql`UPDATE calls SET ${sql(columns)} WHERE id = ${id}`
}

export type CallBody = { id: string; payload: { to: string; scriptId: string; metadata: Record<string, unknown> }; status: CallStatus }

/**
 * A call made through the API, as a client makes it (201, or 200 for a replayed
 * Idempotency-Key); to +966501234567 unless `body.to` says otherwise.
 */
export async function postCall(h: Harness, body: Record<string, unknown> = {}, headers: Record<string, string> = {}): Promise<CallBody> {
  const res = await h.call('POST', '/calls', { to: '+966501234567', scriptId: 'welcomeFlow', ...body }, headers)
  if (res.status !== 201 && res.status !== 200) throw new Error(`POST /calls answered ${res.status}: ${JSON.stringify(res.body)}`)
  return res.body as CallBody
}
