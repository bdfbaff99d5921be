-- Shape relay_queue for the delivery loop's hot statements (claim, markSent, ack), so each is
-- a short index scan and as few index entries as possible are rewritten per envelope:
-- - claim reads a device's oldest unclaimed envelopes: a partial index of unclaimed rows in
--   enqueue order lets it stop after `limit` rows instead of sorting the device's backlog;
-- - ack finds a session's claims (a few hundred at most) and filters them by sequence, so
--   last_sequence need not be indexed and markSent's update can stay on its heap page (HOT);
-- - a lower fillfactor leaves room on each page for those updated row versions.
CREATE INDEX relay_queue_unclaimed_idx ON relay_queue (device_id, envelope_id)
  WHERE claimed_by IS NULL;

DROP INDEX relay_queue_claim_idx;
CREATE INDEX relay_queue_claimed_idx ON relay_queue (claimed_by, device_id)
  WHERE claimed_by IS NOT NULL;

ALTER TABLE relay_queue SET (fillfactor = 50);
