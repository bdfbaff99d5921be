/**
 * Deterministic channel ids, so that every member computes the same id without asking
 * anyone:
 *
 * - 1:1: `u32be(SHA-256("commucat-dm\n" ‖ min(a,b) ‖ "\n" ‖ max(a,b))[0..4])`, where a and b
 *   are the two device ids compared as strings (so the order of the two sides does not
 *   matter);
 * - group: `u32be(SHA-256("commucat-group\n" ‖ group_id)[0..4])`.
 *
 * A result of 0 becomes 1 (channel 0 carries handshake and device-level frames). 32 bits
 * can collide; the server refuses a JOIN on a channel whose members differ, so a collision
 * shows up as "join rejected", never as messages reaching the wrong devices.
 *
 * @module
 */

import { sha256 } from "@noble/hashes/sha2.js";

const encoder = new TextEncoder();

function u32Of(text: string): number {
  const digest = sha256(encoder.encode(text));
  const id = ((digest[0] << 24) | (digest[1] << 16) | (digest[2] << 8) | digest[3]) >>> 0;
  return id === 0 ? 1 : id;
}

/** The channel id two devices share for their 1:1 conversation. */
export function directChannelId(deviceA: string, deviceB: string): number {
  const [first, second] = deviceA < deviceB ? [deviceA, deviceB] : [deviceB, deviceA];
  return u32Of(`commucat-dm\n${first}\n${second}`);
}

/** The channel id of a group's conversation. */
export function groupChannelId(groupId: string): number {
  return u32Of(`commucat-group\n${groupId}`);
}
