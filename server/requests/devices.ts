/**
 * Server requests about a user's own devices (docs/PROTOCOL.md "Several devices of one user"):
 *
 * - `pair_code`: an active device asks for a one-time pairing code for a new device of its user.
 *   Answer `{"code": "ABCD-EFGH", "expires_at": RFC 3339, "expires_in": 300, "user": {…},
 *   "max_attempts": 5}`. The new device sends the code in its first HELLO (`pairing_code`) with
 *   its own fresh key; the server never generates or sees a private key.
 * - `devices`: the user's devices `[{device, name, status, created_at, last_seen_at, public_key,
 *   fingerprint, paired_by, current}]`, oldest first, with the user's limit and count.
 * - `unlink` `{"device": id}`: revokes another device of the same user; its connections are cut
 *   on every node (the same control event an operator's revocation publishes) and its next
 *   handshake is refused.
 *
 * Limits: pairing codes per user and per client address (`[limits] pairing_codes_per_hour`),
 * at most {@link MAX_OPEN_CODES} open codes per user (an older one is burned by a newer), each
 * open {@link PAIRING_CODE_TTL_SECONDS} s; the device limit `[limits] max_devices_per_user`.
 *
 * @module
 */
import { bytesToHex } from "../../protocol/hex.ts";
import { formatPairingCode } from "../../protocol/pairing.ts";
import { isStoredId } from "../../protocol/ids.ts";
import { INTERRUPT_TTL_SECONDS } from "../../storage/ephemeral/shared.ts";
import { MAX_PAIRING_ATTEMPTS } from "../../storage/repos/pairing.ts";
import type { Device } from "../../storage/types.ts";
import { hostOf } from "../admission.ts";
import { refused, Titles } from "../errors.ts";
import { rateLimited } from "../limits.ts";
import type { RequestContext, RequestHandler } from "./types.ts";

/** Seconds a pairing code stays open. */
export const PAIRING_CODE_TTL_SECONDS = 300;
/** Open codes one user may hold at once (a newer code burns the oldest past it). */
export const MAX_OPEN_CODES = 3;

/** The asking device, which must be active (a pending device never gets a session). */
async function activeSelf(ctx: RequestContext, op: string): Promise<Device> {
  const device = await ctx.storage.devices.get(ctx.deviceId);
  if (device === null || device.status !== "active" || device.userId !== ctx.userId) {
    throw refused(
      Titles.notPermitted,
      403,
      `${op}: device ${ctx.deviceId} is not an active device of its user`,
    );
  }
  return device;
}

/** 64 hex characters in groups of four, as the web chat shows keys. */
export function fingerprint(key: Uint8Array): string {
  return bytesToHex(key).replace(/(.{4})(?=.)/g, "$1 ");
}

/** Handles `{"op": "pair_code"}`. */
export const pairCode: RequestHandler = async (ctx, _request) => {
  await activeSelf(ctx, "pair_code");
  const host = hostOf(ctx.remoteAddr);
  for (const key of [`user:${ctx.userId}`, `addr:${host}`]) {
    const verdict = await ctx.limits.consume("pairing_code", key);
    if (!verdict.ok) {
      throw rateLimited(
        "pairing_code",
        verdict,
        key.startsWith("user:")
          ? `too many pairing codes for user ${ctx.userId}`
          : `too many pairing codes from ${host}`,
      );
    }
  }
  const { storage, config } = ctx;
  const limit = (await storage.pairing.deviceLimit(ctx.userId)) ??
    config.limits.maxDevicesPerUser;
  const count = await storage.pairing.countDevices(ctx.userId);
  if (count >= limit) {
    throw refused(
      Titles.deviceLimit,
      403,
      `pair_code: the user has ${count} devices; at most ${limit} ([limits] max_devices_per_user, or the user's own limit); unlink one first`,
    );
  }
  const { code, entry } = await storage.pairing.issue({
    userId: ctx.userId,
    deviceId: ctx.deviceId,
    ttlSeconds: PAIRING_CODE_TTL_SECONDS,
    maxOpen: MAX_OPEN_CODES,
  });
  const user = await storage.users.get(ctx.userId);
  // Never the code itself in the log.
  ctx.log.info("pairing code issued", {
    device_id: ctx.deviceId,
    user_id: ctx.userId,
    code_id: entry.codeId,
    expires_at: entry.expiresAt.toISOString(),
  });
  return {
    code: formatPairingCode(code),
    code_id: entry.codeId,
    expires_at: entry.expiresAt.toISOString(),
    expires_in: PAIRING_CODE_TTL_SECONDS,
    max_attempts: MAX_PAIRING_ATTEMPTS,
    user: { id: ctx.userId, handle: user?.handle ?? null },
    devices: count,
    max_devices: limit,
  };
};

/** Handles `{"op": "devices"}`. */
export const devicesRequest: RequestHandler = async (ctx, _request) => {
  await activeSelf(ctx, "devices");
  const { storage, config } = ctx;
  const list = await storage.pairing.devicesOf(ctx.userId);
  const limit = (await storage.pairing.deviceLimit(ctx.userId)) ??
    config.limits.maxDevicesPerUser;
  return {
    user: ctx.userId,
    max_devices: limit,
    count: list.filter((d) => d.status !== "revoked").length,
    devices: list.map((d) => ({
      device: d.id,
      name: d.id,
      status: d.status,
      created_at: d.createdAt.toISOString(),
      last_seen_at: d.lastSeenAt?.toISOString() ?? null,
      public_key: bytesToHex(d.publicKey),
      fingerprint: fingerprint(d.publicKey),
      paired_by: d.pairedBy,
      current: d.id === ctx.deviceId,
    })),
  };
};

/** Handles `{"op": "unlink", "device": id}`. */
export const unlinkRequest: RequestHandler = async (ctx, request) => {
  await activeSelf(ctx, "unlink");
  const target = request.device;
  if (!isStoredId(target)) {
    throw refused("Invalid Control Payload", 400, 'unlink: "device" must be a device id');
  }
  if (target === ctx.deviceId) {
    throw refused(
      Titles.notPermitted,
      400,
      "unlink: a device unlinks another device of its user, not itself",
    );
  }
  const { storage } = ctx;
  const device = await storage.devices.get(target);
  if (device === null || device.userId !== ctx.userId) {
    // The same answer whether the device exists or belongs to someone else.
    ctx.log.warn("unlink refused: not a device of the user", {
      device_id: ctx.deviceId,
      target,
    });
    throw refused(
      Titles.notPermitted,
      403,
      `unlink: ${target} is not a device of user ${ctx.userId}`,
    );
  }
  if (device.status === "revoked") {
    throw refused(Titles.deviceRevoked, 409, `unlink: device ${target} is revoked already`);
  }
  const actor = `device:${ctx.deviceId}`;
  const { event } = await storage.devices.revoke(target, actor, {
    actor,
    action: "device.unlink",
  });
  // Every node cuts the device's connections (and the interrupt key catches a lost event).
  await storage.ephemeral.setInterrupt(
    target,
    `device unlinked by ${ctx.deviceId}`,
    INTERRUPT_TTL_SECONDS,
  );
  await storage.ephemeral.publishControl({ kind: "device-revoked", deviceId: target });
  ctx.log.info("device unlinked by its user", {
    device_id: ctx.deviceId,
    user_id: ctx.userId,
    target,
    event_id: event.eventId,
  });
  return { device: target, status: "revoked", event_id: event.eventId };
};
