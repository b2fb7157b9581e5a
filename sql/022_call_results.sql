-- What a call's dial ended with, in the provider's words and for the people who ordered it
-- (docs/providers.md): the provider's own end reason (Vapi's endedReason, Retell's
-- disconnection_reason), the transcript, a link to the recording, a summary and the provider's
-- analysis. Filled in by the final report, and by a later one that brings what the first did not
-- (Retell's call_analyzed, Vapi's end-of-call-report after a status-update). The generic
-- contract sends none of it.
ALTER TABLE call_dials
  ADD COLUMN end_reason    text,
  ADD COLUMN transcript    text,
  ADD COLUMN recording_url text CHECK (recording_url ~ '^https?://'),
  ADD COLUMN summary       text,
  ADD COLUMN analysis      jsonb;
COMMENT ON COLUMN call_dials.end_reason IS 'The provider''s own word for how the dial ended (Vapi endedReason, Retell disconnection_reason); provider_status on calls is it mapped.';
COMMENT ON COLUMN call_dials.transcript IS 'The conversation as the provider transcribed it (at most 256 KiB kept).';
COMMENT ON COLUMN call_dials.recording_url IS 'Where the provider keeps the recording (http or https only).';
COMMENT ON COLUMN call_dials.summary IS 'The provider''s summary of the call.';
COMMENT ON COLUMN call_dials.analysis IS 'The provider''s analysis of the call, as it sent it (Vapi analysis, Retell call_analysis).';
