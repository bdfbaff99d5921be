/**
 * Validating hex helpers: keys and Noise messages travel hex-encoded inside control JSON.
 *
 * @module
 */

const HEX_DIGITS = "0123456789abcdef";
const BYTE_TO_HEX: string[] = Array.from(
  { length: 256 },
  (_, i) => HEX_DIGITS[i >> 4] + HEX_DIGITS[i & 15],
);

function nibble(code: number): number {
  if (code >= 48 && code <= 57) return code - 48; // 0-9
  if (code >= 97 && code <= 102) return code - 87; // a-f
  if (code >= 65 && code <= 70) return code - 55; // A-F
  return -1;
}

/** Lowercase hex of `bytes`. */
export function bytesToHex(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < bytes.length; i++) out += BYTE_TO_HEX[bytes[i]];
  return out;
}

/**
 * True when `text` is hex (either case) of a whole number of octets, and of exactly
 * `octets` octets when given.
 */
export function isHex(text: unknown, octets?: number): text is string {
  if (typeof text !== "string" || text.length % 2 !== 0) return false;
  if (octets !== undefined && text.length !== octets * 2) return false;
  for (let i = 0; i < text.length; i++) if (nibble(text.charCodeAt(i)) < 0) return false;
  return true;
}

/**
 * Decodes hex (either case). Throws RangeError naming the problem when `text` is not hex,
 * has an odd length, or — when `octets` is given — decodes to another length.
 */
export function hexToBytes(text: string, octets?: number): Uint8Array {
  if (typeof text !== "string") throw new RangeError("hex: expected a string");
  if (text.length % 2 !== 0) throw new RangeError(`hex: odd length ${text.length}`);
  if (octets !== undefined && text.length !== octets * 2) {
    throw new RangeError(`hex: expected ${octets * 2} hex characters, got ${text.length}`);
  }
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) {
    const hi = nibble(text.charCodeAt(2 * i));
    const lo = nibble(text.charCodeAt(2 * i + 1));
    if (hi < 0 || lo < 0) {
      throw new RangeError(`hex: invalid character at position ${hi < 0 ? 2 * i : 2 * i + 1}`);
    }
    out[i] = (hi << 4) | lo;
  }
  return out;
}
