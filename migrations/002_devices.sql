-- Device lifecycle: pending | active | revoked, a pending new key awaiting approval, and key
-- events that say what happened and who caused it. Sessions gain what the handshake knows.

ALTER TABLE user_device
  ADD COLUMN pending_public_key bytea,
  ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now(),
  ADD COLUMN last_seen_at timestamptz,
  ADD CONSTRAINT user_device_status_check CHECK (status IN ('pending', 'active', 'revoked')),
  ADD CONSTRAINT user_device_public_key_length CHECK (octet_length(public_key) = 32),
  ADD CONSTRAINT user_device_pending_key_length
    CHECK (pending_public_key IS NULL OR octet_length(pending_public_key) = 32);

ALTER TABLE device_key_event
  ADD COLUMN kind text NOT NULL DEFAULT 'registered',
  ADD COLUMN actor text NOT NULL DEFAULT 'unknown',
  ADD CONSTRAINT device_key_event_kind_check CHECK (kind IN (
    'registered', 'pending', 'approved', 'rejected', 'revoked', 'rotated', 'rotation-pending'
  ));

ALTER TABLE session
  ADD COLUMN pattern text NOT NULL DEFAULT 'XK',
  ADD COLUMN protocol_version integer NOT NULL DEFAULT 1,
  ADD COLUMN remote_addr text,
  ADD COLUMN node_id text NOT NULL DEFAULT '',
  ADD CONSTRAINT session_pattern_check CHECK (pattern IN ('XK', 'IK'));

-- Console device list: newest first, filtered by status or by user; keyset on (created_at, id).
CREATE INDEX user_device_created_idx ON user_device (created_at DESC, device_id DESC);
CREATE INDEX user_device_status_idx ON user_device (status, created_at DESC, device_id DESC);
CREATE INDEX user_device_user_idx ON user_device (user_id, created_at DESC, device_id DESC);
-- Case-insensitive prefix search (LIKE 'abc%') on device ids and handles; works on both engines.
CREATE INDEX user_device_id_search_idx ON user_device (lower(device_id) text_pattern_ops);
CREATE INDEX app_user_handle_search_idx ON app_user (lower(handle) text_pattern_ops);

-- Key events by device and time (console trail, CLI export), and by time alone.
CREATE INDEX device_key_event_device_idx ON device_key_event (device_id, recorded_at, event_id);
CREATE INDEX device_key_event_recorded_idx ON device_key_event (recorded_at DESC, event_id DESC);

-- Sessions: recent first, and per device.
CREATE INDEX session_created_idx ON session (created_at DESC, session_id DESC);
CREATE INDEX session_device_idx ON session (device_id, created_at DESC, session_id DESC);
