-- A freed slot or a new call wakes one worker, not all (src/store/notify.ts): the NOTIFY names a
-- live worker, chosen at random among those seen within three of their own poll intervals.
-- Every worker used to wake and take the claim lock in turn, the first to claim and the rest to
-- find nothing, so more workers did less. A worker that died after it was last seen may be
-- named for a moment; the others find its slot at their next poll (WORKER_POLL_MS).
ALTER TABLE workers ADD COLUMN poll_ms integer;
COMMENT ON COLUMN workers.poll_ms IS 'Its WORKER_POLL_MS: it is taken for alive while seen within three of them.';
CREATE INDEX workers_seen_idx ON workers (last_seen_at) WHERE stopped_at IS NULL;
