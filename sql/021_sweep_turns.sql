-- The workers' safety sweeps (src/services/dispatch/sweeps.ts) run once per poll interval
-- between all of them, not once per worker: each worker asks for the turn at every poll, and
-- the one whose UPDATE moves last_at on sweeps. Eight workers used to sweep eight times as
-- often as one, eight short transactions each, for the same work (docs/scaling.md).
CREATE TABLE sweep_turns (
  only_row  boolean PRIMARY KEY DEFAULT true CHECK (only_row),
  last_at   timestamptz NOT NULL DEFAULT '-infinity',
  worker_id integer                -- the worker that took the last turn (workers.id)
);
INSERT INTO sweep_turns DEFAULT VALUES;
COMMENT ON TABLE sweep_turns IS 'When a worker last took its turn to run the safety sweeps, and which worker.';

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'orchestrator_operator') THEN
    GRANT SELECT ON public.sweep_turns TO orchestrator_operator;
  END IF;
END $$;
