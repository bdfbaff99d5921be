-- Dead outbox entries: an event a peer keeps refusing is given up (dead_at set) instead of being
-- retried forever. It stays in the table with its last error for operators to see; the delivery
-- loop's index covers only live entries, so dead ones cost the worker nothing.

ALTER TABLE federation_outbox
  ADD COLUMN dead_at timestamptz;

DROP INDEX federation_outbox_due_idx;
CREATE INDEX federation_outbox_due_idx ON federation_outbox (next_attempt_at, id)
  WHERE delivered_at IS NULL AND dead_at IS NULL;
