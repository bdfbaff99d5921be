/**
 * Groups (`chat_group`, `group_member`) with a membership audit trail
 * (`group_membership_event`): every add, removal and role change is recorded in the same
 * transaction as the change itself.
 *
 * Roles: `owner` (one or more: co-owners), `admin` and `member`. `addMember` is the plain
 * insert GROUP_CREATE uses (a request for `owner` becomes `admin`, an owner's row is left
 * alone); `setRole`, `removeMember` and `transferOwnership` apply the role rules of
 * storage/group_roles.ts, so a group never loses its last owner. Every mutation locks the
 * group row first, so two concurrent changes cannot both remove "the other" owner.
 */
import type { Db, Queryable } from "../db.ts";
import { Conflict, InvalidValue, NotFound, NotPermitted, TransitionNotAllowed } from "../errors.ts";
import { type Actor, decideRemoval, decideRole, type Decision } from "../group_roles.ts";
import { decodeCursor, pageLimit, toPage } from "../pagination.ts";
import type {
  AuditNote,
  Group,
  GroupMember,
  GroupRepo,
  GroupRole,
  MembershipEvent,
  Page,
  PageRequest,
} from "../types.ts";
import { translate } from "./rows.ts";
import * as v from "./validate.ts";
import { insertAudit } from "./audit.ts";

interface GroupRow {
  group_id: string;
  owner_device: string;
  relay: boolean;
  created_at: Date;
  member_count: string;
}

interface MemberRow {
  group_id: string;
  device_id: string;
  role: GroupRole;
  joined_at: Date;
}

interface EventRow {
  id: string;
  group_id: string;
  device_id: string;
  action: MembershipEvent["action"];
  role: GroupRole | null;
  previous_role: GroupRole | null;
  actor: string;
  recorded_at: Date;
}

const GROUP_SELECT = `SELECT g.group_id, g.owner_device, g.relay, g.created_at,
  (SELECT count(*) FROM group_member m WHERE m.group_id = g.group_id) AS member_count
  FROM chat_group g`;

function toGroup(r: GroupRow): Group {
  return {
    id: r.group_id,
    ownerDeviceId: r.owner_device,
    relay: r.relay,
    createdAt: r.created_at,
    memberCount: Number(r.member_count),
  };
}

function toMember(r: MemberRow): GroupMember {
  return { groupId: r.group_id, deviceId: r.device_id, role: r.role, joinedAt: r.joined_at };
}

function toEvent(r: EventRow): MembershipEvent {
  return {
    id: String(r.id),
    groupId: r.group_id,
    deviceId: r.device_id,
    action: r.action,
    role: r.role,
    previousRole: r.previous_role ?? null,
    actor: r.actor,
    recordedAt: r.recorded_at,
  };
}

async function writeEvent(
  q: Queryable,
  groupId: string,
  deviceId: string,
  action: MembershipEvent["action"],
  role: GroupRole | null,
  actor: string,
  previousRole: GroupRole | null = null,
): Promise<void> {
  await q.query(
    `INSERT INTO group_membership_event (group_id, device_id, action, role, actor, previous_role)
     VALUES ($1, $2, $3, $4, $5, $6)`,
    [groupId, deviceId, action, role, actor, previousRole],
  );
}

/** Locks the group row; NotFound when there is no such group. Returns its primary owner. */
async function lockGroup(q: Queryable, groupId: string): Promise<string> {
  const g = await q.query<{ owner_device: string }>(
    `SELECT owner_device FROM chat_group WHERE group_id = $1 FOR UPDATE`,
    [groupId],
  );
  if (g.rowCount === 0) throw new NotFound("group", groupId);
  return g.rows[0].owner_device;
}

async function roleIn(q: Queryable, groupId: string, deviceId: string): Promise<GroupRole | null> {
  const r = await q.query<{ role: GroupRole }>(
    `SELECT role FROM group_member WHERE group_id = $1 AND device_id = $2`,
    [groupId, deviceId],
  );
  return r.rows[0]?.role ?? null;
}

