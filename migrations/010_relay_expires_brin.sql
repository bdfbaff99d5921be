-- The purge of expired envelopes no longer needs a B-tree on relay_queue.expires_at.
--
-- claim changes claimed_by, an indexed column, so every claim writes a new entry into every
-- B-tree of relay_queue; the expires_at B-tree alone cost about a fifth of the delivery path
-- (claim + ack) while serving only the periodic purge. A BRIN index costs next to nothing per
-- row and still lets the purge skip page ranges whose envelopes all expire later (envelopes are
-- appended roughly in expiry order). Where ranges are not summarised yet (no autovacuum, as
-- in the embedded database) the purge reads the table, as totalDepth() already does as often.
DROP INDEX relay_queue_expires_idx;
CREATE INDEX relay_queue_expires_brin ON relay_queue USING brin (expires_at)
  WITH (autosummarize = on);
