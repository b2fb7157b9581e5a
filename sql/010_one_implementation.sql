-- Every state change has one implementation, in TypeScript (src/services/), and no SQL
-- of ours writes pg-boss's tables. 008 re-implemented cancelling and retrying in PL/pgSQL
-- (cancel_call, retry_call), with the call resource, the event outbox and pg-boss's job insert
-- copied alongside (call_resource, write_event, emit_call_event, enqueue_job): a second copy
-- of the logic that drifted from the first and wrote pgboss.job by hand. The API
-- (POST /calls/:id/cancel, POST /calls/:id/retry) and bin/orchestrator calls cancel|retry
-- replace them. 009's refuse_suppressed() served a create that sent its statements without
-- waiting for their answers; a create now reads the do-not-call list and decides. The views of
-- 008 stay: they only read.

-- (IF EXISTS: a database made since 008 was rewritten never had the first seven.)
DROP FUNCTION IF EXISTS retry_call(uuid, timestamptz);
DROP FUNCTION IF EXISTS cancel_call(uuid);
DROP FUNCTION IF EXISTS emit_call_event(text, calls);
DROP FUNCTION IF EXISTS write_event(text, uuid, uuid, jsonb);
DROP FUNCTION IF EXISTS enqueue_job(text, jsonb, text, text);
DROP FUNCTION IF EXISTS call_resource(calls);
DROP FUNCTION IF EXISTS iso_utc(timestamptz);
DROP FUNCTION refuse_suppressed(text);
