/**
 * Pairing codes (`pairing_code`), who paired whom (`user_device.paired_by`) and the per-user
 * device limit (`app_user.max_devices`); docs/PROTOCOL.md "Pairing a new device".
 *
 * A code is stored as the SHA-256 of its normalized form, never as itself. Redeeming runs inside
 * the handshake's registration transaction ({@link redeemPairing}) with the user's row locked, so
 * two devices presenting one code at the same time are decided one after the other: one pairs,
 * the other finds the code used. Wrong attempts count against every open code of the named user
 * and burn it at {@link MAX_PAIRING_ATTEMPTS}.
 *
 * @module
 */
import { sha256 } from "@noble/hashes/sha2.js";
import { bytesEqual } from "../../protocol/crypto.ts";
import { newPairingCode, normalizePairingCode } from "../../protocol/pairing.ts";
import type { Db, Queryable } from "../db.ts";
import { NotFound } from "../errors.ts";
import type {
  AuditNote,
  PairingCode,
  PairingRefusal,
  PairingRepo,
  User,
  UserDevice,
} from "../types.ts";
import { insertAudit } from "./audit.ts";
import { DEVICE_COLUMNS, type DeviceRow, toDevice, translate } from "./rows.ts";
import * as v from "./validate.ts";

/** Wrong attempts after which a user's open codes are burned. */
export const MAX_PAIRING_ATTEMPTS = 5;
/** Most device limit an operator may set for one user. */
export const MAX_DEVICE_LIMIT = 10_000;
/** Codes of a user a redemption compares against (the newest). */
const CODES_COMPARED = 32;

const encoder = new TextEncoder();

const CODE_COLUMNS =
  "code_id, user_id, issued_by, code_hash, created_at, expires_at, attempts, used_at, used_by, burned_at";

interface CodeRow {
  code_id: string;
  user_id: string;
  issued_by: string;
  code_hash: Uint8Array;
  created_at: Date;
  expires_at: Date;
  attempts: number;
  used_at: Date | null;
  used_by: string | null;
  burned_at: Date | null;
}

function stateOf(r: CodeRow, now: Date): PairingCode["state"] {
  if (r.used_at !== null) return "used";
  if (r.burned_at !== null) return "burned";
  if (r.expires_at.getTime() <= now.getTime()) return "expired";
  return "open";
}

function toCode(r: CodeRow, now = new Date()): PairingCode {
  return {
    codeId: r.code_id,
    userId: r.user_id,
    issuedBy: r.issued_by,
    createdAt: r.created_at,
    expiresAt: r.expires_at,
    attempts: r.attempts,
    usedAt: r.used_at,
    usedBy: r.used_by,
    burnedAt: r.burned_at,
    state: stateOf(r, now),
  };
}

function digest(code: string): Uint8Array {
  return sha256(encoder.encode(code));
}

/** The outcome of presenting a code: the pairing device, or why not. */
export type Redemption =
  | { ok: true; issuedBy: string; codeId: string }
  | { ok: false; refusal: PairingRefusal; detail: string };

/**
 * Redeems `typed` for a new device of `user` inside the caller's transaction (which must go on
 * to insert the device on success, and commit on refusal so that attempts stay counted). Locks
 * the user's row first.
 */
