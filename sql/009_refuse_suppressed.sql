-- A POST /calls sends its do-not-call check, both inserts and its COMMIT together, without
-- waiting for any answer in between. So the check cannot be a read whose answer decides: it
-- fails the transaction instead, and the inserts and COMMIT behind it roll back with it.
-- SQLSTATE DNC01 (not a PostgreSQL code) is how the service tells this refusal from any other
-- error; the API answers it with 422 phone_suppressed.
CREATE FUNCTION refuse_suppressed(p_phone text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM suppressions WHERE phone = p_phone) THEN
    RAISE EXCEPTION '% is on the do-not-call list', p_phone USING ERRCODE = 'DNC01';
  END IF;
END
$$;
