-- inbox_offset across domains. On the receiving side, a queued frame from a peer keeps the
-- origin's event id, so that the recipient's ACK can be reported back to the origin as a signed
-- offset event. On the origin, an outbox event the peer reported as acknowledged gets
-- remote_acked_at, and remote_inbox_offset keeps, per remote device and channel, the last event
-- the peer reported and how many were reported.

ALTER TABLE relay_queue ADD COLUMN origin_event text;

ALTER TABLE federation_outbox ADD COLUMN remote_acked_at timestamptz;

CREATE TABLE remote_inbox_offset (
  peer_domain    text NOT NULL,
  entity_id      text NOT NULL,
  channel_id     bigint NOT NULL,
  last_event_id  text NOT NULL,
  acked_frames   bigint NOT NULL DEFAULT 0,
  acked_at       timestamptz NOT NULL,
  updated_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (peer_domain, entity_id, channel_id)
);
