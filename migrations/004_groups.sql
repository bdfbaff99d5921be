-- Group roles and a membership audit trail (who added, removed or changed whom, and when).

ALTER TABLE group_member
  ADD CONSTRAINT group_member_role_check CHECK (role IN ('owner', 'admin', 'member'));

CREATE TABLE group_membership_event (
  id          bigserial PRIMARY KEY,
  group_id    text NOT NULL,
  device_id   text NOT NULL,
  action      text NOT NULL CHECK (action IN ('added', 'removed', 'role-changed')),
  role        text CHECK (role IS NULL OR role IN ('owner', 'admin', 'member')),
  actor       text NOT NULL,
  recorded_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX group_membership_event_group_idx ON group_membership_event (group_id, id DESC);
CREATE INDEX group_member_device_idx ON group_member (device_id);
CREATE INDEX chat_group_created_idx ON chat_group (created_at DESC, group_id DESC);
