-- Users with several devices (docs/PROTOCOL.md "Pairing a new device"): one-time pairing codes
-- issued by an active device of a user, the device that paired each device, and an operator's
-- per-user device limit (NULL: [limits] max_devices_per_user applies).
--
-- The code itself is never stored: code_hash is the SHA-256 of its normalized form. A code is
-- open while used_at and burned_at are NULL and expires_at is in the future; wrong attempts at
-- the user's open codes count up in attempts and burn them at the bound.

CREATE TABLE pairing_code (
  code_id    text PRIMARY KEY,
  user_id    text NOT NULL REFERENCES app_user (user_id) ON DELETE CASCADE,
  issued_by  text NOT NULL REFERENCES user_device (device_id) ON DELETE CASCADE,
  code_hash  bytea NOT NULL CHECK (octet_length(code_hash) = 32),
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL,
  attempts   integer NOT NULL DEFAULT 0,
  used_at    timestamptz,
  used_by    text,
  burned_at  timestamptz
);
CREATE INDEX pairing_code_user_idx ON pairing_code (user_id, created_at DESC);

ALTER TABLE user_device ADD COLUMN paired_by text;

ALTER TABLE app_user ADD COLUMN max_devices integer
  CHECK (max_devices IS NULL OR (max_devices >= 1 AND max_devices <= 10000));
