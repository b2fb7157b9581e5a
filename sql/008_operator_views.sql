-- Operators' SQL (README "Operating it with SQL"). The questions asked of a running system at
-- 3 a.m. (what is in flight, what failed and why, which numbers are backed up, what the
-- provider is telling us, which events are not getting through) each get a view with plain
-- column names, so nobody has to rebuild the joins under pressure. The two manual actions
-- that must never be done with a bare UPDATE, because a call and its pg-boss job change
-- together (src/calls/jobs.ts) and every change is reported as an event (src/events/outbox.ts),
-- get functions that do all of it in one transaction: retry_call() and cancel_call().
--
-- The views read only our tables: this migration runs before pg-boss has created its schema on
-- a new database. The functions that touch pgboss.job are PL/pgSQL, whose bodies are checked
-- when they first run, not here.

-- ── Views ────────────────────────────────────────────────────────────────────────────────

CREATE VIEW calls_in_flight AS
  SELECT c.id AS call_id,
         c.phone,
         c.dial,
         c.dial_requests AS requests_this_dial,
         c.attempts AS requests_in_all,
         c.started_at,
         floor(extract(epoch FROM now() - c.started_at))::integer AS seconds_in_flight,
         CASE WHEN c.dialed_at IS NOT NULL THEN 'dialed: waiting for the final word'
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
  'Calls that ended FAILED or EXPIRED in the last hour, with why (reason: last_error), the provider''s word and the '
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

-- ── Helpers the functions share with nothing else ───────────────────────────────────────

-- A time as JavaScript's toISOString() writes it (UTC, milliseconds, "Z"), so an event written
-- here reads exactly like one the service writes.
CREATE FUNCTION iso_utc(t timestamptz) RETURNS text LANGUAGE sql IMMUTABLE STRICT
  RETURN to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"');

-- The call resource of the API and of events: src/calls/model.ts toResource(), in SQL.
-- test/operator-sql.test.ts compares the two, so a field added there and not here fails it.
CREATE FUNCTION call_resource(c calls) RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_object(
    'id', c.id,
    'payload', jsonb_build_object('to', c.phone, 'scriptId', c.script_id, 'metadata', c.metadata),
    'status', c.status,
    'attempts', c.attempts,
    'lastError', c.last_error,
    'nextAttemptAt', CASE WHEN c.status = 'PENDING' OR (c.status = 'IN_PROGRESS' AND c.dialed_at IS NULL) THEN iso_utc(c.next_attempt_at) END,
    'waitingFor', CASE WHEN c.status = 'PENDING' THEN
                    CASE c.waiting_for WHEN 'not_before' THEN 'notBefore' WHEN 'calling_window' THEN 'callingWindow' ELSE c.waiting_for END END,
    'notBefore', iso_utc(c.not_before),
    'expiresAt', iso_utc(c.expires_at),
    'callingWindow', c.calling_window,
    'timeZones', to_jsonb(c.time_zones),
    'batchId', c.batch_id,
    'providerCallId', c.provider_call_id,
    'providerStatus', c.provider_status,
    'durationSec', c.duration_sec,
    'createdAt', iso_utc(c.created_at),
    'updatedAt', iso_utc(c.updated_at),
    'startedAt', iso_utc(c.started_at),
    'endedAt', iso_utc(c.ended_at),
    'dials', COALESCE((
      SELECT jsonb_agg(jsonb_build_object(
               'dial', d.dial, 'startedAt', iso_utc(d.started_at), 'requests', d.requests, 'dialedAt', iso_utc(d.dialed_at),
               'providerCallId', d.provider_call_id, 'outcome', d.outcome, 'error', d.error, 'endedAt', iso_utc(d.ended_at))
             ORDER BY d.dial)
      FROM call_dials d WHERE d.call_id = c.id), '[]'::jsonb))
$$;

-- A pg-boss job on `queue`, as pg-boss 12.35's send()/insert() writes it (plans.js insertJobs):
-- every option from the queue's own settings, which are the ones src/db/queue.ts created the
-- queue with. Inserted through the partitioned parent, so it lands wherever pg-boss keeps that
-- queue's jobs.
CREATE FUNCTION enqueue_job(queue text, data jsonb, singleton_key text, group_id text DEFAULT NULL) RETURNS uuid
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
  job_id uuid;
  starts timestamptz := pgboss.job_now();
