/**
 * Pairing codes (docs/PROTOCOL.md "Pairing a new device"): 8 characters of Crockford's base32
 * alphabet (no I, L, O or U), shown as `ABCD-EFGH`. Typing is forgiving: case, spaces and dashes
 * are ignored and I/L read as 1, O as 0. 40 bits: with the bound on wrong attempts per code a
 * guess succeeds with odds of about 5 in 10^12.
 *
 * @module
 */

/** The alphabet codes are written in (32 symbols: each character is 5 random bits). */
export const PAIRING_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/** Characters in a code. */
export const PAIRING_CODE_LENGTH = 8;

/** A fresh random code, normalized (no dash). */
export function newPairingCode(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(PAIRING_CODE_LENGTH));
  // 256 is a multiple of 32: masking keeps every symbol equally likely.
  let code = "";
  for (const b of bytes) code += PAIRING_ALPHABET[b & 31];
  return code;
}

/** `ABCD-EFGH`, as a person reads it out. */
export function formatPairingCode(code: string): string {
  return `${code.slice(0, 4)}-${code.slice(4)}`;
}

/** The normalized code a person typed, or null when it cannot be one. */
export function normalizePairingCode(typed: unknown): string | null {
  if (typeof typed !== "string" || typed.length > 32) return null;
  const code = typed.toUpperCase().replace(/[\s-]/g, "").replace(/[IL]/g, "1").replace(/O/g, "0");
  if (code.length !== PAIRING_CODE_LENGTH) return null;
  for (const c of code) if (!PAIRING_ALPHABET.includes(c)) return null;
  return code;
}
