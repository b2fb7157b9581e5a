-- Cancelling or retrying a call from psql, without a second copy of the logic. An operator
-- files a request (request_cancel, request_retry); a worker carries it out within a second
-- through the very code the API runs (src/services/calls/actions.ts) and writes down here how it went,
-- in the same transaction as the action itself. The functions only insert the request and wake
-- the workers; they change no call.
--
--   SELECT request_retry('3f0e4c1a-7b2d-4e8f-9a61-0c5d2b7e8f10');
--   SELECT * FROM call_actions ORDER BY id DESC LIMIT 5;   -- outcome: done, refused

CREATE TABLE call_actions (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  call_id       uuid NOT NULL,
  action        text NOT NULL,
  -- retry only: the new deadline; NULL gives the call as long to wait as it first had.
  expires_at    timestamptz,
  requested_by  text NOT NULL DEFAULT current_user,
  requested_at  timestamptz NOT NULL DEFAULT now(),
  done_at       timestamptz,
  -- done: carried out; refused: the call could not be (why is in detail, as the API would say).
  outcome       text,
  -- The call's status afterwards, or the reason it was refused.
  detail        text,
  CONSTRAINT call_actions_action_known CHECK (action IN ('cancel', 'retry')),
  CONSTRAINT call_actions_expiry_for_retry CHECK (expires_at IS NULL OR action = 'retry'),
  CONSTRAINT call_actions_outcome_known CHECK (outcome IN ('done', 'refused')),
  CONSTRAINT call_actions_done_has_outcome CHECK ((done_at IS NULL) = (outcome IS NULL))
);
COMMENT ON TABLE call_actions IS
  'Cancels and retries requested from SQL (request_cancel, request_retry), carried out by a worker through the API''s '
  'own code; outcome and detail say how each went.';

-- What the workers look for: the requests not carried out yet, oldest first.
CREATE INDEX call_actions_waiting ON call_actions (id) WHERE done_at IS NULL;

-- Both functions name everything by schema and run with a fixed search_path, so no object an
-- untrusted role creates elsewhere can stand in for ours. EXECUTE is not granted to PUBLIC:
-- grant it to the roles that operate the service.
CREATE FUNCTION request_cancel(call_id uuid) RETURNS bigint
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
  WITH filed AS (INSERT INTO public.call_actions (call_id, action) VALUES (call_id, 'cancel') RETURNING id)
  SELECT filed.id FROM filed, LATERAL (SELECT pg_catalog.pg_notify('call_orchestrator_wake', 'action')) woken
$$;
COMMENT ON FUNCTION request_cancel(uuid) IS
  'Asks the workers to cancel a PENDING call, as POST /calls/:id/cancel does; returns the request''s id in call_actions.';

CREATE FUNCTION request_retry(call_id uuid, expires_at timestamptz DEFAULT NULL) RETURNS bigint
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
  WITH filed AS (INSERT INTO public.call_actions (call_id, action, expires_at) VALUES (call_id, 'retry', expires_at) RETURNING id)
  SELECT filed.id FROM filed, LATERAL (SELECT pg_catalog.pg_notify('call_orchestrator_wake', 'action')) woken
$$;
COMMENT ON FUNCTION request_retry(uuid, timestamptz) IS
  'Asks the workers to dial a FAILED or EXPIRED call again, as POST /calls/:id/retry does; returns the request''s id in call_actions.';

REVOKE ALL ON FUNCTION request_cancel(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION request_retry(uuid, timestamptz) FROM PUBLIC;
