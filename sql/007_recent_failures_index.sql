-- The status page (GET /) lists the calls that failed in the last hour, newest first, every
-- second while a page is open. No index reaches FAILED calls by when they ended
-- (calls_status_created_idx orders them by creation, and a call may fail a day after it was
-- created), so without this the query reads every failed call there ever was.
CREATE INDEX calls_failed_ended_idx ON calls (ended_at DESC) WHERE status = 'FAILED';
