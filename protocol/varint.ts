/**
 * Unsigned LEB128 varints as CCP-1 uses them (ccp1.md §1): little-endian groups of 7 bits,
 * 0x80 marks a continuation, at most 10 octets, values up to 2^64 − 1.
 *
 * Values are JS numbers. Encoding accepts safe integers (≤ 2^53 − 1). Decoding reads the
 * full 64-bit range so that a huge length is reported as too large rather than misread;
 * values above 2^53 − 1 come back rounded to the nearest double, which is harmless because
 * they are only ever compared against limits far below 2^53.
 *
 * @module
 */

import { CodecError } from "./errors.ts";

/** The longest varint CCP-1 accepts (10 × 7 bits ≥ 64 bits). */
export const MAX_VARINT_OCTETS = 10;

/** Largest value an identifier (channel_id, sequence) may take: u32. */
export const MAX_U32 = 0xffff_ffff;

const TWO_POW_32 = 0x1_0000_0000;

/** Octets needed to encode `value` (a non-negative safe integer). */
export function varintLength(value: number): number {
  assertEncodable(value);
  if (value < 0x80) return 1;
  if (value < 0x4000) return 2;
  if (value < 0x20_0000) return 3;
  if (value < 0x1000_0000) return 4;
  let length = 4;
  let rest = Math.floor(value / 0x1000_0000);
  while (rest > 0) {
    length++;
    rest = Math.floor(rest / 128);
  }
  return length;
}

/**
 * Writes `value` at `offset` in `target` and returns the offset just past it.
 * The caller sizes `target` with {@link varintLength}.
 */
export function writeVarint(target: Uint8Array, offset: number, value: number): number {
  // Bit operations are 32-bit in JS: use them while the value fits, division above.
  while (value >= TWO_POW_32) {
    target[offset++] = (value % 128) | 0x80;
    value = Math.floor(value / 128);
  }
  while (value >= 0x80) {
    target[offset++] = (value & 0x7f) | 0x80;
    value >>>= 7;
  }
  target[offset++] = value;
  return offset;
}

/** Encodes `value` (a non-negative safe integer) as a fresh varint. */
export function encodeVarint(value: number): Uint8Array {
  const out = new Uint8Array(varintLength(value));
  writeVarint(out, 0, value);
  return out;
}

/** A decoded varint: its value and how many octets it took. */
export interface DecodedVarint {
  value: number;
  length: number;
}

/**
 * Decodes one varint at `offset` (up to `end`, default the array's length).
 *
 * Returns `null` when the bytes end before the varint does (need more bytes). Throws
 * CodecError "Varint Overflow" when the varint runs past 10 octets or its value needs more
 * than 64 bits. Non-minimal encodings (e.g. `80 00` for 0) are accepted, as LEB128 allows.
 */
export function decodeVarint(
  bytes: Uint8Array,
  offset = 0,
  end: number = bytes.length,
): DecodedVarint | null {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < MAX_VARINT_OCTETS; i++) {
    const at = offset + i;
    if (at >= end) return null;
    const byte = bytes[at];
    const bits = byte & 0x7f;
    if (i === MAX_VARINT_OCTETS - 1 && bits > 1) {
      throw new CodecError("Varint Overflow", "varint value does not fit in 64 bits");
    }
    value += bits * scale;
    if ((byte & 0x80) === 0) return { value, length: i + 1 };
    scale *= 128;
  }
  throw new CodecError("Varint Overflow", `varint longer than ${MAX_VARINT_OCTETS} octets`);
}

/**
 * Checks that an identifier (channel_id or sequence) fits u32; throws CodecError
 * "Identifier Out Of Range" naming `field` otherwise.
 */
export function assertU32(field: string, value: number): void {
  if (!Number.isInteger(value) || value < 0 || value > MAX_U32) {
    throw new CodecError(
      "Identifier Out Of Range",
      `${field} ${value} is not an integer in 0..${MAX_U32}`,
    );
  }
}

function assertEncodable(value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`varint value must be a non-negative safe integer, got ${value}`);
  }
}
