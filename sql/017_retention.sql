-- Retention (CALLBACK_RETENTION, EVENT_RETENTION): workers delete callbacks and sent events
-- older than these, oldest first and a few hundred at a time (src/store/retention.ts). Events
-- are found by age through this index; callbacks have callbacks_received_idx already.
CREATE INDEX events_created_idx ON events (created_at);
