-- Federation peers gain a creation time and a status check; the durable outbox holds signed
-- events until the peer accepts them, retrying with backoff.

ALTER TABLE federation_peer
  ADD COLUMN created_at timestamptz NOT NULL DEFAULT now(),
  ADD CONSTRAINT federation_peer_status_check CHECK (status IN ('active', 'pending', 'blocked'));

CREATE TABLE federation_outbox (
  id              bigserial PRIMARY KEY,
  event_id        text NOT NULL,
  peer_domain     text NOT NULL,
  endpoint        text NOT NULL,
  body            jsonb NOT NULL,
  attempts        integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  last_error      text,
  last_error_at   timestamptz,
  delivered_at    timestamptz,
  created_at      timestamptz NOT NULL DEFAULT now(),
  UNIQUE (event_id, peer_domain)
);

-- The delivery loop's query: undelivered entries that are due.
CREATE INDEX federation_outbox_due_idx ON federation_outbox (next_attempt_at, id)
  WHERE delivered_at IS NULL;
CREATE INDEX federation_outbox_peer_idx ON federation_outbox (peer_domain)
  WHERE delivered_at IS NULL;