export async function redeemPairing(
  q: Queryable,
  input: { user: User; deviceId: string; typed: string; defaultLimit: number },
): Promise<Redemption> {
  const { user, deviceId } = input;
  const limitRow = await q.query<{ max_devices: number | null; now: Date }>(
    `SELECT max_devices, now() AS now FROM app_user WHERE user_id = $1 FOR UPDATE`,
    [user.id],
  );
  const now = limitRow.rows[0].now;
  const code = normalizePairingCode(input.typed);
  const rows = code === null ? [] : (await q.query<CodeRow>(
    `SELECT ${CODE_COLUMNS} FROM pairing_code WHERE user_id = $1
     ORDER BY created_at DESC LIMIT ${CODES_COMPARED}`,
    [user.id],
  )).rows;
  const wanted = code === null ? null : digest(code);
  // Compare against every code (constant time per comparison; no early exit on a match).
  let match: CodeRow | null = null;
  for (const r of rows) {
    if (wanted !== null && bytesEqual(r.code_hash, wanted) && match === null) match = r;
  }
  const state = match === null ? null : stateOf(match, now);
  if (match === null || state !== "open") {
    // A wrong, reused, expired or burned code: one wrong attempt against each open code.
    const burned = await q.query<{ code_id: string; burned_at: Date | null }>(
      `UPDATE pairing_code
       SET attempts = attempts + 1,
           burned_at = CASE WHEN attempts + 1 >= $2 THEN now() ELSE burned_at END
       WHERE user_id = $1 AND used_at IS NULL AND burned_at IS NULL AND expires_at > now()
       RETURNING code_id, burned_at`,
      [user.id, MAX_PAIRING_ATTEMPTS],
    );
    const burnedNow = burned.rows.filter((r) => r.burned_at !== null).length;
    const tail = burnedNow > 0
      ? `; ${burnedNow} open code(s) of the user burned after ${MAX_PAIRING_ATTEMPTS} wrong attempts`
      : "";
    if (match === null) {
      return {
        ok: false,
        refusal: "wrong-code",
        detail: code === null
          ? `a pairing code is 8 characters of 0-9 and A-Z without I, L, O, U${tail}`
          : `the pairing code does not match an open code of user ${user.handle}${tail}`,
      };
    }
    const what = state === "used"
      ? { refusal: "used" as const, text: "was used already; ask for a new code" }
      : state === "expired"
      ? { refusal: "expired" as const, text: "expired; ask for a new code" }
      : {
        refusal: "burned" as const,
        text: `was burned after ${MAX_PAIRING_ATTEMPTS} wrong attempts; ask for a new code`,
      };
    return { ok: false, refusal: what.refusal, detail: `the pairing code ${what.text}${tail}` };
  }
  const limit = limitRow.rows[0].max_devices ?? input.defaultLimit;
  const count = await countDevicesOf(q, user.id);
  if (count >= limit) {
    return {
      ok: false,
      refusal: "device-limit",
      detail:
        `user ${user.handle} has ${count} devices; at most ${limit} ([limits] max_devices_per_user, or the user's own limit set by an operator); unlink one first`,
    };
  }
  const used = await q.query(
    `UPDATE pairing_code SET used_at = now(), used_by = $2
     WHERE code_id = $1 AND used_at IS NULL AND burned_at IS NULL`,
    [match.code_id, deviceId],
  );
  if (used.rowCount !== 1) {
    return { ok: false, refusal: "used", detail: "the pairing code was used already" };
  }
  return { ok: true, issuedBy: match.issued_by, codeId: match.code_id };
}

/** Devices a user holds that count against its limit (pending and active). */
export async function countDevicesOf(q: Queryable, userId: string): Promise<number> {
  const res = await q.query<{ n: string }>(
    `SELECT count(*) AS n FROM user_device WHERE user_id = $1 AND status <> 'revoked'`,
    [userId],
  );
  return Number(res.rows[0].n);
}

/** The user's own device limit (null: the configured default). */
export async function deviceLimitOf(q: Queryable, userId: string): Promise<number | null> {
  const res = await q.query<{ max_devices: number | null }>(
    `SELECT max_devices FROM app_user WHERE user_id = $1`,
    [userId],
  );
  if (!res.rows[0]) throw new NotFound("user", userId);
  return res.rows[0].max_devices;
}

export class PgPairingRepo implements PairingRepo {
  constructor(private readonly db: Db) {}

