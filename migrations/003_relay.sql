-- Relay queue bookkeeping for at-least-once delivery: the recipient, the channel, when it was
-- enqueued, which session holds it (claimed), how often it was handed out, and the recipient
-- sequence it was last sent under (what the recipient's ACK names).

ALTER TABLE relay_queue
  ADD COLUMN device_id text,
  ADD COLUMN channel_id bigint NOT NULL DEFAULT 0,
  ADD COLUMN enqueued_at timestamptz NOT NULL DEFAULT now(),
  ADD COLUMN attempts integer NOT NULL DEFAULT 0,
  ADD COLUMN claimed_by text,
  ADD COLUMN claimed_at timestamptz,
  ADD COLUMN last_sequence bigint;

-- Rows written by the original schema name their recipient only in channel_key.
UPDATE relay_queue SET device_id = substr(channel_key, length('inbox:') + 1)
  WHERE device_id IS NULL;
ALTER TABLE relay_queue ALTER COLUMN device_id SET NOT NULL;

-- FIFO claim: a device's envelopes in enqueue order.
CREATE INDEX relay_queue_device_idx ON relay_queue (device_id, envelope_id);
-- ACK and requeue by session: only claimed rows are indexed, so this stays small.
CREATE INDEX relay_queue_claim_idx ON relay_queue (claimed_by, last_sequence)
  WHERE claimed_by IS NOT NULL;
-- Purge of expired envelopes.
CREATE INDEX relay_queue_expires_idx ON relay_queue (expires_at);
