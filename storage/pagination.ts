/**
 * Keyset pagination helpers. A cursor is the base64url encoding of the JSON array holding the
 * last row's sort key; it is opaque to callers and validated strictly on the way back in, so a
 * forged or damaged cursor is an `InvalidValue`, never a SQL error.
 */
import { InvalidValue } from "./errors.ts";
import type { Page } from "./types.ts";

export const DEFAULT_LIMIT = 50;
export const MAX_LIMIT = 500;

/** Kinds of cursor components: free text, or a decimal integer (ids, microsecond times). */
export type KeyKind = "text" | "int";

/** Validate a page size: an integer 1..500, default 50. */
export function pageLimit(limit: number | undefined): number {
  if (limit === undefined) return DEFAULT_LIMIT;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIMIT) {
    throw new InvalidValue("limit", limit, `an integer from 1 to ${MAX_LIMIT}`);
  }
  return limit;
}

function toBase64Url(bytes: Uint8Array): string {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function fromBase64Url(text: string): Uint8Array {
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const bin = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

/** Encode a row's sort key as an opaque cursor. */
export function encodeCursor(key: string[]): string {
  return toBase64Url(new TextEncoder().encode(JSON.stringify(key)));
}

const INT_RE = /^-?\d{1,19}$/;

/**
 * Decode a cursor produced by `encodeCursor` for a listing whose key has the given shape.
 * Returns null for "first page"; throws InvalidValue("cursor", …) for anything malformed.
 */
export function decodeCursor(cursor: string | null | undefined, shape: KeyKind[]): string[] | null {
  if (cursor === undefined || cursor === null || cursor === "") return null;
  const bad = () => new InvalidValue("cursor", cursor, "a cursor returned by a previous page");
  if (typeof cursor !== "string" || cursor.length > 2048 || !/^[A-Za-z0-9_-]+$/.test(cursor)) {
    throw bad();
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(fromBase64Url(cursor)));
  } catch {
    throw bad();
  }
  if (!Array.isArray(parsed) || parsed.length !== shape.length) throw bad();
  for (const [i, kind] of shape.entries()) {
    const v = parsed[i];
    if (typeof v !== "string" || v.includes("\u0000")) throw bad();
    if (kind === "int" && !INT_RE.test(v)) throw bad();
  }
  return parsed as string[];
}

/**
 * Turn `limit + 1` fetched rows into a page: the extra row only signals that another page
 * exists; the cursor is the key of the last row returned.
 */
export function toPage<R, T>(
  rows: R[],
  limit: number,
  map: (row: R) => T,
  key: (row: R) => string[],
): Page<T> {
  const more = rows.length > limit;
  const kept = more ? rows.slice(0, limit) : rows;
  return {
    items: kept.map(map),
    nextCursor: more && kept.length > 0 ? encodeCursor(key(kept[kept.length - 1])) : null,
  };
}