async function ownerCount(q: Queryable, groupId: string): Promise<number> {
  const r = await q.query<{ n: string }>(
    `SELECT count(*) AS n FROM group_member WHERE group_id = $1 AND role = 'owner'`,
    [groupId],
  );
  return Number(r.rows[0].n);
}

/**
 * The role a device holds in a group: its own row's, or its user's (`@<user id>` on the roster,
 * for an active device of that user), the higher of the two.
 */
const DEVICE_ROLE_SQL = `SELECT role FROM group_member
   WHERE group_id = $1 AND (device_id = $2 OR device_id = (
     SELECT '@' || user_id FROM user_device WHERE device_id = $2 AND status = 'active'))
   ORDER BY CASE role WHEN 'owner' THEN 0 WHEN 'admin' THEN 1 ELSE 2 END LIMIT 1`;

async function deviceRoleIn(
  q: Queryable,
  groupId: string,
  deviceId: string,
): Promise<GroupRole | null> {
  const r = await q.query<{ role: GroupRole }>(DEVICE_ROLE_SQL, [groupId, deviceId]);
  return r.rows[0]?.role ?? null;
}

/** The acting side: an operator (no `by`), or the role of the device `by`. */
async function actingAs(
  q: Queryable,
  groupId: string,
  by: string | undefined,
): Promise<Actor | null> {
  return by === undefined ? "operator" : await deviceRoleIn(q, groupId, by);
}

function enforce(d: Decision, groupId: string, deviceId: string): GroupRole {
  if (d.ok) return d.role;
  if (d.kind === "last-owner") {
    throw new Conflict(
      `device ${JSON.stringify(deviceId)} owns group ${JSON.stringify(groupId)}: ${d.reason}`,
    );
  }
  throw new NotPermitted(`group ${JSON.stringify(groupId)}: ${d.reason}`);
}

/** When the primary owner stops owning the group, the longest-standing remaining owner takes it. */
async function settlePrimaryOwner(q: Queryable, groupId: string, primary: string): Promise<void> {
  if ((await roleIn(q, groupId, primary)) === "owner") return;
  await q.query(
    `UPDATE chat_group SET owner_device = o.device_id
     FROM (SELECT device_id FROM group_member WHERE group_id = $1 AND role = 'owner'
           ORDER BY joined_at, device_id LIMIT 1) o
     WHERE chat_group.group_id = $1`,
    [groupId],
  );
}

const MEMBER_RETURNING = "RETURNING group_id, device_id, role, joined_at";

/** Set a role inside a transaction that holds the group lock. */
async function setRoleTx(
  q: Queryable,
  groupId: string,
  deviceId: string,
  requested: GroupRole,
  actor: string,
  by: string | undefined,
): Promise<{ member: GroupMember; previous: GroupRole | null }> {
  const current = await roleIn(q, groupId, deviceId);
  const role = enforce(
    decideRole({
      by: await actingAs(q, groupId, by),
      current,
      requested,
      owners: await ownerCount(q, groupId),
      self: by === deviceId,
    }),
    groupId,
    deviceId,
  );
  if (current === role) {
    const same = await q.query<MemberRow>(
      `SELECT group_id, device_id, role, joined_at FROM group_member
       WHERE group_id = $1 AND device_id = $2`,
      [groupId, deviceId],
    );
    return { member: toMember(same.rows[0]), previous: current };
  }
  const res = await q.query<MemberRow>(
    `INSERT INTO group_member (group_id, device_id, role) VALUES ($1, $2, $3)
     ON CONFLICT (group_id, device_id) DO UPDATE SET role = EXCLUDED.role ${MEMBER_RETURNING}`,
    [groupId, deviceId, role],
  );
  await writeEvent(q, groupId, deviceId, current ? "role-changed" : "added", role, actor, current);
  return { member: toMember(res.rows[0]), previous: current };
}

