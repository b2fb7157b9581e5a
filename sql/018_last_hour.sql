-- The status page's chart of the last hour, per minute (src/store/status.ts): calls created,
-- dials started, calls completed and failed, and slots in use (dials started and not yet ended).
-- Each is read by time through one of these, so the chart costs the last hour's rows, never the
-- whole table's. calls_created_idx exists already.
CREATE INDEX calls_ended_idx ON calls (ended_at) WHERE ended_at IS NOT NULL;
CREATE INDEX call_dials_started_idx ON call_dials (started_at);
CREATE INDEX call_dials_ended_idx ON call_dials (ended_at);
