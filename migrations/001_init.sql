-- CommuCat initial schema: the nine tables of the original server plus idempotency keys.
-- Later files add what this project needs on top (statuses, relay bookkeeping, audit, outbox).

CREATE TABLE app_user (
  user_id      text PRIMARY KEY,
  handle       text NOT NULL UNIQUE,
  display_name text,
  avatar_url   text,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE user_device (
  device_id  text PRIMARY KEY,
  user_id    text NOT NULL REFERENCES app_user (user_id),
  public_key bytea NOT NULL,
  status     text NOT NULL DEFAULT 'active',
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE session (
  session_id      text PRIMARY KEY,
  user_id         text NOT NULL REFERENCES app_user (user_id),
  device_id       text NOT NULL REFERENCES user_device (device_id),
  tls_fingerprint text,
  created_at      timestamptz NOT NULL DEFAULT now(),
  ttl_seconds     bigint NOT NULL
);

-- envelope_id is a bigserial: it is both the identity and the enqueue order (FIFO per device).
CREATE TABLE relay_queue (
  envelope_id bigserial PRIMARY KEY,
  channel_key text NOT NULL, -- 'inbox:{device_id}'
  payload     bytea NOT NULL,
  expires_at  timestamptz NOT NULL
);

CREATE TABLE device_key_event (
  event_id    text PRIMARY KEY,
  device_id   text NOT NULL REFERENCES user_device (device_id),
  public_key  bytea NOT NULL,
  recorded_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE chat_group (
  group_id     text PRIMARY KEY,
  owner_device text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  relay        boolean NOT NULL DEFAULT true
);

-- device_id carries no foreign key: members may be remote devices (device@remote.example).
CREATE TABLE group_member (
  group_id  text NOT NULL REFERENCES chat_group (group_id) ON DELETE CASCADE,
  device_id text NOT NULL,
  role      text NOT NULL DEFAULT 'member',
  joined_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (group_id, device_id)
);

CREATE TABLE federation_peer (
  domain       text PRIMARY KEY,
  endpoint     text NOT NULL,
  public_key   bytea NOT NULL,
  status       text NOT NULL DEFAULT 'pending',
  last_seen_at timestamptz
);

CREATE TABLE inbox_offset (
  entity_id        text NOT NULL,
  channel_id       bigint NOT NULL,
  last_envelope_id bigint NOT NULL,
  updated_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (entity_id, channel_id)
);

CREATE TABLE idempotency (
  key        text NOT NULL,
  scope      text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (scope, key)
);
