/**
 * Devices (`user_device`) and their key audit trail (`device_key_event`).
 *
 * Every change of a device's key or status writes its key event inside the same transaction as
 * the change, so a failed audit write rolls the change back: no device ever becomes active, or
 * changes key, without a trace in the journal.
 *
 * Lifecycle: pending → active (approve) | revoked (reject); active → revoked (revoke);
 * revoked is final. An active device may carry a pending new key (rotation awaiting approval):
 * approve swaps it in, reject drops it.
 */
import type { Db, Queryable } from "../db.ts";
import {
  Conflict,
  InvalidValue,
  NotFound,
  PairingRefused,
  TransitionNotAllowed,
} from "../errors.ts";
import { decodeCursor, pageLimit, toPage } from "../pagination.ts";
import type {
  AuditNote,
  Device,
  DeviceKeyEvent,
  DeviceListFilter,
  DeviceRepo,
  DeviceStatus,
  DeviceWithUser,
  HandshakeRegistration,
  KeyEventKind,
  Page,
  PageRequest,
  PairingRefusal,
  User,
} from "../types.ts";
import {
  DEVICE_COLUMNS,
  type DeviceRow,
  KEY_EVENT_COLUMNS,
  type KeyEventRow,
  sameBytes,
  toDevice,
  toDeviceWithUser,
  toKeyEvent,
  toUser,
  translate,
  tsFromKey,
  tsKey,
} from "./rows.ts";
import { insertUser, userByHandle, userById, validateNewUser } from "./users.ts";
import * as v from "./validate.ts";
import { insertAudit } from "./audit.ts";
import { bytesToHex } from "../../protocol/hex.ts";
import { countDevicesOf, deviceLimitOf, redeemPairing } from "./pairing.ts";

type Change = { device: Device; event: DeviceKeyEvent };

/**
 * The common handshake — a known, active device presenting its registered key — in one SELECT:
 * nothing is written in that case, so it needs no transaction and no row lock. Anything else
 * (unknown, pending, revoked, a new key) takes the locking transaction.
 */
const ACTIVE_WITH_KEY_SQL = `
  SELECT ${DEVICE_COLUMNS.split(", ").map((c) => "d." + c).join(", ")},
         u.handle, u.display_name, u.avatar_url,
         u.created_at AS user_created_at, u.updated_at AS user_updated_at
  FROM user_device d JOIN app_user u ON u.user_id = d.user_id
  WHERE d.device_id = $1 AND d.status = 'active' AND d.public_key = $2`;

type ActiveWithKeyRow = DeviceRow & {
  handle: string;
  display_name: string | null;
  avatar_url: string | null;
  user_created_at: Date;
  user_updated_at: Date;
};

/**
 * A device waits for an operator when it was never approved, or when it asks for a new key
 * (rotation without auto-approve). Matches the predicate of `user_device_awaiting_idx` (012);
 * keep the two the same, or Postgres stops using the index.
 */
const AWAITING_SQL = "d.status = 'pending' OR d.pending_public_key IS NOT NULL";

/** The `awaitingApproval` filter: absent or a boolean. */
function awaitingFilter(value: unknown): boolean {
  if (value === undefined || value === null) return false;
  if (typeof value !== "boolean") {
    throw new InvalidValue("awaiting approval", value, "true or false");
  }
  return value;
}

/** Append a key event; part of the caller's transaction. */
async function writeEvent(
  q: Queryable,
  deviceId: string,
  publicKey: Uint8Array,
  kind: KeyEventKind,
  actor: string,
): Promise<DeviceKeyEvent> {
  const res = await q.query<KeyEventRow>(
    `INSERT INTO device_key_event (event_id, device_id, public_key, kind, actor)
     VALUES ($1, $2, $3, $4, $5)
     RETURNING ${KEY_EVENT_COLUMNS}`,
    [crypto.randomUUID(), deviceId, publicKey, kind, actor],
  );
  return toKeyEvent(res.rows[0]);
}

async function lockDevice(q: Queryable, id: string): Promise<Device | null> {
  const res = await q.query<DeviceRow>(
    `SELECT ${DEVICE_COLUMNS} FROM user_device WHERE device_id = $1 FOR UPDATE`,
    [id],
  );
  return res.rows[0] ? toDevice(res.rows[0]) : null;
}