export class PgGroupRepo implements GroupRepo {
  constructor(private readonly db: Db) {}

  /** Create a group; the owner device becomes its first member with role `owner`. */
  async create(
    input: { id?: string; ownerDeviceId: string; relay: boolean },
    actor: string,
  ): Promise<Group> {
    const id = input.id === undefined ? crypto.randomUUID() : v.newId("group id", input.id);
    const owner = v.id("owner device id", input.ownerDeviceId);
    if (typeof input.relay !== "boolean") {
      throw new InvalidValue("relay", input.relay, "true or false");
    }
    v.actor(actor);
    try {
      return await this.db.transaction(async (q) => {
        const res = await q.query(
          `INSERT INTO chat_group (group_id, owner_device, relay) VALUES ($1, $2, $3)
           ON CONFLICT (group_id) DO NOTHING`,
          [id, owner, input.relay],
        );
        if (res.rowCount === 0) throw new Conflict(`group ${JSON.stringify(id)} already exists`);
        await q.query(
          `INSERT INTO group_member (group_id, device_id, role) VALUES ($1, $2, 'owner')`,
          [id, owner],
        );
        await writeEvent(q, id, owner, "added", "owner", actor);
        const g = await q.query<GroupRow>(`${GROUP_SELECT} WHERE g.group_id = $1`, [id]);
        return toGroup(g.rows[0]);
      });
    } catch (err) {
      throw translate(err, "group", id);
    }
  }

  async get(id: string): Promise<Group | null> {
    const res = await this.db.query<GroupRow>(`${GROUP_SELECT} WHERE g.group_id = $1`, [
      v.id("group id", id),
    ]);
    return res.rows[0] ? toGroup(res.rows[0]) : null;
  }

  /** Groups in id order; `search` is a case-insensitive prefix of the group id. */
  async list(filter: { search?: string } & PageRequest): Promise<Page<Group>> {
    const limit = pageLimit(filter.limit);
    const after = decodeCursor(filter.cursor, ["text"]);
    const pattern = filter.search ? v.prefixPattern("search", filter.search) : null;
    const res = await this.db.query<GroupRow>(
      `${GROUP_SELECT}
       WHERE ($1::text IS NULL OR lower(g.group_id) LIKE $1)
         AND ($2::text IS NULL OR g.group_id > $2)
       ORDER BY g.group_id
       LIMIT $3`,
      [pattern, after?.[0] ?? null, limit + 1],
    );
    return toPage(res.rows, limit, toGroup, (r) => [r.group_id]);
  }

  /** Add a member or change its role ("owner" is lowered to "admin"); audited. */
  async addMember(
    groupId: string,
    deviceId: string,
    role: GroupRole,
    actor: string,
  ): Promise<GroupMember> {
    v.id("group id", groupId);
    v.member("member", deviceId);
    const wanted: GroupRole = v.groupRole(role) === "owner" ? "admin" : role;
    v.actor(actor);
    try {
      return await this.db.transaction(async (q) => {
        const g = await q.query(`SELECT 1 FROM chat_group WHERE group_id = $1 FOR UPDATE`, [
          groupId,
        ]);
        if (g.rowCount === 0) throw new NotFound("group", groupId);
        const cur = await q.query<MemberRow>(
          `SELECT group_id, device_id, role, joined_at FROM group_member
           WHERE group_id = $1 AND device_id = $2`,
          [groupId, deviceId],
        );
        const existing = cur.rows[0];
        if (existing?.role === wanted) return toMember(existing);
        if (existing?.role === "owner") {
          throw new TransitionNotAllowed(`owner ${JSON.stringify(deviceId)}`, "owner", wanted);
        }
        const res = await q.query<MemberRow>(
          `INSERT INTO group_member (group_id, device_id, role) VALUES ($1, $2, $3)
           ON CONFLICT (group_id, device_id) DO UPDATE SET role = EXCLUDED.role
           RETURNING group_id, device_id, role, joined_at`,
          [groupId, deviceId, wanted],
        );
        await writeEvent(
          q,
          groupId,
          deviceId,
          existing ? "role-changed" : "added",
          wanted,
          actor,
          existing?.role ?? null,
        );
        return toMember(res.rows[0]);
      });
    } catch (err) {
      throw translate(err, "group member", deviceId);
    }
  }

