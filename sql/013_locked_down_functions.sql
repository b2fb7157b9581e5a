-- Our functions run with a fixed search_path, so no object that another role creates in a
-- schema earlier on a session's path (a table, or an overload of a built-in function) can
-- stand in for what they mean; none is executable by PUBLIC. And the people who operate the
-- service get a role of their own, orchestrator_operator: it reads every table and view of
-- ours and files cancels and retries (sql/011), and can change nothing else. Grant it to their
-- login roles: GRANT orchestrator_operator TO alice;

ALTER FUNCTION count_inserted_calls() SET search_path = pg_catalog, public;
ALTER FUNCTION count_updated_calls() SET search_path = pg_catalog, public;
ALTER FUNCTION count_deleted_calls() SET search_path = pg_catalog, public;
ALTER FUNCTION count_truncated_calls() SET search_path = pg_catalog, public;
ALTER FUNCTION fold_call_status_changes() SET search_path = pg_catalog, public;
REVOKE ALL ON FUNCTION count_inserted_calls(), count_updated_calls(), count_deleted_calls(), count_truncated_calls(),
  fold_call_status_changes() FROM PUBLIC;

-- Roles belong to the whole server: the role is made once, by the first database migrated with
-- the right to make roles. Where the service's own role has none, an administrator makes it
-- (CREATE ROLE orchestrator_operator NOLOGIN) and runs the three GRANTs below.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'orchestrator_operator') THEN
    IF (SELECT rolsuper OR rolcreaterole FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
      CREATE ROLE orchestrator_operator NOLOGIN;
    ELSE
      RAISE NOTICE 'role orchestrator_operator does not exist, and % may not create it: an administrator creates it and grants it as sql/013_locked_down_functions.sql does', current_user;
      RETURN;
    END IF;
  END IF;
  GRANT SELECT ON ALL TABLES IN SCHEMA public TO orchestrator_operator;
  GRANT INSERT ON public.call_actions TO orchestrator_operator;
  GRANT EXECUTE ON FUNCTION public.request_cancel(uuid), public.request_retry(uuid, timestamptz) TO orchestrator_operator;
END $$;
