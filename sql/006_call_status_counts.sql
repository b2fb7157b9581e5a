-- Calls by status, cheap to read at any size (GET /metrics, the status page): a count(*) GROUP
-- BY status reads the whole table (about 90 ms at a million rows). Every statement that adds,
-- removes or changes the status of calls appends what it changed to call_status_changes, in
-- its own transaction: appends never wait for one another, so no counter row becomes a place
-- where every writer queues (as one row per status would, and as even sharded rows do once a
-- transaction holds one while it waits for something else). Workers fold the changes into
-- call_status_counts every sweep; a reader adds the two, so it reads a handful of rows.

CREATE TABLE call_status_counts (
  status  call_status PRIMARY KEY,
  calls   bigint NOT NULL
);
COMMENT ON TABLE call_status_counts IS 'Calls by status, as of the last fold; add call_status_changes for now (view call_counts).';

CREATE TABLE call_status_changes (
  id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  status  call_status NOT NULL,
  delta   bigint NOT NULL
);
COMMENT ON TABLE call_status_changes IS 'Changes to call_status_counts not folded in yet (fold_call_status_changes()).';

CREATE VIEW call_counts AS
  SELECT status, sum(calls)::bigint AS calls
  FROM (SELECT status, calls FROM call_status_counts
        UNION ALL
        SELECT status, delta FROM call_status_changes) c
  GROUP BY status;
COMMENT ON VIEW call_counts IS 'Calls by status, exact, without reading the calls table.';

-- One row per status a statement changed: statement triggers see all its rows at once.
CREATE FUNCTION count_inserted_calls() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO call_status_changes (status, delta) SELECT status, count(*) FROM new_rows GROUP BY status ORDER BY status;
  RETURN NULL;
END $$;

CREATE FUNCTION count_updated_calls() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO call_status_changes (status, delta)
  SELECT status, sum(delta) FROM (
    SELECT status, -1 AS delta FROM old_rows
    UNION ALL
    SELECT status, 1 FROM new_rows) c
  GROUP BY status HAVING sum(delta) <> 0 ORDER BY status;
  RETURN NULL;
END $$;

CREATE FUNCTION count_deleted_calls() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO call_status_changes (status, delta) SELECT status, -count(*) FROM old_rows GROUP BY status ORDER BY status;
  RETURN NULL;
END $$;

CREATE FUNCTION count_truncated_calls() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM call_status_changes;
  DELETE FROM call_status_counts;
  RETURN NULL;
END $$;

-- Folds the changes in; concurrent folds never count a change twice (the second finds the rows
-- the first deleted gone). Returns how many changes it folded.
CREATE FUNCTION fold_call_status_changes() RETURNS bigint LANGUAGE sql AS $$
  WITH moved AS (DELETE FROM call_status_changes RETURNING status, delta),
  sums AS (SELECT status, sum(delta) AS delta, count(*) AS n FROM moved GROUP BY status),
  folded AS (
    INSERT INTO call_status_counts AS c (status, calls)
    SELECT status, delta FROM sums ORDER BY status
    ON CONFLICT (status) DO UPDATE SET calls = c.calls + EXCLUDED.calls)
  SELECT coalesce(sum(n), 0)::bigint FROM sums
$$;

-- Start from the calls already there; nobody writes calls while this runs.
LOCK TABLE calls IN SHARE ROW EXCLUSIVE MODE;
INSERT INTO call_status_counts (status, calls) SELECT status, count(*) FROM calls GROUP BY status;

CREATE TRIGGER calls_count_inserted AFTER INSERT ON calls
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION count_inserted_calls();
CREATE TRIGGER calls_count_updated AFTER UPDATE ON calls
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION count_updated_calls();
CREATE TRIGGER calls_count_deleted AFTER DELETE ON calls
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION count_deleted_calls();
CREATE TRIGGER calls_count_truncated AFTER TRUNCATE ON calls
  FOR EACH STATEMENT EXECUTE FUNCTION count_truncated_calls();
