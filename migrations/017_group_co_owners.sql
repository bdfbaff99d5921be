-- Co-owners: a group may have several owners (group_member rows with role 'owner'). The
-- membership audit trail records the role a member had before each change, so a promotion, a
-- demotion and a transfer of ownership read as such. chat_group.owner_device stays the group's
-- primary owner (the creator, or the successor once the creator no longer owns it).

ALTER TABLE group_membership_event
  ADD COLUMN previous_role text
    CHECK (previous_role IS NULL OR previous_role IN ('owner', 'admin', 'member'));

CREATE INDEX group_member_owner_idx ON group_member (group_id) WHERE role = 'owner';