async function setDevice(
  q: Queryable,
  id: string,
  status: DeviceStatus,
  publicKey: Uint8Array,
  pendingKey: Uint8Array | null,
): Promise<Device> {
  const res = await q.query<DeviceRow>(
    `UPDATE user_device
     SET status = $2, public_key = $3, pending_public_key = $4, updated_at = now()
     WHERE device_id = $1
     RETURNING ${DEVICE_COLUMNS}`,
    [id, status, publicKey, pendingKey],
  );
  return toDevice(res.rows[0]);
}

/** Insert a device unless the id exists; null means another transaction got there first. */
async function insertDevice(
  q: Queryable,
  id: string,
  userId: string,
  publicKey: Uint8Array,
  status: DeviceStatus,
): Promise<Device | null> {
  const res = await q.query<DeviceRow>(
    `INSERT INTO user_device (device_id, user_id, public_key, status)
     VALUES ($1, $2, $3, $4)
     ON CONFLICT (device_id) DO NOTHING
     RETURNING ${DEVICE_COLUMNS}`,
    [id, userId, publicKey, status],
  );
  return res.rows[0] ? toDevice(res.rows[0]) : null;
}

/** A registration, or a refusal to commit before it is thrown (PairingRefused). */
type Resolution =
  | HandshakeRegistration
  | { outcome: "refused"; refusal: PairingRefusal; detail: string; userId: string | null };

type HelloUser = { id?: string; handle?: string; displayName?: string; avatarUrl?: string };

/**
 * The user a new device belongs to: found by `id` (or created with that id when a handle is
 * given too), else found by `handle`, else created with `handle` and a fresh id.
 */
/**
 * The user a new device names: an existing one (by id, or by a taken handle), or a new one
 * created here. `created` says which (ccp1.md §4.4: auto-approval covers new users only).
 */
async function resolveUser(
  q: Queryable,
  hello: HelloUser,
): Promise<{ user: User; created: boolean }> {
  if (hello.id !== undefined) {
    const id = v.id("user id", hello.id);
    const found = await userById(q, id);
    if (found) return { user: found, created: false };
    if (hello.handle === undefined) throw new NotFound("user", id);
  }
  if (hello.handle === undefined) {
    throw new InvalidValue("user", hello, "a user id or a handle");
  }
  const fields = validateNewUser({
    id: hello.id,
    handle: hello.handle,
    displayName: hello.displayName ?? null,
    avatarUrl: hello.avatarUrl ?? null,
  });
  if (hello.id === undefined) {
    const existing = await userByHandle(q, fields.handle);
    if (existing) return { user: existing, created: false };
  }
  const created = await insertUser(q, fields);
  if (created) return { user: created, created: true };
  // A concurrent handshake created it first, or the handle belongs to someone else.
  const winner = hello.id !== undefined
    ? await userById(q, fields.id)
    : await userByHandle(q, fields.handle);
  if (winner) return { user: winner, created: false };
  throw new Conflict(`handle ${JSON.stringify(fields.handle)} is already taken by another user`);
}

/**
 * A HELLO with a pairing code: a new device id joins the named existing user, active at once,
 * when the code is one of the user's open codes; the key event and the audit trail name the
 * device that asked for the code. Anything else is refused with nothing registered.
 */
async function pairDevice(
  q: Queryable,
  input: {
    id: string;
    key: Uint8Array;
    existing: Device | null;
    hello: HelloUser;
    typed: string;
    defaultLimit: number;
  },
): Promise<Resolution> {
  const { id, key, hello } = input;
  let user: User | null = null;
  if (hello.id !== undefined) user = await userById(q, v.id("user id", hello.id));
  else if (hello.handle !== undefined) user = await userByHandle(q, v.handle(hello.handle));
  if (user === null) {
    return {
      outcome: "refused",
      refusal: "not-pairable",
      userId: null,
      detail: "pairing joins an existing user: name it in HELLO user.handle or user.id",
    };
  }
  if (input.existing !== null) {
    return {
      outcome: "refused",
      refusal: "not-pairable",
      userId: user.id,
      detail: `device ${id} exists already; pairing registers a new device id`,
    };
  }
  const redeemed = await redeemPairing(q, {
    user,
    deviceId: id,
    typed: input.typed,
    defaultLimit: input.defaultLimit,
  });
  if (!redeemed.ok) {
    return {
      outcome: "refused",
      refusal: redeemed.refusal,
      detail: redeemed.detail,
      userId: user.id,
    };
  }
  const inserted = await insertDevice(q, id, user.id, key, "active");
  if (!inserted) throw new Conflict(`device ${JSON.stringify(id)} is being registered`);
  await q.query(`UPDATE user_device SET paired_by = $2 WHERE device_id = $1`, [
    id,
    redeemed.issuedBy,
  ]);
  const event = await writeEvent(q, id, key, "registered", `pairing:${redeemed.issuedBy}`);
  await insertAudit(q, {
    actor: `device:${redeemed.issuedBy}`,
    action: "device.pair",
    target: `device:${id}`,
    before: null,
    after: { ...auditView(inserted), pairedBy: redeemed.issuedBy, code: redeemed.codeId },
  });
  return { outcome: "registered", device: inserted, user, event };
}

