-- Every provider callback we receive, with its verdict, so operators can answer "what did
-- the provider tell us about this call, and what did we do with it?" with one query.
-- It also makes callbacks idempotent: a webhook-id is applied at most once.

CREATE TABLE callbacks (
  id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  received_at       timestamptz NOT NULL DEFAULT now(),
  webhook_id        text,          -- the Standard Webhooks "webhook-id" header, when signed
  call_id           uuid REFERENCES calls (id),
  provider_call_id  text,
  provider_status   text,
  verdict           text NOT NULL,
  reason            text,          -- why it was rejected or ignored, in words
  body              text,          -- the raw body, cut to 4 KiB

  CONSTRAINT callbacks_verdict_known CHECK (
    verdict IN ('applied', 'duplicate', 'already_final', 'unknown_call', 'rejected'))
);

COMMENT ON TABLE callbacks IS 'Provider callbacks received and what was done with each.';

-- A webhook-id is applied once. Only authenticated deliveries count: a forged request must
-- not be able to burn a real webhook-id in advance.
CREATE UNIQUE INDEX callbacks_applied_webhook_id ON callbacks (webhook_id) WHERE verdict = 'applied';
CREATE INDEX callbacks_call_idx ON callbacks (call_id, received_at);
CREATE INDEX callbacks_received_idx ON callbacks (received_at);
