import type { Tx } from './sql.ts'

// LISTEN/NOTIFY: the channels that wake workers and event delivery loops instead of polling,
// and the NOTIFYs sent inside a transaction, which PostgreSQL delivers only if it commits.

/** Workers LISTEN here; every change that may let a call start NOTIFYs it. */
export const WAKE_CHANNEL = 'call_orchestrator_wake'

/**
 * Wakes workers at commit (and only if the transaction commits). `slotFreed`: a call in flight
 * ended, so a waiting call may take its slot; the payload says when (the database's clock, ms),
 * which workers use to measure how long the slot stayed empty. A freed slot wakes one worker
 * (see oneWorker); anything else (a call changed or rescheduled, dispatch resumed) wakes all.
 */
export async function wakeWorkers(tx: Tx, slotFreed = false): Promise<void> {
  await tx`
    SELECT pg_notify(${WAKE_CHANNEL}, CASE WHEN ${slotFreed}::boolean
      THEN ${SLOT_FREED} || (extract(epoch FROM clock_timestamp()) * 1000)::bigint || ${oneWorker(tx)}
      ELSE '' END)`
}

/** A payload's suffix naming the one worker it is for: `@<workers.id>`. */
export const FOR_WORKER = '@'

/**
 * SQL for the suffix `@<id>` of one live worker picked at random (alive: seen within three of
 * its poll intervals, sql/019), or '' when none is known alive, which wakes them all. One
 * worker claims what a freed slot or a new call allows; the others would only queue for the
 * claim lock to find nothing left.
 */
export const oneWorker = (tx: Tx) => tx`coalesce(${FOR_WORKER} || (
  SELECT id FROM workers
  WHERE stopped_at IS NULL AND last_seen_at > now() - make_interval(secs => 3 * coalesce(poll_ms, 5000) / 1000.0)
  ORDER BY random() LIMIT 1), '')`

/**
 * A wake-up payload read back: which worker it is for (undefined: every worker), when the slot
 * it announces was freed (the database's clock, ms), and whether it announces a filed action.
 * Payloads: '' or `@<id>` (a new call), `freed:<ms>` or `freed:<ms>@<id>`, `action`.
 */
export function readWake(payload: string): { target?: number; freedAt?: number; actionFiled: boolean } {
  const [body = '', target] = payload.split(FOR_WORKER)
  return {
    ...(target === undefined ? {} : { target: Number(target) }),
    ...(body.startsWith(SLOT_FREED) ? { freedAt: Number(body.slice(SLOT_FREED.length)) } : {}),
    actionFiled: body === ACTION_FILED,
  }
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
