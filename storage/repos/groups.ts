/**
 * Groups (`chat_group`, `group_member`) with a membership audit trail
 * (`group_membership_event`): every add, removal and role change is recorded in the same
 * transaction as the change itself.
 *
 * Roles: one `owner` per group (set at creation, never granted later: a request for `owner`
 * becomes `admin`), then `admin` and `member`. The owner's row cannot be changed or removed.
 */
import type { Db, Queryable } from "../db.ts";
import { Conflict, InvalidValue, NotFound, TransitionNotAllowed } from "../errors.ts";
import { decodeCursor, pageLimit, toPage } from "../pagination.ts";
import type {
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
): Promise<void> {
  await q.query(
    `INSERT INTO group_membership_event (group_id, device_id, action, role, actor)
     VALUES ($1, $2, $3, $4, $5)`,
    [groupId, deviceId, action, role, actor],
  );
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
    v.id("device id", deviceId);
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
        await writeEvent(q, groupId, deviceId, existing ? "role-changed" : "added", wanted, actor);
        return toMember(res.rows[0]);
      });
    } catch (err) {
      throw translate(err, "group member", deviceId);
    }
  }

  /** Remove a member; false when it was not one. The owner cannot be removed. */
  async removeMember(groupId: string, deviceId: string, actor: string): Promise<boolean> {
    v.id("group id", groupId);
    v.id("device id", deviceId);
    v.actor(actor);
    return await this.db.transaction(async (q) => {
      const res = await q.query<{ role: GroupRole }>(
        `DELETE FROM group_member WHERE group_id = $1 AND device_id = $2 AND role <> 'owner'
         RETURNING role`,
        [groupId, deviceId],
      );
      if (res.rowCount === 0) {
        const owner = await q.query(
          `SELECT 1 FROM group_member WHERE group_id = $1 AND device_id = $2`,
          [groupId, deviceId],
        );
        if (owner.rowCount > 0) {
          throw new Conflict(
            `device ${JSON.stringify(deviceId)} owns group ${JSON.stringify(groupId)} ` +
              `and cannot be removed`,
          );
        }
        return false;
      }
      await writeEvent(q, groupId, deviceId, "removed", res.rows[0].role, actor);
      return true;
    });
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
    const res = await this.db.query<{ role: GroupRole }>(
      `SELECT role FROM group_member WHERE group_id = $1 AND device_id = $2`,
      [v.id("group id", groupId), v.id("device id", deviceId)],
    );
    return res.rows[0]?.role ?? null;
  }

  /** Every group a device belongs to. */
  async groupsOf(deviceId: string): Promise<GroupMember[]> {
    const res = await this.db.query<MemberRow>(
      `SELECT group_id, device_id, role, joined_at FROM group_member WHERE device_id = $1
       ORDER BY group_id`,
      [v.id("device id", deviceId)],
    );
    return res.rows.map(toMember);
  }

  /** Membership events of a group, newest first. */
  async auditTrail(groupId: string, page: PageRequest): Promise<Page<MembershipEvent>> {
    const limit = pageLimit(page.limit);
    const after = decodeCursor(page.cursor, ["int"]);
    const res = await this.db.query<EventRow>(
      `SELECT id, group_id, device_id, action, role, actor, recorded_at
       FROM group_membership_event
       WHERE group_id = $1 AND ($2::int8 IS NULL OR id < $2)
       ORDER BY id DESC
       LIMIT $3`,
      [v.id("group id", groupId), after?.[0] ?? null, limit + 1],
    );
    return toPage(res.rows, limit, toEvent, (r) => [String(r.id)]);
  }
}
