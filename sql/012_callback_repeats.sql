-- A callback delivered again (a replay, or the provider's own retry) is counted on the row of
-- its first delivery, never stored again: 15 replays of one captured callback used to leave 15
-- rows of up to 4 KiB each, and an API-key callback, which has no webhook-id, could be replayed
-- without end. Each stored delivery has a key (src/store/callbacks.ts, DeliveryKeys): a report that
-- changed a call is stored under its webhook-id, so any later delivery of that id is a repeat;
-- any other under its webhook-id and the hash of its body, so only the same message again is
-- (a provider may correct a body it sent malformed, under the same id). An API-key callback is
-- known by the SHA-256 of its body alone. One row per key.

ALTER TABLE callbacks
  -- See above; NULL for status look-ups, and for rows stored before this migration that
  -- changed no call.
  ADD COLUMN dedupe_key text,
  -- Deliveries of the same key after this one, and when the last came.
  ADD COLUMN repeats integer NOT NULL DEFAULT 0,
  ADD COLUMN last_repeat_at timestamptz;

UPDATE callbacks SET dedupe_key = webhook_id WHERE webhook_id IS NOT NULL AND verdict IN ('applied', 'corrected');

-- The 'duplicate' rows stored so far fold into the row they repeated.
WITH folded AS (
  SELECT webhook_id, count(*)::int AS n, max(received_at) AS last_at
  FROM callbacks WHERE verdict = 'duplicate' AND webhook_id IS NOT NULL
  GROUP BY webhook_id),
counted AS (
  UPDATE callbacks c SET repeats = f.n, last_repeat_at = f.last_at
  FROM folded f WHERE c.dedupe_key = f.webhook_id)
DELETE FROM callbacks c USING folded f
WHERE c.verdict = 'duplicate' AND c.webhook_id = f.webhook_id
  AND EXISTS (SELECT 1 FROM callbacks a WHERE a.dedupe_key = f.webhook_id);

CREATE UNIQUE INDEX callbacks_dedupe_key ON callbacks (dedupe_key);
DROP INDEX callbacks_applied_webhook_id;
