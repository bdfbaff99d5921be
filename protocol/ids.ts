/**
 * The identifier rules of CommuCat, one grammar per kind (docs/PROTOCOL.md §4 "Identifiers").
 * The codec, storage, console, config, CLI and SDK all check against these, so an id one
 * layer accepts is never refused by another.
 *
 * - **id** (device, user, session and group ids; members): {@link ID_PATTERN}.
 * - **member address**: an id, or `device@domain` for a device on a federated server.
 * - **handle**: {@link HANDLE_PATTERN}.
 * - **domain**: a lower-case DNS name, {@link DOMAIN_PATTERN}; input is lower-cased first.
 * - **channel id**: an integer 0..2^32 − 1; channel 0 carries requests to the server.
 * - **key**: 32 bytes; on the wire 64 hex digits, where operators type one also base64.
 * - **federation event id**: {@link EVENT_ID_PATTERN}.
 *
 * @module
 */

import { hexToBytes } from "@noble/hashes/utils.js";

/** Longest device, user, session or group id. */
export const MAX_ID_LENGTH = 128;

/**
 * Device, user, session and group ids: 1–128 characters, a letter or digit first, then
 * letters, digits and `. _ : @ + -` (`@` for federated `device@domain`, `+` as in
 * `alice+phone`).
 */
export const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$/;

/** {@link ID_PATTERN} in words, for error messages. */
export const ID_RULE = "1 to 128 letters, digits or . _ : @ + - starting with a letter or digit";

/** True when `value` is a well-formed id (see {@link ID_PATTERN}). */
export function isId(value: unknown): value is string {
  return typeof value === "string" && ID_PATTERN.test(value);
}

/**
 * Ids as storage accepted them before {@link ID_PATTERN} became the one rule: any of
 * `A-Z a-z 0-9 . _ : @ -` first (so `.alice` or `-x`). No client can connect with such an
 * id, but the row may exist: storage still finds, lists, revokes and deletes it by this
 * pattern while refusing to create new ones (`commucat-cli diagnose` lists them).
 */
export const STORED_ID_PATTERN = /^[A-Za-z0-9._:@+-]{1,128}$/;

/** True when `value` names a row that may exist: a well-formed id or a stored legacy one. */
export function isStoredId(value: unknown): value is string {
  return typeof value === "string" && STORED_ID_PATTERN.test(value);
}

/** Longest user handle. */
export const MAX_HANDLE_LENGTH = 64;

/** User handles: 1–64 letters or digits of any script, `.`, `_` or `-`; a letter or digit first. */
export const HANDLE_PATTERN = /^[\p{L}\p{N}][\p{L}\p{N}._-]{0,63}$/u;

/** {@link HANDLE_PATTERN} in words. */
export const HANDLE_RULE =
  "1 to 64 letters, digits, '.', '_' or '-' (any script) starting with a letter or digit";

/** True when `value` is a well-formed handle. */
export function isHandle(value: unknown): value is string {
  return typeof value === "string" && HANDLE_PATTERN.test(value);
}

/**
 * A user address in a JOIN's members (docs/PROTOCOL.md §11): `@handle` (or `@user-id`) for every
 * active device of that user, `@handle@domain` for a user of a federated server.
 */
export function isUserAddress(value: unknown): value is string {
  if (typeof value !== "string" || value.length < 2 || value[0] !== "@") return false;
  const rest = value.slice(1);
  const at = rest.indexOf("@");
  const name = at < 0 ? rest : rest.slice(0, at);
  if (!isHandle(name) && !isId(name)) return false;
  return at < 0 || DOMAIN_PATTERN.test(rest.slice(at + 1).toLowerCase());
}

/** Handles as storage accepted them before: {@link HANDLE_PATTERN} but any first character. */
export const STORED_HANDLE_PATTERN = /^[\p{L}\p{N}._-]{1,64}$/u;

/** Longest domain name. */
export const MAX_DOMAIN_LENGTH = 253;

const LABEL = "[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?";

/**
 * Federation domains: a lower-case DNS name of at most 253 characters, dot-separated labels
 * of 1–63 letters, digits and inner `-` (`chat.example.org`, `localhost`).
 */
export const DOMAIN_PATTERN = new RegExp(
  `^(?=.{1,${MAX_DOMAIN_LENGTH}}$)${LABEL}(?:\\.${LABEL})*$`,
);

/** {@link DOMAIN_PATTERN} in words. */
export const DOMAIN_RULE = "a DNS name such as chat.example.org";

/** True when `value` is a lower-case domain (what federation compares domains as). */
export function isDomain(value: unknown): value is string {
  return typeof value === "string" && DOMAIN_PATTERN.test(value);
}

/** The domain `value` names, lower-cased, or null when it is not a DNS name. */
export function toDomain(value: unknown): string | null {
  if (typeof value !== "string") return null;
  const lowered = value.toLowerCase();
  return isDomain(lowered) ? lowered : null;
}

/** A member address split at its last `@`: `device@domain`, or a bare device id. */
export interface MemberAddress {
  device: string;
  /** Lower-cased domain, or null for a bare device id. */
  domain: string | null;
}

/** Splits a member at its last `@`; `device@` and `@domain` are not addresses (null). */
export function parseMember(member: string): MemberAddress | null {
  if (typeof member !== "string" || member.length === 0) return null;
  const at = member.lastIndexOf("@");
  if (at < 0) return { device: member, domain: null };
  if (at === 0 || at === member.length - 1) return null;
  return { device: member.slice(0, at), domain: member.slice(at + 1).toLowerCase() };
}

/** Largest channel id (and sequence): 2^32 − 1. */
export const MAX_CHANNEL_ID = 0xffffffff;

/** The channel that carries requests to the server (never relayed). */
export const SERVER_CHANNEL = 0;

/** True when `value` is a channel id: an integer 0..2^32 − 1. */
export function isChannelId(value: unknown): value is number {
  return typeof value === "number" && Number.isInteger(value) && value >= 0 &&
    value <= MAX_CHANNEL_ID;
}

/** Length of every public and private key CommuCat handles (X25519, Ed25519). */
export const KEY_LENGTH = 32;

/** A key on the wire and in files: 64 hex digits (either case; CommuCat writes lower case). */
export const KEY_HEX_PATTERN = /^[0-9a-fA-F]{64}$/;

/** The key rule where operators type a key (config, CLI, console). */
export const KEY_RULE = "a 32-byte key: 64 hex digits, or base64 / base64url";

const KEY_BASE64_PATTERN = /^[A-Za-z0-9+/_-]{43}=?$/;

/**
 * The 32 bytes of a key typed by an operator: 64 hex digits (either case) or base64 /
 * base64url, surrounding white space ignored. Null when it is neither.
 */
export function parseKeyText(text: unknown): Uint8Array | null {
  if (typeof text !== "string") return null;
  const t = text.trim();
  if (KEY_HEX_PATTERN.test(t)) return hexToBytes(t);
  if (!KEY_BASE64_PATTERN.test(t)) return null;
  try {
    const b64 = t.replace(/-/g, "+").replace(/_/g, "/").replace(/=?$/, "=");
    const bytes = Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0));
    return bytes.length === KEY_LENGTH ? bytes : null;
  } catch {
    return null;
  }
}

/** Federation event ids: 1–128 letters, digits and `. _ : -` (UUIDs, as this server mints). */
export const EVENT_ID_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;
