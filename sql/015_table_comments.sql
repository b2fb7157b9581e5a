-- The README's sections moved to docs/ (issue 20): the table comments that pointed at them
-- point at the documents now, for databases made before.
COMMENT ON TABLE calls IS 'Outbound call requests and their lifecycle; see docs/operations.md, "Schema".';
COMMENT ON TABLE call_dials IS 'One row per dial (provider call) of a call; see docs/calling-policy.md.';

-- One meaning for each word (docs/dispatch.md): MAX_ATTEMPTS bounds the requests of one dial,
-- `attempts` counts the requests of a call over all its dials.
COMMENT ON COLUMN calls.attempts IS 'requests sent to the provider for this call, over all its dials; fences every answer (a late answer to a replaced request changes nothing)';
COMMENT ON COLUMN calls.dial_requests IS 'requests sent for the current dial; MAX_ATTEMPTS bounds it';

-- The provider's report of a call is called a report everywhere now (it was a "word").
COMMENT ON VIEW calls_failed_last_hour IS
  'Calls that ended FAILED or EXPIRED in the last hour, with why (reason: last_error), the provider''s report and the '
  'outcome of their last dial. Group by reason for the causes: SELECT reason, count(*) FROM calls_failed_last_hour GROUP BY 1.';