BEGIN
  INSERT INTO pgboss.job (id, name, data, priority, start_after, created_on, singleton_key, singleton_on, group_id, group_tier,
                          expire_seconds, deletion_seconds, keep_until, retry_limit, retry_delay, retry_backoff, retry_delay_max,
                          policy, dead_letter, heartbeat_seconds, blocked, blocking, pending_dependencies)
  SELECT gen_random_uuid(), q.name, data, 0, starts, pgboss.job_now(), singleton_key, NULL, group_id, NULL,
         q.expire_seconds, q.deletion_seconds, starts + q.retention_seconds * interval '1s', q.retry_limit, q.retry_delay,
         COALESCE(q.retry_backoff, false), q.retry_delay_max, q.policy, q.dead_letter, q.heartbeat_seconds, false, false, 0
  FROM pgboss.queue q WHERE q.name = queue
  ON CONFLICT DO NOTHING
  RETURNING id INTO job_id;
  IF job_id IS NULL THEN
    RAISE EXCEPTION 'pg-boss refused a job on queue "%" (key %)', queue, singleton_key
      USING HINT = 'Is the queue created? Start the service once (bin/orchestrator migrate) so pg-boss sets up its schema.';
  END IF;
  RETURN job_id;
END $$;

-- One event as src/events/outbox.ts writes it: the event row, a delivery row per endpoint that
-- takes its type, one delivery job per endpoint and scope, and a wake-up for the senders.
CREATE FUNCTION write_event(type text, call_id uuid, batch_id uuid, data jsonb) RETURNS text
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
  event_id text := 'msg_' || gen_random_uuid();
  endpoint uuid;
  delivered boolean := false;
BEGIN
  INSERT INTO events (id, type, call_id, batch_id, payload)
  VALUES (event_id, type, call_id, batch_id, jsonb_build_object('type', type, 'timestamp', iso_utc(now()), 'data', data));
  FOR endpoint IN
    SELECT p.id FROM event_endpoints p WHERE p.disabled_at IS NULL AND (p.event_types IS NULL OR type = ANY (p.event_types))
  LOOP
    INSERT INTO event_deliveries AS d (event_id, endpoint_id) VALUES (event_id, endpoint)
      ON CONFLICT ON CONSTRAINT event_deliveries_pkey DO UPDATE SET status = 'pending', next_attempt_at = NULL;
    PERFORM enqueue_job('event-deliveries',
      jsonb_build_object('endpointId', endpoint, 'callId', call_id, 'batchId', CASE WHEN call_id IS NULL THEN batch_id END),
      endpoint || ':' || COALESCE(call_id::text, 'batch:' || batch_id), endpoint::text);
    delivered := true;
  END LOOP;
  IF delivered THEN PERFORM pg_notify('call_orchestrator_events', ''); END IF;
  RETURN event_id;
END $$;

-- `type` for this call as it is now; then batch.completed if its batch has just had its last
-- call end (src/db/batches.ts completeBatches, whose lock order this keeps).
CREATE FUNCTION emit_call_event(type text, c calls) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
  b call_batches;
BEGIN
  PERFORM write_event(type, c.id, c.batch_id, call_resource(c));
  IF c.batch_id IS NULL OR c.ended_at IS NULL THEN RETURN; END IF;
  PERFORM 1 FROM call_batches WHERE id = c.batch_id AND completed_at IS NULL FOR NO KEY UPDATE;
  IF NOT FOUND THEN RETURN; END IF;
  UPDATE call_batches SET completed_at = now()
  WHERE id = c.batch_id AND completed_at IS NULL
    AND NOT EXISTS (SELECT 1 FROM calls o WHERE o.batch_id = c.batch_id AND o.status IN ('PENDING', 'IN_PROGRESS'))
  RETURNING * INTO b;
  IF b.id IS NULL THEN RETURN; END IF;
  PERFORM write_event('batch.completed', NULL, b.id, jsonb_build_object(
    'id', b.id, 'items', b.items, 'created', b.calls,
    'byStatus', COALESCE((SELECT jsonb_object_agg(s.status, s.n) FROM (
                  SELECT o.status, count(*)::int AS n FROM calls o WHERE o.batch_id = b.id GROUP BY o.status) s), '{}'::jsonb),
    'createdAt', iso_utc(b.created_at), 'completedAt', iso_utc(b.completed_at)));
END $$;

-- ── The manual actions ───────────────────────────────────────────────────────────────────

-- Both take the claim lock shared and then the call's row, as the API's cancel and PATCH do
-- (src/db/locks.ts): a claim of the same call either committed first (the function sees it
-- IN_PROGRESS and refuses) or waits for the function to commit; never both.

CREATE FUNCTION cancel_call(call_id uuid) RETURNS calls
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
  c calls;
