/**
 * Hex for keys and Noise messages inside control JSON: encoding and decoding from
 * `@noble/hashes/utils` (the built-in `Uint8Array` hex methods where the runtime has them),
 * plus the validation the codec needs.
 *
 * @module
 */
import { bytesToHex, hexToBytes as decodeHex } from "@noble/hashes/utils.js";

/** Lowercase hex of `bytes`. */
export { bytesToHex };

const HEX = /^[0-9a-fA-F]*$/;

/**
 * True when `text` is hex (either case) of a whole number of octets, and of exactly
 * `octets` octets when given.
 */
export function isHex(text: unknown, octets?: number): text is string {
  if (typeof text !== "string" || text.length % 2 !== 0) return false;
  if (octets !== undefined && text.length !== octets * 2) return false;
  return HEX.test(text);
}

/**
 * Decodes hex (either case). Throws RangeError when `text` is not hex, has an odd length, or
 * — when `octets` is given — decodes to another length.
 */
export function hexToBytes(text: string, octets?: number): Uint8Array {
  if (typeof text !== "string") throw new RangeError("hex: expected a string");
  if (octets !== undefined && text.length !== octets * 2) {
    throw new RangeError(`hex: expected ${octets * 2} hex characters, got ${text.length}`);
  }
  return decodeHex(text);
}