/** What the operator audit log records about a device (keys as hex). */
export function auditView(d: Device): Record<string, unknown> {
  return {
    status: d.status,
    publicKey: bytesToHex(d.publicKey),
    pendingPublicKey: d.pendingPublicKey ? bytesToHex(d.pendingPublicKey) : null,
  };
}

export class PgDeviceRepo implements DeviceRepo {
  constructor(private readonly db: Db) {}

  private async change(
    id: string,
    fn: (q: Queryable, d: Device) => Promise<Change>,
    audit?: AuditNote,
  ) {
    v.id("device id", id);
    try {
      return await this.db.transaction(async (q) => {
        const device = await lockDevice(q, id);
        if (!device) throw new NotFound("device", id);
        const before = auditView(device);
        const change = await fn(q, device);
        if (audit) {
          await insertAudit(q, {
            ...audit,
            target: `device:${id}`,
            before,
            after: auditView(change.device),
          });
        }
        return change;
      });
    } catch (err) {
      throw translate(err, "device", id);
    }
  }

  /** Register a new device as active (event "registered") or pending (event "pending"). */
  async register(
    input: { id: string; userId: string; publicKey: Uint8Array; status: "active" | "pending" },
    actor: string,
    audit?: AuditNote,
  ): Promise<Change> {
    const id = v.newId("device id", input.id);
    const userId = v.id("user id", input.userId);
    const key = v.key32("public key", input.publicKey);
    if (input.status !== "active" && input.status !== "pending") {
      throw new InvalidValue("device status", input.status, "active or pending");
    }
    v.actor(actor);
    try {
      return await this.db.transaction(async (q) => {
        if (!(await userById(q, userId))) throw new NotFound("user", userId);
        const device = await insertDevice(q, id, userId, key, input.status);
        if (!device) throw new Conflict(`device ${JSON.stringify(id)} already exists`);
        const kind = input.status === "active" ? "registered" : "pending";
        const event = await writeEvent(q, id, key, kind, actor);
        if (audit) {
          await insertAudit(q, {
            ...audit,
            target: `device:${id}`,
            before: null,
            after: auditView(device),
          });
        }
        return { device, event };
      });
    } catch (err) {
      throw translate(err, "device", id);
    }
  }

  async get(id: string): Promise<Device | null> {
    const res = await this.db.query<DeviceRow>(
      `SELECT ${DEVICE_COLUMNS} FROM user_device WHERE device_id = $1`,
      [v.id("device id", id)],
    );
    return res.rows[0] ? toDevice(res.rows[0]) : null;
  }

  /** pending → active, or an active device's pending key becomes its key. */
  approve(id: string, actor: string, audit?: AuditNote): Promise<Change> {
    v.actor(actor);
    return this.change(id, async (q, d) => {
      if (d.status === "pending") {
        const device = await setDevice(q, id, "active", d.publicKey, null);
        return { device, event: await writeEvent(q, id, d.publicKey, "approved", actor) };
      }
      if (d.status === "active" && d.pendingPublicKey) {
        const device = await setDevice(q, id, "active", d.pendingPublicKey, null);
        return { device, event: await writeEvent(q, id, d.pendingPublicKey, "approved", actor) };
      }
      throw new TransitionNotAllowed(`device ${JSON.stringify(id)}`, d.status, "active");
    }, audit);
  }

  /** pending → revoked, or an active device's pending key is dropped. */
  reject(id: string, actor: string, audit?: AuditNote): Promise<Change> {
    v.actor(actor);
    return this.change(id, async (q, d) => {
      if (d.status === "pending") {
        const device = await setDevice(q, id, "revoked", d.publicKey, null);
        return { device, event: await writeEvent(q, id, d.publicKey, "rejected", actor) };
      }
      if (d.status === "active" && d.pendingPublicKey) {
        const device = await setDevice(q, id, "active", d.publicKey, null);
        return { device, event: await writeEvent(q, id, d.pendingPublicKey, "rejected", actor) };
      }
      throw new TransitionNotAllowed(`device ${JSON.stringify(id)}`, d.status, "rejected");
    }, audit);
  }