  /** Remove a member; false when it was not one. See GroupRepo.removeMember for the rules. */
  async removeMember(
    groupId: string,
    deviceId: string,
    actor: string,
    opts: { by?: string; successor?: string; audit?: AuditNote } = {},
  ): Promise<boolean> {
    v.id("group id", groupId);
    v.member("member", deviceId);
    v.actor(actor);
    if (opts.by !== undefined) v.id("acting device id", opts.by);
    if (opts.successor !== undefined) {
      v.id("successor device id", opts.successor);
      if (opts.successor === deviceId) {
        throw new InvalidValue("successor", opts.successor, "a device other than the one leaving");
      }
    }
    try {
      return await this.db.transaction(async (q) => {
        let primary: string;
        try {
          primary = await lockGroup(q, groupId);
        } catch (err) {
          if (err instanceof NotFound) return false;
          throw err;
        }
        const current = await roleIn(q, groupId, deviceId);
        if (current === null) return false;
        const owners = await ownerCount(q, groupId);
        enforce(
          decideRemoval({
            by: await actingAs(q, groupId, opts.by),
            current,
            owners,
            self: opts.by === deviceId,
            successor: opts.successor,
          }),
          groupId,
          deviceId,
        );
        if (current === "owner" && opts.successor !== undefined) {
          // The successor is made an owner by the leaving owner (who may always do that).
          await setRoleTx(
            q,
            groupId,
            opts.successor,
            "owner",
            actor,
            opts.by === undefined ? undefined : deviceId,
          );
        }
        await q.query(`DELETE FROM group_member WHERE group_id = $1 AND device_id = $2`, [
          groupId,
          deviceId,
        ]);
        await writeEvent(q, groupId, deviceId, "removed", current, actor);
        if (current === "owner") await settlePrimaryOwner(q, groupId, primary);
        if (opts.audit) {
          await insertAudit(q, {
            ...opts.audit,
            target: `group:${groupId}`,
            before: { deviceId, role: current },
            after: null,
          });
        }
        return true;
      });
    } catch (err) {
      throw translate(err, "group member", deviceId);
    }
  }

  /** Set a role under the role rules; see GroupRepo.setRole. */
  async setRole(
    groupId: string,
    deviceId: string,
    role: GroupRole,
    actor: string,
    opts: { by?: string; audit?: AuditNote } = {},
  ): Promise<{ member: GroupMember; previous: GroupRole | null }> {
    v.id("group id", groupId);
    v.member("member", deviceId);
    v.groupRole(role);
    v.actor(actor);
    if (opts.by !== undefined) v.id("acting device id", opts.by);
    try {
      return await this.db.transaction(async (q) => {
        const primary = await lockGroup(q, groupId);
        const result = await setRoleTx(q, groupId, deviceId, role, actor, opts.by);
        if (result.previous === "owner") await settlePrimaryOwner(q, groupId, primary);
        if (opts.audit && result.previous !== result.member.role) {
          await insertAudit(q, {
            ...opts.audit,
            target: `group:${groupId}`,
            before: { deviceId, role: result.previous },
            after: { deviceId, role: result.member.role },
          });
        }
        return result;
      });
    } catch (err) {
      throw translate(err, "group member", deviceId);
    }
  }