BEGIN
  PERFORM pg_advisory_xact_lock_shared(7261002);
  SELECT * INTO c FROM calls WHERE id = call_id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no call has id %', call_id
      USING ERRCODE = 'no_data_found', HINT = 'Check the id: SELECT id, phone, status FROM calls ORDER BY created_at DESC LIMIT 20;';
  END IF;
  IF c.status <> 'PENDING' THEN
    RAISE EXCEPTION 'call % is %; only a PENDING call can be cancelled', call_id, c.status
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = CASE WHEN c.status = 'IN_PROGRESS' THEN 'It is in flight: the provider has it or is about to; let it end.'
                        ELSE 'It has already ended; nothing to cancel.' END;
  END IF;
  UPDATE calls SET status = 'CANCELLED', ended_at = now(), updated_at = now(), next_attempt_at = NULL, waiting_for = NULL,
                   last_error = COALESCE(last_error, 'cancelled by an operator before it was dialed')
  WHERE id = call_id AND status = 'PENDING'
  RETURNING * INTO c;
  IF c.job_id IS NOT NULL THEN
    DELETE FROM pgboss.job WHERE name = 'calls' AND id = c.job_id;
  END IF;
  PERFORM emit_call_event('call.cancelled', c);
  RETURN c;
END $$;
COMMENT ON FUNCTION cancel_call(uuid) IS
  'PENDING → CANCELLED, its pg-boss job deleted, call.cancelled (and batch.completed) written: what POST /calls/:id/cancel does. '
  'Raises and changes nothing for a call that is not PENDING or does not exist.';

CREATE FUNCTION retry_call(call_id uuid, expires_at timestamptz DEFAULT NULL) RETURNS calls
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
  c calls;
  new_expiry timestamptz;
  job uuid;
BEGIN
  PERFORM pg_advisory_xact_lock_shared(7261002);
  SELECT * INTO c FROM calls WHERE id = call_id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no call has id %', call_id
      USING ERRCODE = 'no_data_found', HINT = 'Check the id: SELECT * FROM calls_failed_last_hour;';
  END IF;
  IF c.status NOT IN ('FAILED', 'EXPIRED') THEN
    RAISE EXCEPTION 'call % is %; only a FAILED or EXPIRED call can be retried', call_id, c.status
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = CASE c.status::text
                     WHEN 'PENDING' THEN 'It is already waiting to be dialed.'
                     WHEN 'IN_PROGRESS' THEN 'It is in flight now.'
                     WHEN 'COMPLETED' THEN 'It completed; make a new call (POST /calls) to call again.'
                     ELSE 'It was ended on purpose (cancelled or on the do-not-call list); make a new call if that has changed.' END;
  END IF;
  IF EXISTS (SELECT 1 FROM suppressions s WHERE s.phone = c.phone) THEN
    RAISE EXCEPTION 'call %: % is on the do-not-call list', call_id, c.phone
      USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'Remove it from the list first (DELETE /suppressions/{phone}) if calling it is right.';
  END IF;
  -- The call gets the same time to wait as it had when it was made, counted from now, unless given.
  new_expiry := COALESCE(expires_at, GREATEST(c.expires_at, now() + (c.expires_at - c.created_at)));
  IF new_expiry <= now() THEN
    RAISE EXCEPTION 'call %: expires_at % is not in the future', call_id, new_expiry
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Give a later expires_at, or leave it out.';
  END IF;
  -- Its old job is done (or failed, which under key_strict_fifo would block the phone): it goes.
  IF c.job_id IS NOT NULL THEN
    DELETE FROM pgboss.job WHERE name = 'calls' AND id = c.job_id;
  END IF;
  job := enqueue_job('calls', jsonb_build_object('callId', c.id), c.phone);
  UPDATE calls SET status = 'PENDING', ended_at = NULL, job_id = job, expires_at = new_expiry,
                   next_attempt_at = NULL, waiting_for = NULL, claimed_by = NULL, dialed_at = NULL,
                   outcome_unknown_at = NULL, timeout_at = NULL, reconcile_at = NULL, updated_at = now()
  WHERE id = call_id AND status IN ('FAILED', 'EXPIRED')
  RETURNING * INTO c;
  PERFORM emit_call_event('call.retry_scheduled', c);
  PERFORM pg_notify('call_orchestrator_wake', '');
  RETURN c;
END $$;
COMMENT ON FUNCTION retry_call(uuid, timestamptz) IS
  'FAILED or EXPIRED → PENDING with a fresh pg-boss job due now, so a worker dials it again (a new dial); writes '
  'call.retry_scheduled. Raises and changes nothing for a call in another state, one that does not exist, or a number '
  'on the do-not-call list. expires_at: by default it may wait as long as it first could, counted from now.';