  /** pending | active → revoked (final). */
  revoke(id: string, actor: string, audit?: AuditNote): Promise<Change> {
    v.actor(actor);
    return this.change(id, async (q, d) => {
      if (d.status === "revoked") {
        throw new TransitionNotAllowed(`device ${JSON.stringify(id)}`, "revoked", "revoked");
      }
      const device = await setDevice(q, id, "revoked", d.publicKey, null);
      return { device, event: await writeEvent(q, id, d.publicKey, "revoked", actor) };
    }, audit);
  }

  /** Replace an active device's key (drops any pending key); event "rotated". */
  rotateKey(id: string, publicKey: Uint8Array, actor: string, audit?: AuditNote): Promise<Change> {
    const key = v.key32("public key", publicKey);
    v.actor(actor);
    return this.change(id, async (q, d) => {
      if (d.status !== "active") {
        throw new TransitionNotAllowed(`device ${JSON.stringify(id)}`, d.status, "rotated");
      }
      const device = await setDevice(q, id, "active", key, null);
      return { device, event: await writeEvent(q, id, key, "rotated", actor) };
    }, audit);
  }

  /** ccp1.md §3, atomically; see docs/STORAGE.md for the full table. */
  async resolveForHandshake(input: {
    deviceId: string;
    publicKey: Uint8Array;
    user: HelloUser;
    autoApprove: boolean;
    pairingCode?: string;
    maxDevicesPerUser?: number;
    beforeChange?: () => Promise<void>;
  }): Promise<HandshakeRegistration> {
    const id = v.newId("device id", input.deviceId);
    const key = v.key32("client static key", input.publicKey);
    if (typeof input.user !== "object" || input.user === null) {
      throw new InvalidValue("user", input.user, "an object with an id or a handle");
    }
    const actor = "handshake";
    try {
      const known = await this.db.query<ActiveWithKeyRow>(ACTIVE_WITH_KEY_SQL, [id, key], {
        name: "device_handshake_active",
      });
      const row = known.rows[0];
      if (row) {
        const user = toUser({
          user_id: row.user_id,
          handle: row.handle,
          display_name: row.display_name,
          avatar_url: row.avatar_url,
          created_at: row.user_created_at,
          updated_at: row.user_updated_at,
        });
        return { outcome: "accepted", device: toDevice(row), user };
      }
      if (input.beforeChange) await input.beforeChange();
      const outcome = await this.db.transaction(async (q): Promise<Resolution> => {
        let device = await lockDevice(q, id);
        const defaultLimit = input.maxDevicesPerUser ?? Number.MAX_SAFE_INTEGER;
        if (input.pairingCode !== undefined) {
          return await pairDevice(q, {
            id,
            key,
            existing: device,
            hello: input.user,
            typed: input.pairingCode,
            defaultLimit,
          });
        }
        if (!device) {
          const { user, created } = await resolveUser(q, input.user);
          if (!created) {
            const limit = (await deviceLimitOf(q, user.id)) ?? defaultLimit;
            const count = await countDevicesOf(q, user.id);
            if (count >= limit) {
              return {
                outcome: "refused",
                refusal: "device-limit",
                userId: user.id,
                detail:
                  `user ${user.handle} has ${count} devices; at most ${limit} ([limits] max_devices_per_user, or the user's own limit set by an operator)`,
              };
            }
          }
          // Auto-approval covers a new device of a new user only: a new device naming an
          // existing user waits until a device of that user pairs it or an operator approves.
          const approve = input.autoApprove && created;
          const status = approve ? "active" : "pending";
          const inserted = await insertDevice(q, id, user.id, key, status);
          if (inserted) {
            const event = await writeEvent(q, id, key, approve ? "registered" : "pending", actor);
            return approve
              ? { outcome: "registered", device: inserted, user, event }
              : { outcome: "pending", device: inserted, user, event };
          }
          // A concurrent handshake registered it first: continue as a known device.
          device = await lockDevice(q, id);
          if (!device) throw new Conflict(`device ${JSON.stringify(id)} is being registered`);
        }
        const user = (await userById(q, device.userId))!;
        if (device.status === "revoked") return { outcome: "revoked", device, user };
        if (device.status === "pending") {
          if (sameBytes(device.publicKey, key)) {
            return { outcome: "pending", device, user, event: null };
          }
          // Never approved: the latest requested key is the one awaiting approval.
          const updated = await setDevice(q, id, "pending", key, null);
          const event = await writeEvent(q, id, key, "pending", actor);
          return { outcome: "pending", device: updated, user, event };
        }
        if (sameBytes(device.publicKey, key)) return { outcome: "accepted", device, user };
        // A known device presenting another key is never approved by auto-approval (whoever
        // knew the id could take the device over): the owner rotates from a session of the old
        // key, or an operator approves the waiting key.
        if (sameBytes(device.pendingPublicKey, key)) {
          return { outcome: "pending", device, user, event: null };
        }
        const updated = await setDevice(q, id, "active", device.publicKey, key);
        const event = await writeEvent(q, id, key, "rotation-pending", actor);
        return { outcome: "pending", device: updated, user, event };
      });
      // Committed first, so that a refused pairing's wrong attempt stays counted.
      if (outcome.outcome === "refused") {
        throw new PairingRefused(outcome.refusal, outcome.detail, outcome.userId);
      }
      return outcome;
    } catch (err) {
      throw translate(err, "device", id);
    }
  }

