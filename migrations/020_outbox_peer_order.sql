-- Each peer's events are delivered in the order they were queued: an entry is claimed only with
-- every live entry queued before it for the same peer. This index answers "is there a live entry
-- of this peer before this one" for the claim.

CREATE INDEX federation_outbox_peer_live_idx ON federation_outbox (peer_domain, id)
  WHERE delivered_at IS NULL AND dead_at IS NULL;
