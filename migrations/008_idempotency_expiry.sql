-- Idempotency keys that expire: a claim holds (scope, key) until expires_at, after which the key
-- may be claimed again (federation replay protection shared by every node on the database).
-- Rows written before this file keep the original meaning (claimed for good): 'infinity'.

ALTER TABLE idempotency
  ADD COLUMN expires_at timestamptz NOT NULL DEFAULT 'infinity';

-- purgeExpired: a range scan of the expired claims.
CREATE INDEX idempotency_expires_idx ON idempotency (expires_at);
