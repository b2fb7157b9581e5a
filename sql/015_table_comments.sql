-- The README's sections moved to docs/ (issue 20): the table comments that pointed at them
-- point at the documents now, for databases made before.
COMMENT ON TABLE calls IS 'Outbound call requests and their lifecycle; see docs/operations.md, "Schema".';
COMMENT ON TABLE call_dials IS 'One row per dial (provider call) of a call; see docs/calling-policy.md.';
