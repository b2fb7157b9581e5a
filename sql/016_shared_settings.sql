-- Settings every process reads from its own environment but that act for all of them (the
-- limits, the calling policy, the endpoint EVENT_WEBHOOK_URL configures). Each process records
-- its view when it starts; one that finds another view recorded says so, naming both, so two
-- processes configured differently are noticed rather than quietly fighting.
CREATE TABLE shared_settings (
  name    text PRIMARY KEY,
  value   jsonb NOT NULL,
  set_by  text NOT NULL,          -- host, pid and mode of the process that recorded it
  set_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE shared_settings IS 'Each shared setting as the last process to start saw it; a process that sees another value logs a warning naming both.';

-- Operators read it as they read every other table (sql/013_locked_down_functions.sql).
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'orchestrator_operator') THEN
    GRANT SELECT ON public.shared_settings TO orchestrator_operator;
  END IF;
END $$;
