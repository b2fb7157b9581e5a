import { CALL_STATUSES, type CallStatus } from '../domain/call.ts'
import type { Sql } from './sql.ts'

// What the status page (GET /) shows, read in one statement: one round trip and one snapshot,
// so the numbers agree with each other. Every part is cheap at any table size: counts from the
// call_counts view (sql/006), in-flight calls through the partial index on IN_PROGRESS (never
// more rows than the concurrency limit), the oldest waiting call and recent failures through
// their indexes, callbacks through callbacks_received_idx.

/** How far back "recent" failures and callbacks go. */
export const RECENT_MINUTES = 60
/** At most this many recent failures, and in-flight calls, are listed. */
export const LIST_LIMIT = { failures: 10, inFlight: 50 } as const

export interface StatusSnapshot {
  at: Date
  counts: Record<CallStatus, number>
  paused: boolean
  /** The concurrency limit in force: the one set at run time, else MAX_CONCURRENT_CALLS. */
  limit: number
  oldestWaiting: { id: string; phone: string; createdAt: Date; nextAttemptAt: Date | null; waitingFor: string | null } | null
  inFlight: Array<{ id: string; phone: string; attempts: number; startedAt: Date; dialedAt: Date | null }>
  recentFailures: Array<{ id: string; phone: string; reason: string; providerStatus: string | null; endedAt: Date }>
  /** Callbacks received in the last RECENT_MINUTES, by verdict. */
  callbacks: Record<string, number>
  /**
   * Dialed calls no look-up will end (the provider cannot be asked, or RECONCILE_AFTER_SECONDS
   * is 0): they hold their slots until their CALL_TIMEOUT_SECONDS, the last of them until `until`.
   */
  heldUntilTimeout: { calls: number; until: Date } | null
  /**
   * The last RECENT_MINUTES minutes, oldest first, the current (partial) minute last: calls
   * created, dials started, calls that ended COMPLETED and FAILED, and slots in use (dials in
   * flight) at the minute's end, or now for the current one.
   */
  lastHour: MinuteCounts[]
}

export interface MinuteCounts {
  minute: Date
  created: number
  dialed: number
  completed: number
  failed: number
  slots: number
}

interface Row {
  at: Date
  counts: Record<string, number> | null
  paused: boolean
  max_concurrent_calls: number | null
  oldest: { id: string; phone: string; created_at: string; next_attempt_at: string | null; waiting_for: string | null } | null
  in_flight: Array<{ id: string; phone: string; attempts: number; started_at: string; dialed_at: string | null }>
  failures: Array<{ id: string; phone: string; last_error: string; provider_status: string | null; ended_at: string }>
  callbacks: Record<string, number> | null
  held: { calls: number; until: string } | null
  last_hour: Array<[minute: string, created: number, dialed: number, completed: number, failed: number, slots: number]>
}

export async function readStatus(sql: Sql, defaultLimit: number): Promise<StatusSnapshot> {
  const recent = `${RECENT_MINUTES} minutes`
  const [row] = await sql<Row[]>`
    SELECT
      now() AS at,
      (SELECT json_object_agg(status, calls) FROM call_counts) AS counts,
      s.paused,
      s.max_concurrent_calls,
      (SELECT row_to_json(o) FROM (
         SELECT id, phone, created_at, next_attempt_at, waiting_for FROM calls
         WHERE status = 'PENDING' ORDER BY created_at, id LIMIT 1) o) AS oldest,
      (SELECT coalesce(json_agg(f ORDER BY f.started_at), '[]') FROM (
         SELECT id, phone, attempts, started_at, dialed_at FROM calls
         WHERE status = 'IN_PROGRESS' ORDER BY started_at LIMIT ${LIST_LIMIT.inFlight}) f) AS in_flight,
      (SELECT coalesce(json_agg(f ORDER BY f.ended_at DESC), '[]') FROM (
         SELECT id, phone, last_error, provider_status, ended_at FROM calls
         WHERE status = 'FAILED' AND ended_at > now() - ${recent}::interval
         ORDER BY ended_at DESC LIMIT ${LIST_LIMIT.failures}) f) AS failures,
      (SELECT json_object_agg(verdict, n) FROM (
         SELECT verdict, count(*) AS n FROM callbacks
         WHERE received_at > now() - ${recent}::interval GROUP BY verdict) v) AS callbacks,
      (SELECT CASE WHEN count(*) > 0 THEN json_build_object('calls', count(*), 'until', max(timeout_at)) END FROM calls
       WHERE ${heldUntilTimeoutWhere(sql)}) AS held,
      (${lastHour(sql)}) AS last_hour
    FROM dispatch_settings s`
  const r = row!
  const counts = Object.fromEntries(CALL_STATUSES.map((s) => [s, Number(r.counts?.[s] ?? 0)])) as Record<CallStatus, number>
  const date = (s: string) => new Date(s)
  return {
    at: r.at,
    counts,
    paused: r.paused,
    limit: r.max_concurrent_calls ?? defaultLimit,
    oldestWaiting: r.oldest && {
      id: r.oldest.id,
      phone: r.oldest.phone,
      createdAt: date(r.oldest.created_at),
      nextAttemptAt: r.oldest.next_attempt_at ? date(r.oldest.next_attempt_at) : null,
      waitingFor: r.oldest.waiting_for,
    },
    inFlight: r.in_flight.map((c) => ({
      id: c.id,
      phone: c.phone,
      attempts: c.attempts,
      startedAt: date(c.started_at),
      dialedAt: c.dialed_at ? date(c.dialed_at) : null,
    })),
    recentFailures: r.failures.map((f) => ({
      id: f.id,
      phone: f.phone,
      reason: f.last_error,
      providerStatus: f.provider_status,
      endedAt: date(f.ended_at),
    })),
    callbacks: Object.fromEntries(Object.entries(r.callbacks ?? {}).map(([k, v]) => [k, Number(v)])),
    heldUntilTimeout: r.held && { calls: Number(r.held.calls), until: date(r.held.until) },
    lastHour: r.last_hour.map(([minute, created, dialed, completed, failed, slots]) => ({ minute: date(minute), created, dialed, completed, failed, slots })),
  }
}

