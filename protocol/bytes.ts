/**
 * Byte-array helpers: `concatBytes` from `@noble/hashes/utils` for a few parts, and
 * {@link concatChunks} for a list of any length (noble's takes its parts as arguments, which
 * the call stack bounds at about 120 000).
 *
 * @module
 */
export { concatBytes } from "@noble/hashes/utils.js";

/** Concatenates a list of chunks into one fresh array (one allocation). */
export function concatChunks(chunks: readonly Uint8Array[]): Uint8Array {
  let total = 0;
  for (const chunk of chunks) total += chunk.length;
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}
