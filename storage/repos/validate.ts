/**
 * Validation of every value that crosses into the repositories. Each check throws
 * `InvalidValue` naming the field and the offending value, so bad input never reaches SQL
 * (where it would surface as a confusing constraint error, or as a NUL byte Postgres refuses).
 */
import { InvalidValue } from "../errors.ts";
import type { DeviceStatus, GroupRole, PeerStatus } from "../types.ts";
import {
  DOMAIN_RULE,
  HANDLE_RULE,
  ID_RULE,
  isChannelId,
  isHandle,
  isId,
  isStoredId,
  KEY_LENGTH,
  STORED_HANDLE_PATTERN,
  toDomain,
} from "../../protocol/ids.ts";

/**
 * An id that names a row: the id grammar of protocol/ids.ts, or an id stored before that rule
 * (such as `.alice`), so such a row can still be found, revoked and deleted.
 */
export function id(field: string, value: unknown): string {
  if (!isStoredId(value)) throw new InvalidValue(field, value, ID_RULE);
  return value;
}

/**
 * A group member: a device id (as {@link id}), or `@<user id>` for a user on the roster (every
 * active device of that user is then a member; docs/PROTOCOL.md §11).
 */
export function member(field: string, value: unknown): string {
  const ok = typeof value === "string" &&
    (value.startsWith("@")
      ? isStoredId(value.slice(1)) && !value.startsWith("@@")
      : isStoredId(value));
  if (!ok) throw new InvalidValue(field, value, `${ID_RULE}, or @<user id>`);
  return value;
}

/** The id of a row being created: the id grammar only (see protocol/ids.ts). */
export function newId(field: string, value: unknown): string {
  if (!isId(value)) throw new InvalidValue(field, value, ID_RULE);
  return value;
}

/** A handle being stored (protocol/ids.ts). */
export function handle(value: unknown): string {
  if (!isHandle(value)) throw new InvalidValue("handle", value, HANDLE_RULE);
  return value;
}

/** A handle to look up: the handle grammar, or one stored before it (such as `.alice`). */
export function storedHandle(value: unknown): string {
  if (typeof value !== "string" || !STORED_HANDLE_PATTERN.test(value)) {
    throw new InvalidValue("handle", value, HANDLE_RULE);
  }
  return value;
}

/** Free text stored verbatim: a string of at most `max` characters without NUL. */
export function text(field: string, value: unknown, max: number, min = 0): string {
  if (typeof value !== "string" || value.length > max || value.length < min) {
    throw new InvalidValue(field, value, `text of ${min} to ${max} characters`);
  }
  if (value.includes("\u0000")) throw new InvalidValue(field, value, "text without NUL characters");
  return value;
}

/** Optional free text: undefined stays undefined (unchanged), null clears. */
export function optionalText(
  field: string,
  value: unknown,
  max: number,
): string | null | undefined {
  if (value === undefined || value === null) return value;
  return text(field, value, max);
}

/** Who caused a change: "cli:alice", "console:<session>", "handshake", … */
export function actor(value: unknown): string {
  return text("actor", value, 256, 1);
}

/** A 32-byte public key. */
export function key32(field: string, value: unknown): Uint8Array {
  if (!(value instanceof Uint8Array) || value.length !== KEY_LENGTH) {
    const shown = value instanceof Uint8Array ? `${value.length} bytes` : value;
    throw new InvalidValue(field, shown, "a 32-byte key");
  }
  return value;
}

export function deviceStatus(value: unknown): DeviceStatus {
  if (value === "pending" || value === "active" || value === "revoked") return value;
  throw new InvalidValue("device status", value, "pending, active or revoked");
}

export function groupRole(value: unknown): GroupRole {
  if (value === "owner" || value === "admin" || value === "member") return value;
  throw new InvalidValue("role", value, "owner, admin or member");
}

export function peerStatus(value: unknown): PeerStatus {
  if (value === "active" || value === "pending" || value === "blocked") return value;
  throw new InvalidValue("peer status", value, "active, pending or blocked");
}

/** A federation domain: a DNS name, compared in lower case. */
export function domain(value: unknown): string {
  const lowered = toDomain(value);
  if (lowered === null) throw new InvalidValue("domain", value, DOMAIN_RULE);
  return lowered;
}

/** A peer endpoint: an absolute http(s) URL. */
export function endpoint(value: unknown): string {
  if (typeof value === "string" && value.length <= 2048 && !value.includes("\u0000")) {
    try {
      const url = new URL(value);
      if ((url.protocol === "https:" || url.protocol === "http:") && url.hostname) return value;
    } catch {
      // fall through to the error below
    }
  }
  throw new InvalidValue("endpoint", value, "an absolute https:// URL");
}

/** An unsigned 32-bit integer (channel ids, sequences). */
export function u32(field: string, value: unknown): number {
  if (!isChannelId(value)) {
    throw new InvalidValue(field, value, "an integer from 0 to 4294967295");
  }
  return value;
}

/** An integer in a range. */
export function int(field: string, value: unknown, min: number, max: number): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw new InvalidValue(field, value, `an integer from ${min} to ${max}`);
  }
  return value;
}

/** An envelope id (or other bigserial id): a decimal string. */
export function bigId(field: string, value: unknown): string {
  if (typeof value !== "string" || !/^\d{1,19}$/.test(value) || BigInt(value) > 2n ** 63n - 1n) {
    throw new InvalidValue(field, value, "a decimal id");
  }
  return value;
}

/** A valid Date. */
export function date(field: string, value: unknown): Date {
  if (!(value instanceof Date) || Number.isNaN(value.getTime())) {
    throw new InvalidValue(field, value, "a valid date");
  }
  return value;
}

/** Escape LIKE wildcards so user text matches literally, and build a lower-case prefix pattern. */
export function prefixPattern(field: string, value: unknown): string {
  const s = text(field, value, 256);
  return s.toLowerCase().replace(/[\\%_]/g, (c) => "\\" + c) + "%";
}
