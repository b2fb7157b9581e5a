-- A batch's calls still open, found without reading the ended ones (src/store/batches.ts,
-- completeBatches): every call that ends pins one of them, from a random id on.
CREATE INDEX calls_batch_open_idx ON calls (batch_id, id) WHERE batch_id IS NOT NULL AND status IN ('PENDING', 'IN_PROGRESS');
