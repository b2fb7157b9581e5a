-- Operators' SQL (docs/operations.md, "Operating it with SQL"). The questions asked of a running system at
-- 3 a.m. (what is in flight, what failed and why, which numbers are backed up, what the
-- provider is telling us, which events are not getting through) each get a view with plain
-- column names, so nobody has to rebuild the joins under pressure.
--
-- This migration also made PL/pgSQL copies of cancelling and retrying (cancel_call,
-- retry_call, and the helpers they shared, which wrote pgboss.job by hand). A second copy of the
-- logic has no place: 010 drops them from databases migrated before, and they are no longer
-- made on new ones. The manual actions are sql/011's requests, carried out by the service's own
-- code. The views read only our tables: this migration runs before pg-boss has created its
-- schema on a new database.

-- ── Views ────────────────────────────────────────────────────────────────────────────────

CREATE VIEW calls_in_flight AS
  SELECT c.id AS call_id,
         c.phone,
         c.dial,
         c.dial_requests AS requests_this_dial,
         c.attempts AS requests_in_all,
         c.started_at,
         floor(extract(epoch FROM now() - c.started_at))::integer AS seconds_in_flight,
         CASE WHEN c.dialed_at IS NOT NULL THEN 'dialed: waiting for the final report'
              WHEN c.claimed_by IS NOT NULL THEN 'request under way'
              WHEN c.next_attempt_at IS NOT NULL THEN 'waiting to re-send'
              ELSE 'outcome unknown: held until its callback or timeout' END AS state,
         c.dialed_at,
         c.provider_call_id,
         c.claimed_by AS worker_id,
         w.host || ':' || w.pid AS worker,
         c.next_attempt_at AS next_request_at,
         c.timeout_at AS times_out_at,
         c.last_error
  FROM calls c
  LEFT JOIN workers w ON w.id = c.claimed_by
  WHERE c.status = 'IN_PROGRESS';
COMMENT ON VIEW calls_in_flight IS
  'Calls IN_PROGRESS now, longest first when ordered by seconds_in_flight DESC: their dial, its state, the provider''s id, '
  'the worker whose request is under way (NULL between requests and once dialed), and when it times out.';

CREATE VIEW calls_failed_last_hour AS
  SELECT c.id AS call_id,
         c.phone,
         c.status,
         c.ended_at,
         c.last_error AS reason,
         c.provider_status,
         c.attempts AS requests,
         c.dial AS dials,
         d.outcome AS last_dial_outcome,
         c.batch_id
  FROM calls c
  LEFT JOIN call_dials d ON d.call_id = c.id AND d.dial = c.dial
  WHERE c.status IN ('FAILED', 'EXPIRED') AND c.ended_at > now() - interval '1 hour';
COMMENT ON VIEW calls_failed_last_hour IS
  'Calls that ended FAILED or EXPIRED in the last hour, with why (reason: last_error), the provider''s report and the '
  'outcome of their last dial. Group by reason for the causes: SELECT reason, count(*) FROM calls_failed_last_hour GROUP BY 1.';

CREATE VIEW phone_backlog AS
  SELECT c.phone,
         count(*)::integer AS pending_calls,
         min(c.created_at) AS oldest_waiting_since,
         -- A PENDING call without next_attempt_at may go now.
         GREATEST(min(COALESCE(c.next_attempt_at, now())), now()) AS next_eligible_at,
         array_agg(DISTINCT c.waiting_for ORDER BY c.waiting_for) FILTER (WHERE c.waiting_for IS NOT NULL) AS waiting_for,
         EXISTS (SELECT 1 FROM calls f WHERE f.phone = c.phone AND f.status = 'IN_PROGRESS') AS call_in_flight,
         EXISTS (SELECT 1 FROM suppressions s WHERE s.phone = c.phone) AS suppressed
  FROM calls c
  WHERE c.status = 'PENDING'
  GROUP BY c.phone;
COMMENT ON VIEW phone_backlog IS
  'Numbers with PENDING calls: how many, waiting since when, when the soonest may go (a calling window, a cap, a '
  'retry delay or notBefore may hold it: waiting_for), and whether a call in flight or the do-not-call list blocks them.';

CREATE VIEW call_attempts AS
  SELECT c.id AS call_id,
         c.phone,
         c.status,
         count(d.dial)::integer AS dials,
         c.attempts AS requests,
         min(d.started_at) AS first_dial_at,
         max(d.started_at) AS last_dial_at,
         string_agg(COALESCE(d.outcome, 'in flight'), ', ' ORDER BY d.dial) FILTER (WHERE d.dial IS NOT NULL) AS outcomes
  FROM calls c
  LEFT JOIN call_dials d ON d.call_id = c.id
  GROUP BY c.id;
COMMENT ON VIEW call_attempts IS
  'Per call: its dials (provider calls), the requests sent over all of them, when the first and last began, and '
  'each dial''s outcome in order (COMPLETED, FAILED, BUSY, NO_ANSWER, refused, unknown; "in flight" while it lasts).';

CREATE VIEW callback_verdicts_by_hour AS
  SELECT date_trunc('hour', received_at) AS hour,
         source,
         verdict,
         count(*)::integer AS callbacks
  FROM callbacks
  GROUP BY 1, 2, 3;
COMMENT ON VIEW callback_verdicts_by_hour IS
  'Provider callbacks and status look-ups per hour, by source and verdict (applied, corrected, duplicate, '
  'already_final, stale, unknown_call, rejected). callbacks.reason says why one was rejected or ignored.';

CREATE VIEW event_deliveries_failing AS
  SELECT p.url AS endpoint,
         d.endpoint_id,
         e.type AS event,
         d.event_id,
         e.call_id,
         e.batch_id,
         d.status,
         d.attempts,
         d.last_attempt_at,
         d.last_status_code,
         d.last_error,
         d.next_attempt_at AS next_retry_at
  FROM event_deliveries d
  JOIN events e ON e.id = d.event_id
  JOIN event_endpoints p ON p.id = d.endpoint_id
  WHERE d.status = 'failed' OR (d.status = 'pending' AND d.attempts > 0);
COMMENT ON VIEW event_deliveries_failing IS
  'Event deliveries that gave up (status failed) or are being retried (pending after a failed attempt): the endpoint, '
  'the event, the attempts so far, the receiver''s last answer and when the next try is due.';
