-- The calls table: one row per outbound call request, from creation to its final status.
-- It is written for people who query it by hand as much as for the service: plain column
-- names, an enum for the status, and CHECK constraints so that no row can claim a state its
-- timestamps contradict. pg-boss keeps its own tables in the "pgboss" schema.

CREATE TYPE call_status AS ENUM ('PENDING', 'IN_PROGRESS', 'COMPLETED', 'FAILED', 'EXPIRED');

CREATE TABLE calls (
  id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  phone             text NOT NULL,          -- E.164, the payload's "to"
  script_id         text NOT NULL,
  metadata          jsonb NOT NULL DEFAULT '{}',
  status            call_status NOT NULL DEFAULT 'PENDING',
  attempts          integer NOT NULL DEFAULT 0,  -- dial attempts started, the current one included
  last_error        text,
  next_attempt_at   timestamptz,            -- a PENDING call is not dialed before this (retry backoff)
  expires_at        timestamptz,            -- a PENDING call still waiting at this time becomes EXPIRED
  provider_call_id  text,                   -- the provider's id, from its 202 or its callback
  provider_status   text,                   -- the provider's final report: COMPLETED, FAILED, BUSY, NO_ANSWER
  duration_sec      integer,
  job_id            uuid,                   -- the pg-boss job that carries this call right now
  claimed_by        integer,                -- the worker (workers.id) that holds the current attempt
  idempotency_key   text,                   -- the client's Idempotency-Key header on POST /calls
  request_hash      text,                   -- sha256 of that request, to refuse a reused key
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now(),
  started_at        timestamptz,            -- when the current (or last) attempt was claimed
  dialed_at         timestamptz,            -- when the provider accepted the current attempt
  ended_at          timestamptz,            -- when the call reached its final status

  CONSTRAINT calls_phone_e164 CHECK (phone ~ '^\+[1-9][0-9]{6,14}$'),
  CONSTRAINT calls_script_id_length CHECK (length(script_id) BETWEEN 1 AND 200),
  CONSTRAINT calls_metadata_object CHECK (jsonb_typeof(metadata) = 'object'),
  CONSTRAINT calls_attempts_nonnegative CHECK (attempts >= 0),
  CONSTRAINT calls_duration_nonnegative CHECK (duration_sec IS NULL OR duration_sec >= 0),
  -- A call has a start time exactly when some attempt has been claimed.
  CONSTRAINT calls_started_iff_attempted CHECK ((started_at IS NULL) = (attempts = 0)),
  -- Waiting and in-flight calls have not ended; finished ones have.
  CONSTRAINT calls_ended_iff_terminal CHECK (
    (ended_at IS NULL) = (status IN ('PENDING', 'IN_PROGRESS'))),
  CONSTRAINT calls_in_progress_claimed CHECK (
    status <> 'IN_PROGRESS' OR (started_at IS NOT NULL AND attempts > 0)),
  CONSTRAINT calls_dialed_only_in_flight CHECK (
    dialed_at IS NULL OR status <> 'PENDING'),
  CONSTRAINT calls_failed_has_error CHECK (status <> 'FAILED' OR last_error IS NOT NULL),
  CONSTRAINT calls_idempotency_has_hash CHECK ((idempotency_key IS NULL) = (request_hash IS NULL))
);

COMMENT ON TABLE calls IS 'Outbound call requests and their lifecycle; see docs/operations.md, "Schema".';

-- The one-call-in-flight-per-phone rule, held by Postgres itself.
CREATE UNIQUE INDEX calls_one_in_flight_per_phone ON calls (phone) WHERE status = 'IN_PROGRESS';

-- Keyset pagination, newest first, with and without a status filter.
CREATE INDEX calls_created_idx ON calls (created_at DESC, id DESC);
CREATE INDEX calls_status_created_idx ON calls (status, created_at DESC, id DESC);

CREATE UNIQUE INDEX calls_provider_call_id_key ON calls (provider_call_id);
CREATE UNIQUE INDEX calls_idempotency_key_key ON calls (idempotency_key);

-- The sweeps: pending calls that age out, and pending calls whose backoff ends soonest.
CREATE INDEX calls_pending_expiry_idx ON calls (expires_at) WHERE status = 'PENDING';
CREATE INDEX calls_pending_next_attempt_idx ON calls (next_attempt_at) WHERE status = 'PENDING';

-- Worker processes, for operators: which are running and which calls they hold.
-- (003_unknown_outcomes.sql replaced the liveness lock this first version used with a lease
-- per dial request; see src/services/dispatch/claim.ts.)
CREATE TABLE workers (
  id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  host        text NOT NULL,
  pid         integer NOT NULL,
  started_at  timestamptz NOT NULL DEFAULT now(),
  stopped_at  timestamptz
);
