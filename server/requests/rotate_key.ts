/**
 * Server request `rotate_key` (ccp1.md §4.4): an authenticated device replaces its own static
 * key. The proof is one `Noise_X_25519_ChaChaPoly_BLAKE2s` message from the NEW key to the
 * server's static key, prologue `commucat-rotate-key`, payload = this session's id (UTF-8): only
 * the holder of the new private key can write it, and it cannot be replayed into another session.
 *
 * Request: `{"op":"rotate_key","client_static":hex32,"proof":hex}`.
 * Answer: `{"ack":n,"op":"rotate_key","device_id":…,"public_key":hex32,"event_id":…}`.
 * The session goes on under the old key; the next handshake must use the new one. Queued frames
 * stay queued (they are addressed to the device, not to a key).
 *
 * @module
 */
import { bytesToHex } from "@noble/hashes/utils.js";
import { hexToBytes } from "../../protocol/hex.ts";
import { NoiseError } from "../../protocol/noise.ts";
import { readRotationProof } from "../../protocol/rotation.ts";
import { bytesEqual } from "../../protocol/crypto.ts";
import { refused } from "../errors.ts";
import type { RequestContext, RequestHandler } from "./types.ts";

export { ROTATE_KEY_PROLOGUE } from "../../protocol/rotation.ts";
/** Title of every refused rotation. */
export const ROTATION_REFUSED = "Key Rotation Refused";

function hexField(request: Record<string, unknown>, field: string, length?: number): Uint8Array {
  const value = request[field];
  try {
    if (typeof value !== "string") throw new Error("not a string");
    return hexToBytes(value, length);
  } catch {
    throw refused(
      "Invalid Control Payload",
      400,
      `rotate_key.${field}: expected ${length === undefined ? "hex" : `${length} bytes of hex`}`,
    );
  }
}

export const rotateKey: RequestHandler = async (ctx: RequestContext, request) => {
  const newKey = hexField(request, "client_static", 32);
  const proof = hexField(request, "proof");
  if (proof.length > 1024) {
    throw refused(ROTATION_REFUSED, 400, "rotate_key.proof: at most 1024 bytes");
  }
  let proven;
  try {
    proven = readRotationProof(
      { privateKey: ctx.config.crypto.noisePrivate, publicKey: ctx.config.crypto.noisePublic },
      proof,
    );
  } catch (err) {
    const reason = err instanceof NoiseError ? err.message : "unreadable";
    throw refused(ROTATION_REFUSED, 403, `rotate_key.proof does not verify (${reason})`);
  }
  if (!bytesEqual(proven.newKey, newKey) || proven.sessionId !== ctx.sessionId) {
    throw refused(
      ROTATION_REFUSED,
      403,
      "rotate_key.proof must be written with the new key and carry this session's id",
    );
  }
  const device = await ctx.storage.devices.get(ctx.deviceId);
  if (device && bytesEqual(device.publicKey, newKey)) {
    throw refused(ROTATION_REFUSED, 409, "the new key is the device's current key");
  }
  const change = await ctx.storage.devices.rotateKey(
    ctx.deviceId,
    newKey,
    `device:${ctx.deviceId}`,
  );
  ctx.log.info("device key rotated by its owner", {
    device_id: ctx.deviceId,
    public_key: bytesToHex(newKey),
    event_id: change.event.eventId,
  });
  // Every node forgets the old key it may have cached for the device (server/session/
  // device_cache.ts). Only a hint: admission checks the key in storage whatever is cached.
  await ctx.storage.ephemeral.publishControl({ kind: "device-key-changed", deviceId: ctx.deviceId })
    .catch((err) => ctx.log.warn("key change not announced to other nodes", { error: err }));
  return {
    device_id: ctx.deviceId,
    public_key: bytesToHex(newKey),
    event_id: change.event.eventId,
  };
};