  /** Hand ownership from `from` to `to`; see GroupRepo.transferOwnership. */
  async transferOwnership(
    groupId: string,
    from: string,
    to: string,
    actor: string,
    opts: { by?: string; leave?: boolean; audit?: AuditNote } = {},
  ): Promise<void> {
    v.id("group id", groupId);
    v.id("device id", from);
    v.id("successor device id", to);
    v.actor(actor);
    if (opts.by !== undefined) v.id("acting device id", opts.by);
    if (from === to) throw new InvalidValue("successor", to, "a device other than the owner");
    try {
      await this.db.transaction(async (q) => {
        const primary = await lockGroup(q, groupId);
        const fromRole = await roleIn(q, groupId, from);
        if (fromRole !== "owner") {
          throw new TransitionNotAllowed(
            `device ${JSON.stringify(from)}`,
            fromRole ?? "not a member",
            "former owner",
          );
        }
        await setRoleTx(q, groupId, to, "owner", actor, opts.by);
        if (opts.leave) {
          const by = await actingAs(q, groupId, opts.by);
          enforce(
            decideRemoval({
              by,
              current: "owner",
              owners: await ownerCount(q, groupId),
              self: opts.by === from,
            }),
            groupId,
            from,
          );
          await q.query(`DELETE FROM group_member WHERE group_id = $1 AND device_id = $2`, [
            groupId,
            from,
          ]);
          await writeEvent(q, groupId, from, "removed", "owner", actor);
        } else {
          await setRoleTx(q, groupId, from, "admin", actor, opts.by);
        }
        await settlePrimaryOwner(q, groupId, primary);
        if (opts.audit) {
          await insertAudit(q, {
            ...opts.audit,
            target: `group:${groupId}`,
            before: { owner: from },
            after: { owner: to, previousOwner: opts.leave ? null : "admin" },
          });
        }
      });
    } catch (err) {
      throw translate(err, "group member", to);
    }
  }

  /** Members, owner first, then in the order they joined. */
  async roster(groupId: string): Promise<GroupMember[]> {
    const res = await this.db.query<MemberRow>(
      `SELECT group_id, device_id, role, joined_at FROM group_member WHERE group_id = $1
       ORDER BY (role = 'owner') DESC, joined_at, device_id`,
      [v.id("group id", groupId)],
    );
    return res.rows.map(toMember);
  }

  async role(groupId: string, deviceId: string): Promise<GroupRole | null> {
    v.id("group id", groupId);
    if (v.member("device id", deviceId).startsWith("@")) {
      return await roleIn(this.db, groupId, deviceId);
    }
    return await deviceRoleIn(this.db, groupId, deviceId);
  }

  /** See GroupRepo.groupsOf: the device's own rows, then (active) its user's. */
  async groupsOf(deviceId: string): Promise<GroupMember[]> {
    const res = await this.db.query<MemberRow>(
      `SELECT group_id, device_id, role, joined_at FROM group_member
       WHERE device_id = $1 OR device_id = (
         SELECT '@' || user_id FROM user_device WHERE device_id = $1 AND status = 'active')
       ORDER BY group_id, device_id LIKE '@%', device_id`,
      [v.id("device id", deviceId)],
    );
    return res.rows.map(toMember);
  }

  /** Membership events of a group, newest first. */
  async auditTrail(groupId: string, page: PageRequest): Promise<Page<MembershipEvent>> {
    const limit = pageLimit(page.limit);
    const after = decodeCursor(page.cursor, ["int"]);
    const res = await this.db.query<EventRow>(
      `SELECT id, group_id, device_id, action, role, previous_role, actor, recorded_at
       FROM group_membership_event
       WHERE group_id = $1 AND ($2::int8 IS NULL OR id < $2)
       ORDER BY id DESC
       LIMIT $3`,
      [v.id("group id", groupId), after?.[0] ?? null, limit + 1],
    );
    return toPage(res.rows, limit, toEvent, (r) => [String(r.id)]);
  }
}