  async issue(input: {
    userId: string;
    deviceId: string;
    ttlSeconds: number;
    maxOpen: number;
  }): Promise<{ code: string; entry: PairingCode }> {
    const userId = v.id("user id", input.userId);
    const deviceId = v.id("device id", input.deviceId);
    const ttl = v.int("pairing code lifetime", input.ttlSeconds, 1, 86_400);
    const maxOpen = v.int("open pairing codes", input.maxOpen, 1, 100);
    try {
      return await this.db.transaction(async (q) => {
        const device = await q.query<{ status: string; user_id: string }>(
          `SELECT status, user_id FROM user_device WHERE device_id = $1 FOR UPDATE`,
          [deviceId],
        );
        const d = device.rows[0];
        if (!d || d.user_id !== userId) throw new NotFound("device", deviceId);
        // Burn the oldest open codes beyond maxOpen - 1, so this one makes maxOpen.
        await q.query(
          `UPDATE pairing_code SET burned_at = now()
           WHERE code_id IN (
             SELECT code_id FROM pairing_code
             WHERE user_id = $1 AND used_at IS NULL AND burned_at IS NULL AND expires_at > now()
             ORDER BY created_at DESC OFFSET $2)`,
          [userId, maxOpen - 1],
        );
        const code = newPairingCode();
        const res = await q.query<CodeRow>(
          `INSERT INTO pairing_code (code_id, user_id, issued_by, code_hash, expires_at)
           VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
           RETURNING ${CODE_COLUMNS}`,
          [crypto.randomUUID(), userId, deviceId, digest(code), ttl],
        );
        return { code, entry: toCode(res.rows[0]) };
      });
    } catch (err) {
      throw translate(err, "device", deviceId);
    }
  }

  async list(
    filter: { userId?: string; issuedBy?: string; usedBy?: string; limit?: number },
  ): Promise<PairingCode[]> {
    const limit = v.int("limit", filter.limit ?? 50, 1, 500);
    const res = await this.db.query<CodeRow>(
      `SELECT ${CODE_COLUMNS} FROM pairing_code
       WHERE ($1::text IS NULL OR user_id = $1)
         AND ($2::text IS NULL OR issued_by = $2)
         AND ($3::text IS NULL OR used_by = $3)
       ORDER BY created_at DESC, code_id DESC LIMIT $4`,
      [
        filter.userId === undefined ? null : v.id("user id", filter.userId),
        filter.issuedBy === undefined ? null : v.id("device id", filter.issuedBy),
        filter.usedBy === undefined ? null : v.id("device id", filter.usedBy),
        limit,
      ],
    );
    const now = new Date();
    return res.rows.map((r) => toCode(r, now));
  }

  async devicesOf(userId: string): Promise<UserDevice[]> {
    const res = await this.db.query<DeviceRow & { paired_by: string | null }>(
      `SELECT ${DEVICE_COLUMNS}, paired_by FROM user_device WHERE user_id = $1
       ORDER BY created_at, device_id LIMIT ${MAX_DEVICE_LIMIT}`,
      [v.id("user id", userId)],
    );
    return res.rows.map((r) => ({ ...toDevice(r), pairedBy: r.paired_by }));
  }

  async pairedBy(deviceId: string): Promise<string | null> {
    const res = await this.db.query<{ paired_by: string | null }>(
      `SELECT paired_by FROM user_device WHERE device_id = $1`,
      [v.id("device id", deviceId)],
    );
    return res.rows[0]?.paired_by ?? null;
  }

  countDevices(userId: string): Promise<number> {
    return countDevicesOf(this.db, v.id("user id", userId));
  }

  deviceLimit(userId: string): Promise<number | null> {
    return deviceLimitOf(this.db, v.id("user id", userId));
  }

  async setDeviceLimit(
    userId: string,
    limit: number | null,
    actor: string,
    audit?: AuditNote,
  ): Promise<void> {
    const id = v.id("user id", userId);
    const value = limit === null ? null : v.int("device limit", limit, 1, MAX_DEVICE_LIMIT);
    v.actor(actor);
    await this.db.transaction(async (q) => {
      const before = await deviceLimitOf(q, id);
      await q.query(`UPDATE app_user SET max_devices = $2, updated_at = now() WHERE user_id = $1`, [
        id,
        value,
      ]);
      if (audit) {
        await insertAudit(q, {
          ...audit,
          target: `user:${id}`,
          before: { maxDevices: before },
          after: { maxDevices: value },
        });
      }
    });
  }
}
