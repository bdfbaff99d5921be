/**
 * Checks for what operators type: filters in query strings and the add-peer form. Each check
 * returns a message naming the field and what was expected, never throws.
 */
import type { DeviceStatus, PeerStatus } from "../storage/types.ts";
import { parseKeyText, toDomain } from "../protocol/ids.ts";

export const DEVICE_STATUSES: DeviceStatus[] = ["pending", "active", "revoked"];
export const PEER_STATUSES: PeerStatus[] = ["active", "pending", "blocked"];

/** A status filter value, or null for "any"; unknown values are an error. */
export function parseStatus<T extends string>(
  value: string | undefined,
  allowed: readonly T[],
  field: string,
): { value: T | null; error: string | null } {
  if (!value) return { value: null, error: null };
  if ((allowed as readonly string[]).includes(value)) return { value: value as T, error: null };
  return { value: null, error: `${field} must be one of ${allowed.join(", ")}` };
}

/** A yes/no filter sent as `1` (yes) or absent/empty (no); anything else is an error. */
export function parseFlag(
  value: string | undefined,
  field: string,
): { value: boolean; error: string | null } {
  if (!value) return { value: false, error: null };
  if (value === "1") return { value: true, error: null };
  return { value: false, error: `${field} must be 1 or empty` };
}

/** A free-text filter, trimmed and bounded. */
export function parseText(value: string | undefined, max = 200): string | null {
  const v = (value ?? "").trim();
  return v ? v.slice(0, max) : null;
}

/**
 * A time filter: `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM` (as a datetime-local field sends it) or a full
 * ISO time; times without a zone are read as UTC.
 */
export function parseTime(
  value: string | undefined,
  field: string,
): { value: Date | null; error: string | null } {
  const v = (value ?? "").trim();
  if (!v) return { value: null, error: null };
  const m = /^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2})(:\d{2}(?:\.\d{1,3})?)?)?(Z|[+-]\d{2}:\d{2})?$/
    .exec(v);
  if (m) {
    const d = new Date(`${m[1]}T${m[2] ?? "00:00"}${m[3] ?? ":00"}${m[4] ?? "Z"}`);
    // A day that does not exist (2026-02-31) rolls over in Date; refuse it instead.
    const valid = !Number.isNaN(d.getTime()) &&
      (m[4] !== undefined || d.toISOString().slice(0, 10) === m[1]);
    if (valid) return { value: d, error: null };
  }
  return {
    value: null,
    error: `${field} must be a date and time like 2026-01-31T13:45 (UTC)`,
  };
}

/** A time as the value of a datetime-local field (UTC). */
export function timeInputValue(d: Date | null): string {
  return d ? d.toISOString().slice(0, 16) : "";
}

export interface PeerForm {
  domain: string;
  endpoint: string;
  publicKey: string;
  status: string;
}

export interface ParsedPeer {
  domain: string;
  endpoint: string;
  publicKey: Uint8Array;
  status: PeerStatus;
}

/** Validates the add-peer form; returns the peer or a message per field. */
export function parsePeerForm(
  form: PeerForm,
  staticDomains: Set<string>,
): { peer: ParsedPeer | null; errors: Partial<Record<keyof PeerForm, string>> } {
  const errors: Partial<Record<keyof PeerForm, string>> = {};
  const domain = toDomain(form.domain.trim()) ?? "";
  if (!domain) {
    errors.domain = "Domain must be a DNS name like chat.example.org";
  } else if (staticDomains.has(domain)) {
    errors.domain = "This domain is a static peer from the config; change it there";
  }
  let endpoint = form.endpoint.trim();
  try {
    const url = new URL(endpoint);
    if (url.protocol !== "https:") errors.endpoint = "Endpoint must be an https:// URL";
    else if (url.username || url.password) errors.endpoint = "Endpoint must not carry credentials";
    else endpoint = url.toString();
  } catch {
    errors.endpoint = "Endpoint must be a full URL like https://chat.example.org/federation";
  }
  const key = parseKeyText(form.publicKey);
  if (!key) errors.publicKey = "Public key must be 32 bytes as 64 hex digits or base64";
  const status = form.status || "pending";
  if (!(PEER_STATUSES as string[]).includes(status)) {
    errors.status = `Status must be one of ${PEER_STATUSES.join(", ")}`;
  }
  if (Object.keys(errors).length) return { peer: null, errors };
  return { peer: { domain, endpoint, publicKey: key!, status: status as PeerStatus }, errors };
}