/**
 * The last hour per minute, as JSON arrays. Each series is grouped from its own index
 * (sql/018_last_hour.sql); slots in use are the dials in flight when the hour began plus those
 * started since, less those ended since, summed minute by minute.
 */
const lastHour = (sql: Sql) => sql`
  WITH span AS (SELECT date_trunc('minute', now()) - ${`${RECENT_MINUTES - 1} minutes`}::interval AS since),
  minutes AS (SELECT m FROM span, generate_series(span.since, date_trunc('minute', now()), interval '1 minute') AS m),
  created AS (SELECT date_trunc('minute', created_at) AS m, count(*) AS n FROM calls, span WHERE created_at >= span.since GROUP BY 1),
  ended AS (
    SELECT date_trunc('minute', ended_at) AS m, count(*) FILTER (WHERE status = 'COMPLETED') AS completed, count(*) FILTER (WHERE status = 'FAILED') AS failed
    FROM calls, span WHERE ended_at >= span.since GROUP BY 1),
  started AS (SELECT date_trunc('minute', started_at) AS m, count(*) AS n FROM call_dials, span WHERE started_at >= span.since GROUP BY 1),
  stopped AS (SELECT date_trunc('minute', ended_at) AS m, count(*) AS n FROM call_dials, span WHERE ended_at >= span.since GROUP BY 1),
  before AS (
    SELECT count(*) AS n FROM call_dials, span
    WHERE started_at < span.since AND (ended_at IS NULL OR ended_at >= span.since))
  SELECT coalesce(json_agg(json_build_array(x.m, x.created, x.dialed, x.completed, x.failed, x.slots) ORDER BY x.m), '[]') FROM (
    SELECT minutes.m,
           coalesce(created.n, 0) AS created,
           coalesce(started.n, 0) AS dialed,
           coalesce(ended.completed, 0) AS completed,
           coalesce(ended.failed, 0) AS failed,
           (SELECT n FROM before) + sum(coalesce(started.n, 0) - coalesce(stopped.n, 0)) OVER (ORDER BY minutes.m) AS slots
    FROM minutes
    LEFT JOIN created USING (m) LEFT JOIN ended USING (m) LEFT JOIN started USING (m) LEFT JOIN stopped USING (m)) x`

/** Dialed calls no look-up will end: the provider cannot be asked (or RECONCILE_AFTER_SECONDS is 0), so their timeout decides. */
const heldUntilTimeoutWhere = (sql: Sql) => sql`status = 'IN_PROGRESS' AND dialed_at IS NOT NULL AND reconcile_at IS NULL AND timeout_at > now()`

/** The dialed calls no look-up will end, and when the last of them times out; null when none. */
export async function heldUntilTimeout(sql: Sql): Promise<{ calls: number; until: Date } | null> {
  const [row] = await sql<{ calls: number; until: Date | null }[]>`
    SELECT count(*)::int AS calls, max(timeout_at) AS until FROM calls WHERE ${heldUntilTimeoutWhere(sql)}`
  return row && row.calls > 0 && row.until ? { calls: row.calls, until: row.until } : null
}
