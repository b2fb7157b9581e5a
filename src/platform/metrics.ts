import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

// What this process did, for Prometheus. Every process that does work keeps its own (the API
// serves them at /metrics, a worker on METRICS_PORT); counters count what happened here, after
// its transaction committed. What the database holds (calls by status, slots in use, the limit)
// is not here: the API adds those gauges to its /metrics (src/http/app.ts), so summing them over
// processes never counts a call twice.

export const registry = new Registry()
collectDefaultMetrics({ register: registry, prefix: 'orchestrator_' })

const counter = <L extends string>(name: string, help: string, labelNames: readonly L[] = []) =>
  new Counter<L>({ name, help, labelNames, registers: [registry] })

const histogram = <L extends string>(name: string, help: string, buckets: number[], labelNames: readonly L[] = []) =>
  new Histogram<L>({ name, help, buckets, labelNames, registers: [registry] })

/** Fast paths: a millisecond to ten seconds. */
const QUICK = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
/** Waits and calls: a second to a day. */
const SLOW = [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600]

export const metrics = {
  claims: counter('orchestrator_claims_total', 'Calls claimed by this worker to send a dial request (a first or a next request of a dial).'),
  providerRequests: counter(
    'orchestrator_provider_requests_total',
    'Dial requests sent to the provider, by outcome: accepted (202), not_placed (retried later), refused (4xx: the call fails), unknown (no answer; re-sent under the same key).',
    ['outcome'],
  ),
  retries: counter(
    'orchestrator_retries_total',
    'Retries scheduled: request (a dial request not placed, re-sent after backoff), outcome (a new dial after BUSY, NO_ANSWER or FAILED, per RETRY_*).',
    ['kind'],
  ),
  callbacks: counter(
    'orchestrator_callbacks_total',
    'Reports from the provider on record, by source (webhook, reconcile) and verdict (applied, corrected, duplicate, already_final, stale, rejected, unknown_call).',
    ['source', 'verdict'],
  ),
  callbacksRefused: counter(
    'orchestrator_callbacks_refused_total',
    'Callbacks refused unauthenticated or at a URL we did not issue (not stored), by reason.',
    ['reason'],
  ),
  reconciliations: counter(
    'orchestrator_reconciliations_total',
    'Status look-ups at the provider, by result: final, live (still going), unsupported, error.',
    ['result'],
  ),
  timedOut: counter('orchestrator_calls_timed_out_total', 'Calls FAILED because no final report came within CALL_TIMEOUT_SECONDS.'),
  expired: counter('orchestrator_calls_expired_total', 'Calls EXPIRED before they could be dialed.'),
  suppressed: counter('orchestrator_calls_suppressed_total', 'Waiting calls ended SUPPRESSED because their number is on the do-not-call list.'),
  cancelled: counter('orchestrator_calls_cancelled_total', 'Calls CANCELLED by their client before they were dialed.'),
  eventDeliveries: counter(
    'orchestrator_event_deliveries_total',
    'Event delivery attempts to client endpoints, by result: delivered, failed (retried later), given_up.',
    ['result'],
  ),
  claimDuration: histogram(
    'orchestrator_claim_duration_seconds',
    'One claim: counting the free slots and taking waiting calls, under the claim lock (waiting for the lock included).',
    QUICK,
  ),
  queueWait: histogram('orchestrator_queue_wait_seconds', 'From a call’s creation to its first dial request being claimed.', SLOW),
  providerLatency: histogram('orchestrator_provider_request_duration_seconds', 'Dial request round trips to the provider, by outcome.', QUICK, ['outcome']),
  callDuration: histogram('orchestrator_call_duration_seconds', 'Call durations the provider reported with its final report.', SLOW),
  callbackLag: histogram('orchestrator_callback_lag_seconds', 'From the provider’s completedAt to its callback reaching us.', QUICK),
  statusStreams: new Gauge({ name: 'orchestrator_status_streams', help: 'Status page event streams open on this process.', registers: [registry] }),
  unknownEndReasons: counter(
    'orchestrator_provider_unknown_end_reasons_total',
    'Final reports whose end reason (Vapi endedReason, Retell disconnection_reason) is not in the provider’s published list: mapped to FAILED. Each new word is logged once.',
    ['provider'],
  ),
  lookups: counter(
    'orchestrator_provider_lookups_total',
    'Looks for the calls placed for a dial after an unknown outcome (providers without idempotency keys), by result: found (adopted), none, error (the call is held).',
    ['result'],
  ),
  webhookProgress: counter('orchestrator_webhook_progress_total', 'Provider webhook deliveries acknowledged that report no end (ringing, started, analysed before the end), by provider.', ['provider']),
  slotRefill: histogram(
    'orchestrator_slot_refill_seconds',
    'From a slot being freed (a call ending) to this worker claiming a waiting call into it.',
    QUICK,
  ),
}

/** Prometheus text for this process's metrics and any `extra` registries (the API's database gauges). */
export async function exposition(...extra: Registry[]): Promise<{ body: string; contentType: string }> {
  const merged = extra.length ? Registry.merge([registry, ...extra]) : registry
  return { body: await merged.metrics(), contentType: registry.contentType }
}
