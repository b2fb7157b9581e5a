-- What integrators need (docs/api.md and docs/events.md): calls created a thousand at a
-- time, calls cancelled before they are dialed, and every change of a call pushed to the
-- client's systems as a signed event, written in the transaction that made the change.

-- A call its client no longer wants, cancelled before it was dialed.
-- (Not used by any statement below: a new enum value cannot be used in the transaction that adds it.)
ALTER TYPE call_status ADD VALUE 'CANCELLED';

-- One POST /calls/batch: its Idempotency-Key, and when every call of it was final.
CREATE TABLE call_batches (
  id               uuid PRIMARY KEY,
  idempotency_key  text UNIQUE,
  request_hash     text,
  items            integer NOT NULL CHECK (items > 0),     -- items in the request
  calls            integer NOT NULL CHECK (calls >= 0),    -- calls it created
  created_at       timestamptz NOT NULL DEFAULT now(),
  completed_at     timestamptz,                             -- every call of it final (batch.completed)
  results          jsonb,                                   -- the answer per item, for a replay under its key
  CONSTRAINT call_batches_idempotency_has_hash CHECK ((idempotency_key IS NULL) = (request_hash IS NULL))
);

ALTER TABLE calls
  ADD COLUMN batch_id uuid REFERENCES call_batches (id),
  ADD COLUMN batch_index integer,   -- the item's position in the batch request
  ADD CONSTRAINT calls_batch_index CHECK ((batch_id IS NULL) = (batch_index IS NULL));
CREATE INDEX calls_batch_idx ON calls (batch_id, batch_index) WHERE batch_id IS NOT NULL;

-- Where events go: set by the operator through EVENT_WEBHOOK_URL (source 'env') or the API.
CREATE TABLE event_endpoints (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  url          text NOT NULL,
  -- whsec_ secrets: the first signs; a second (the previous one, during a rotation) signs too.
  secrets      text[] NOT NULL CHECK (cardinality(secrets) BETWEEN 1 AND 2),
  event_types  text[],                 -- NULL: every type
  source       text NOT NULL DEFAULT 'api' CHECK (source IN ('env', 'api')),
  created_at   timestamptz NOT NULL DEFAULT now(),
  disabled_at  timestamptz
);
CREATE UNIQUE INDEX event_endpoints_env_url ON event_endpoints (url) WHERE source = 'env';

-- Every event, as sent: written in the same transaction as the change it reports, so none is
-- lost and none is invented. `id` is the webhook-id its deliveries carry.
CREATE TABLE events (
  id          text PRIMARY KEY,            -- msg_…
  seq         bigint GENERATED ALWAYS AS IDENTITY,
  type        text NOT NULL,
  call_id     uuid REFERENCES calls (id),
  batch_id    uuid REFERENCES call_batches (id),
  payload     jsonb NOT NULL,              -- the body: {"type", "timestamp", "data"}
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX events_seq_idx ON events (seq);
CREATE INDEX events_call_idx ON events (call_id, seq) WHERE call_id IS NOT NULL;
CREATE INDEX events_batch_idx ON events (batch_id, seq) WHERE batch_id IS NOT NULL;

-- The delivery log: one row per event and endpoint, kept up to date by the workers that send them.
-- A call's events reach an endpoint in `seq` order: a delivery waits while an earlier one of the
-- same call to the same endpoint is still pending.
CREATE TABLE event_deliveries (
  event_id          text NOT NULL REFERENCES events (id),
  endpoint_id       uuid NOT NULL REFERENCES event_endpoints (id),
  status            text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
  attempts          integer NOT NULL DEFAULT 0,
  last_attempt_at   timestamptz,
  last_status_code  integer,               -- the receiver's HTTP status, when it answered
  last_error        text,
  next_attempt_at   timestamptz,           -- when the next try is due, while pending
  delivered_at      timestamptz,
  PRIMARY KEY (event_id, endpoint_id)
);
CREATE INDEX event_deliveries_open_idx ON event_deliveries (endpoint_id, status) WHERE status <> 'delivered';
