-- The console's "Waiting for approval" queue, its dashboard count and `devices --awaiting`:
-- devices that wait for an operator, whether never approved (status 'pending') or active with
-- a new key awaiting approval (a rotation without auto-approve). The status index cannot serve
-- the second kind, so without this the queue would read every device. Partial: it holds only
-- the few rows that wait, newest first, in the listing's keyset order.
CREATE INDEX user_device_awaiting_idx ON user_device (created_at DESC, device_id DESC)
  WHERE status = 'pending' OR pending_public_key IS NOT NULL;
