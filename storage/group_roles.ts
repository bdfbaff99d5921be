/**
 * The group role rules (owners, admins, members), as pure functions the group repository
 * applies inside its transaction and the docs' rules table describes (PROTOCOL.md "Group
 * roles"). `by` is the acting member's role, or "operator" for the console and the CLI.
 *
 * - Owners are equals: any owner may promote a member or admin to co-owner, demote another
 *   owner, remove anyone, or give up ownership.
 * - Admins may add members and admins and change members ↔ admins; they cannot touch an owner,
 *   and their request to make someone an owner is lowered to admin (as GROUP_INVITE always did).
 * - Members may do nothing to others.
 * - A group always keeps at least one owner: the last owner cannot be demoted, leave or be
 *   removed unless a successor is named, who becomes an owner in the same transaction.
 * - Operators may do everything an owner may, under the same last-owner rule.
 */
import type { GroupRole } from "./types.ts";

export type Actor = GroupRole | "operator";

export type Decision =
  | { ok: true; role: GroupRole }
  | { ok: false; kind: "not-permitted" | "last-owner"; reason: string };

const refuse = (kind: "not-permitted" | "last-owner", reason: string): Decision => ({
  ok: false,
  kind,
  reason,
});

/** May `by` act on the group at all (owners, admins, operators)? */
function manager(by: Actor | null): boolean {
  return by === "owner" || by === "admin" || by === "operator";
}

/**
 * Setting a device's role (adding it when `current` is null). `self` is true when the actor
 * changes its own role; `owners` counts the group's owners now.
 */
export function decideRole(input: {
  by: Actor | null;
  current: GroupRole | null;
  requested: GroupRole;
  owners: number;
  self: boolean;
}): Decision {
  const { by, current, owners, self } = input;
  let requested = input.requested;
  if (current === "owner" && requested !== "owner") {
    if (by !== "owner" && by !== "operator") {
      return refuse("not-permitted", "only an owner may change an owner's role");
    }
    if (owners <= 1) {
      return refuse(
        "last-owner",
        "it is the group's last owner: make another member an owner first (transfer ownership)",
      );
    }
    return { ok: true, role: requested };
  }
  if (self && by !== "operator" && current !== null) {
    // Stepping down is always allowed (owners are handled above); stepping up is not.
    const rank = { member: 0, admin: 1, owner: 2 } as const;
    if (rank[requested] > rank[current]) {
      return refuse("not-permitted", `a ${current} cannot raise its own role`);
    }
    return { ok: true, role: requested };
  }
  if (!manager(by)) {
    return refuse(
      "not-permitted",
      `only an owner or an admin may change roles; the actor is ${by ?? "not a member"}`,
    );
  }
  if (requested === "owner" && by === "admin") requested = "admin";
  return { ok: true, role: requested };
}

/**
 * Removing a device (or a device leaving, `self`). A last owner needs `successor`, a device
 * other than itself, who becomes an owner.
 */
export function decideRemoval(input: {
  by: Actor | null;
  current: GroupRole;
  owners: number;
  self: boolean;
  successor?: string | null;
}): Decision {
  const { by, current, owners, self } = input;
  if (!self) {
    if (!manager(by)) {
      return refuse(
        "not-permitted",
        `only an owner or an admin may remove members; the actor is ${by ?? "not a member"}`,
      );
    }
    if (current === "owner" && by === "admin") {
      return refuse("not-permitted", "an admin cannot remove an owner");
    }
  }
  if (current === "owner" && owners <= 1 && !input.successor) {
    return refuse(
      "last-owner",
      "it is the group's last owner and cannot leave or be removed without naming another owner",
    );
  }
  return { ok: true, role: current };
}
