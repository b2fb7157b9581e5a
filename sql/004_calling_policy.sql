-- The rules a responsible calling team needs (docs/calling-policy.md): scheduling, calling
-- windows in the called party's local time, retries that depend on the outcome, caps per person,
-- a do-not-call list, and dispatch that can be paused and throttled without a restart. Every
-- rule is decided in the claim transaction; a call that must wait keeps a job due when it may go.

-- A call whose number went on the do-not-call list before it was dialed ends so, never dialed.
-- (Not used by any statement below: a new enum value cannot be used in the transaction that adds it.)
ALTER TYPE call_status ADD VALUE 'SUPPRESSED';

ALTER TABLE calls
  -- The client's: the call is not dialed before this.
  ADD COLUMN not_before timestamptz,
  -- The client's calling window for this call, overriding CALLING_WINDOW:
  -- {"days": ["mon", …], "start": "09:00", "end": "20:00", "timezone"?: "America/New_York"}.
  ADD COLUMN calling_window jsonb,
  -- The called party's possible time zones (from the number, or the window's own timezone).
  ADD COLUMN time_zones text[] NOT NULL DEFAULT '{}',
  -- Requests sent for the current dial; MAX_ATTEMPTS bounds it. `attempts` counts them all.
  ADD COLUMN dial_requests integer NOT NULL DEFAULT 0,
  -- Why a PENDING call is not dialed yet, when it is waiting for something: not_before,
  -- calling_window, cap (per-person caps) or retry (an outcome retry's delay).
  ADD COLUMN waiting_for text,
  ADD CONSTRAINT calls_waiting_for_known CHECK (waiting_for IN ('not_before', 'calling_window', 'cap', 'retry')),
  ADD CONSTRAINT calls_calling_window_object CHECK (calling_window IS NULL OR jsonb_typeof(calling_window) = 'object'),
  ADD CONSTRAINT calls_dial_requests_in_dial CHECK (dial_requests <= attempts AND (dial = 0) = (dial_requests = 0));

UPDATE calls SET dial_requests = CASE WHEN dial = 0 THEN 0 ELSE 1 END;

-- Every dial of every call: one provider call under one Idempotency-Key, with the requests it
-- took, what the provider made of it, and when. It is also what per-person caps count.
CREATE TABLE call_dials (
  call_id           uuid NOT NULL REFERENCES calls (id),
  dial              integer NOT NULL CHECK (dial > 0),
  phone             text NOT NULL,
  started_at        timestamptz NOT NULL DEFAULT now(),  -- claimed
  requests          integer NOT NULL DEFAULT 1 CHECK (requests > 0),
  dialed_at         timestamptz,                          -- the provider accepted it
  provider_call_id  text,
  -- What became of it: the provider's report (COMPLETED, FAILED, BUSY, NO_ANSWER), refused
  -- (never placed), unknown (no report by its timeout), suppressed or expired; NULL while it lasts.
  outcome           text CHECK (outcome IN ('COMPLETED', 'FAILED', 'BUSY', 'NO_ANSWER', 'refused', 'unknown')),
  error             text,
  ended_at          timestamptz,
  PRIMARY KEY (call_id, dial),
  CONSTRAINT call_dials_ended_with_outcome CHECK ((ended_at IS NULL) = (outcome IS NULL))
);
COMMENT ON TABLE call_dials IS 'One row per dial (provider call) of a call; see docs/calling-policy.md.';
CREATE INDEX call_dials_phone_started_idx ON call_dials (phone, started_at);

-- What calls made before this table existed had: their current dial, as far as it went.
INSERT INTO call_dials (call_id, dial, phone, started_at, requests, dialed_at, provider_call_id, outcome, error, ended_at)
SELECT id, dial, phone, COALESCE(started_at, created_at), GREATEST(attempts - dial + 1, 1), dialed_at, provider_call_id,
       CASE WHEN status = 'COMPLETED' THEN 'COMPLETED'
            WHEN status = 'FAILED' AND provider_status IN ('FAILED', 'BUSY', 'NO_ANSWER') THEN provider_status
            WHEN status = 'FAILED' AND dialed_at IS NULL AND outcome_unknown_at IS NULL THEN 'refused'
            WHEN status = 'FAILED' THEN 'unknown' END,
       CASE WHEN status = 'FAILED' THEN last_error END,
       CASE WHEN status IN ('COMPLETED', 'FAILED') THEN ended_at END
FROM calls WHERE dial > 0;

-- The do-not-call list: numbers never dialed again, whatever calls exist for them.
CREATE TABLE suppressions (
  phone       text PRIMARY KEY,
  reason      text,
  source      text NOT NULL DEFAULT 'api',   -- api, import, or what the importer named
  created_at  timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT suppressions_phone_e164 CHECK (phone ~ '^\+[1-9][0-9]{6,14}$')
);
CREATE INDEX suppressions_created_idx ON suppressions (created_at DESC, phone DESC);

-- Dispatch as the operators set it at run time: one row. Every claim reads it inside its
-- transaction, so a change holds for every worker at once; a NOTIFY wakes them to act on it.
CREATE TABLE dispatch_settings (
  id                    boolean PRIMARY KEY DEFAULT true CHECK (id),
  paused                boolean NOT NULL DEFAULT false,
  -- NULL: MAX_CONCURRENT_CALLS from each worker's environment.
  max_concurrent_calls  integer CHECK (max_concurrent_calls > 0),
  -- The calling policy (windows, caps) waiting calls' due times were computed with; a worker
  -- that starts with another policy computes them again.
  policy_hash           text,
  updated_at            timestamptz NOT NULL DEFAULT now()
);
INSERT INTO dispatch_settings DEFAULT VALUES;
