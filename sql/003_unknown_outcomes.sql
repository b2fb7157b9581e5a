-- Unknown outcomes, fencing, leases and reconciliation (docs/dispatch.md).
--
-- A dial request whose answer we never got (a timeout after sending, a dropped connection, a
-- 5xx) may have placed the call, so such a call keeps its slot and its phone and is re-sent
-- under the same Idempotency-Key until the provider answers for that key. That needs to know,
-- per call: which provider call (dial) the requests are for, whether one of them may have been
-- placed, who is sending right now and until when, and when to stop waiting or ask the provider.

ALTER TABLE calls
  -- The provider call the requests are for: they carry Idempotency-Key "{id}:{dial}" and the
  -- webhook URL names it, so a callback for another dial never ends this one. 0 before the
  -- first claim. `attempts` keeps counting every request, as the spec's retry limit does.
  ADD COLUMN dial integer NOT NULL DEFAULT 0,
  -- The last time a request for the current dial went unanswered: the provider may have placed
  -- the call then, so it is never declared FAILED before timeout_at.
  ADD COLUMN outcome_unknown_at timestamptz,
  -- An in-flight call with no final report from the provider by then is FAILED and frees its
  -- slot: CALL_TIMEOUT_SECONDS after it was dialed or after its last unanswered request,
  -- pushed back each time the provider says the call is still live.
  ADD COLUMN timeout_at timestamptz,
  -- When to next ask the provider (GET /api/v1/calls/{provider_call_id}) about a dialed call
  -- whose final callback has not come; NULL when there is nothing to ask or no way to ask.
  ADD COLUMN reconcile_at timestamptz;

COMMENT ON COLUMN calls.attempts IS 'requests sent to the provider for this call, over all its dials (the spec''s retry count)';
COMMENT ON COLUMN calls.dial IS 'the provider call its requests are for: Idempotency-Key {id}:{dial}';
COMMENT ON COLUMN calls.claimed_by IS 'the worker whose dial request is under way right now (NULL between requests)';
COMMENT ON COLUMN calls.next_attempt_at IS
  'PENDING: not dialed before this. IN_PROGRESS and not yet accepted: the next request goes out then '
  '(while one is under way: the end of its lease, after which another worker may re-send it)';

-- Bring rows written by the previous version into the new shape. Their requests carried
-- Idempotency-Key "{id}:{attempts}", so that is their dial. An in-flight call whose answer was
-- never recorded is re-sent under that key at once; a dialed one is asked about at once.
UPDATE calls SET dial = attempts;
UPDATE calls SET claimed_by = NULL WHERE NOT (status = 'IN_PROGRESS' AND dialed_at IS NULL);
UPDATE calls SET claimed_by = NULL, next_attempt_at = now(), outcome_unknown_at = now()
  WHERE status = 'IN_PROGRESS' AND dialed_at IS NULL;
UPDATE calls SET timeout_at = dialed_at + interval '1800 seconds', reconcile_at = now()
  WHERE status = 'IN_PROGRESS' AND dialed_at IS NOT NULL;

ALTER TABLE calls
  ADD CONSTRAINT calls_dial_iff_attempted CHECK ((dial = 0) = (attempts = 0) AND dial <= attempts),
  -- A request is under way only for an in-flight call the provider has not accepted yet, and
  -- only until its lease ends.
  ADD CONSTRAINT calls_sending_has_lease CHECK (
    claimed_by IS NULL OR (status = 'IN_PROGRESS' AND dialed_at IS NULL AND next_attempt_at IS NOT NULL)),
  -- An accepted call waits for its final report until timeout_at.
  ADD CONSTRAINT calls_dialed_has_timeout CHECK (
    status <> 'IN_PROGRESS' OR dialed_at IS NULL OR timeout_at IS NOT NULL),
  -- A call with no request planned and no acceptance is one whose outcome is unknown: it is
  -- held until its callback, or until timeout_at.
  ADD CONSTRAINT calls_held_has_timeout CHECK (
    status <> 'IN_PROGRESS' OR dialed_at IS NOT NULL OR next_attempt_at IS NOT NULL
    OR (outcome_unknown_at IS NOT NULL AND timeout_at IS NOT NULL));

-- Where a callback or a status look-up came from.
ALTER TABLE callbacks
  ADD COLUMN source text NOT NULL DEFAULT 'webhook',
  ADD COLUMN dial integer,  -- the dial the webhook URL named, when it named one
  ADD CONSTRAINT callbacks_source_known CHECK (source IN ('webhook', 'reconcile'));

-- New verdicts: 'stale' (for an earlier dial of the call: recorded, changes nothing) and
-- 'corrected' (the provider's report on a call we had declared FAILED without it).
ALTER TABLE callbacks DROP CONSTRAINT callbacks_verdict_known;
ALTER TABLE callbacks ADD CONSTRAINT callbacks_verdict_known CHECK (
  verdict IN ('applied', 'corrected', 'duplicate', 'already_final', 'stale', 'unknown_call', 'rejected'));

-- Liveness is no longer a session advisory lock (a lock dies with its connection, which a live
-- worker can lose too): every request holds a lease on its call instead. The table stays for
-- operators; last_seen_at is refreshed by each worker's sweep.
ALTER TABLE workers ADD COLUMN last_seen_at timestamptz;
UPDATE workers SET last_seen_at = COALESCE(stopped_at, started_at);
ALTER TABLE workers ALTER COLUMN last_seen_at SET DEFAULT now();
ALTER TABLE workers ALTER COLUMN last_seen_at SET NOT NULL;

-- A correction is an effect too: its webhook-id counts as used, like an applied one.
DROP INDEX callbacks_applied_webhook_id;
CREATE UNIQUE INDEX callbacks_applied_webhook_id ON callbacks (webhook_id) WHERE verdict IN ('applied', 'corrected');
