-- Frame analytics: hourly rollups of counts (no content), added to by every node's flush.
-- frame_type is the frame's type name or '*' (delivered/expired/redelivered come from the relay
-- queue, which keeps no frame type apart from the payload); conversation is direct, group or
-- '*'; peer_domain is '' for this domain, else the remote domain the copies went to.

CREATE TABLE frame_rollup (
  bucket       timestamptz NOT NULL,
  frame_type   text NOT NULL,
  conversation text NOT NULL,
  peer_domain  text NOT NULL,
  sent         bigint NOT NULL DEFAULT 0,
  delivered    bigint NOT NULL DEFAULT 0,
  queued       bigint NOT NULL DEFAULT 0,
  expired      bigint NOT NULL DEFAULT 0,
  redelivered  bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (bucket, frame_type, conversation, peer_domain)
);

-- Delivery latency (enqueue → recipient ACK) per hour as histogram bucket counts: slot i counts
-- latencies up to the i-th bound of server/analytics.ts LATENCY_BOUNDS_MS (the last, above all).
CREATE TABLE frame_latency_rollup (
  bucket timestamptz NOT NULL,
  slot   integer NOT NULL CHECK (slot >= 0),
  count  bigint NOT NULL,
  sum_ms double precision NOT NULL DEFAULT 0,
  PRIMARY KEY (bucket, slot)
);