  /** Record that the device was just seen (connected). */
  async revokedAmong(ids: string[]): Promise<string[]> {
    if (!Array.isArray(ids)) throw new InvalidValue("device ids", ids, "an array of device ids");
    if (ids.length === 0) return [];
    const res = await this.db.query<{ device_id: string }>(
      `SELECT device_id FROM user_device WHERE device_id = ANY($1::text[]) AND status = 'revoked'`,
      [ids.map((d) => v.id("device id", d))],
      { name: "commucat_devices_revoked_among" },
    );
    return res.rows.map((r) => r.device_id);
  }

  async touch(id: string): Promise<void> {
    await this.db.query(`UPDATE user_device SET last_seen_at = now() WHERE device_id = $1`, [
      v.id("device id", id),
    ]);
  }

  /**
   * Newest first; filters: status, owner, case-insensitive prefix of device id or handle, and
   * `awaitingApproval` (pending, or active with a pending key; served by a partial index).
   */
  async list(filter: DeviceListFilter & PageRequest): Promise<Page<DeviceWithUser>> {
    const limit = pageLimit(filter.limit);
    const status = filter.status === undefined ? null : v.deviceStatus(filter.status);
    const userId = filter.userId === undefined ? null : v.id("user id", filter.userId);
    const pattern = filter.search ? v.prefixPattern("search", filter.search) : null;
    const awaiting = awaitingFilter(filter.awaitingApproval);
    const after = decodeCursor(filter.cursor, ["int", "text"]);
    // The awaiting condition is added as literal text (no parameter in it), spelled exactly like
    // the partial index's predicate, so the planner can use that index whatever the plan kind.
    const res = await this.db.query<DeviceRow & { handle: string; k: string }>(
      `SELECT ${DEVICE_COLUMNS.split(", ").map((c) => "d." + c).join(", ")}, u.handle,
              ${tsKey("d.created_at")} AS k
       FROM user_device d JOIN app_user u ON u.user_id = d.user_id
       WHERE ($1::text IS NULL OR d.status = $1)
         AND ($2::text IS NULL OR d.user_id = $2)
         AND ($3::text IS NULL OR lower(d.device_id) LIKE $3 OR lower(u.handle) LIKE $3)
         AND ($4::int8 IS NULL OR (d.created_at, d.device_id) < (${tsFromKey("$4")}, $5::text))
         ${awaiting ? `AND (${AWAITING_SQL})` : ""}
       ORDER BY d.created_at DESC, d.device_id DESC
       LIMIT $6`,
      [status, userId, pattern, after?.[0] ?? null, after?.[1] ?? null, limit + 1],
    );
    return toPage(res.rows, limit, toDeviceWithUser, (r) => [r.k, r.device_id]);
  }

  async countByStatus(): Promise<Record<DeviceStatus, number>> {
    const res = await this.db.query<{ status: DeviceStatus; n: string }>(
      `SELECT status, count(*) AS n FROM user_device GROUP BY status`,
    );
    const counts: Record<DeviceStatus, number> = { pending: 0, active: 0, revoked: 0 };
    for (const r of res.rows) counts[r.status] = Number(r.n);
    return counts;
  }

  /** Devices waiting for an operator (pending, or active with a pending key). */
  async countAwaitingApproval(): Promise<number> {
    const res = await this.db.query<{ n: string }>(
      `SELECT count(*) AS n FROM user_device d WHERE ${AWAITING_SQL}`,
    );
    return Number(res.rows[0].n);
  }
}
