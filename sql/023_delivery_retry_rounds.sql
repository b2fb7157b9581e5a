-- Each event's delivery has EVENT_RETRY_LIMIT retries of its own. They were counted on the
-- delivery job, and one job carries every pending event of its call to an endpoint, so the
-- failures of a call's earlier events used up the retries of its later ones: an event could be
-- given up after its first try. The count is now the delivery's own, from `attempts`; a replay
-- gives it a fresh round, and this is where that round began.
ALTER TABLE event_deliveries ADD COLUMN attempts_before_replay integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN event_deliveries.attempts_before_replay IS
  'The attempts made before the last replay (POST /events/:id/replay): the retry limit counts attempts - attempts_before_replay.';
