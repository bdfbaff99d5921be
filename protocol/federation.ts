/**
 * Federation events (ccp1.md §7): digest, Ed25519 signing and verification.
 *
 * Digest = BLAKE3 over, in order and without separators: event_id, origin, scope (UTF-8),
 * created_at as a signed 64-bit little-endian count of nanoseconds since the Unix epoch, and
 * the payload as compact JSON with object keys sorted (recursively). The signature is Ed25519
 * over the 32-byte digest; the signing key's 32-byte secret is BLAKE3(federation seed bytes).
 *
 * `created_at` is an RFC 3339 string (what travels on the wire), so nanosecond precision
 * survives; use {@link toRfc3339} to make one from a Date.
 *
 * @module
 */
import { blake3Hash, type CryptoBackend, defaultBackend } from "./crypto.ts";
import { ProblemError } from "./errors.ts";

/** The relayed frame inside a federation event. */
export interface FederationPayload {
  channel: number;
  sequence: number;
  /** The encoded CCP-1 frame, hex. */
  payload: string;
  sender: string;
  target: string;
  [extra: string]: unknown;
}

/** One federation event. */
export interface FederationEvent {
  event_id: string;
  origin: string;
  /** The target domain. */
  scope: string;
  /** RFC 3339 timestamp, e.g. `2024-05-01T12:00:00.123456789Z`. */
  created_at: string;
  payload: FederationPayload;
}

/** The federation key pair: a 32-byte Ed25519 secret and its public key. */
export interface FederationKeypair {
  secretKey: Uint8Array;
  publicKey: Uint8Array;
}

/** Raised for an event that cannot be digested (bad timestamp, non-JSON payload value). */
export class FederationError extends ProblemError {
  constructor(message: string) {
    super("Invalid Event", 400, message);
    this.name = "FederationError";
  }
}

const utf8 = new TextEncoder();

/** The Ed25519 key pair of a federation seed: secret = BLAKE3(seed). */
export function federationKeypair(
  seed: Uint8Array,
  backend: CryptoBackend = defaultBackend,
): FederationKeypair {
  if (!(seed instanceof Uint8Array) || seed.length === 0) {
    throw new FederationError("federation seed must be a non-empty byte array");
  }
  const secretKey = blake3Hash(seed);
  return { secretKey, publicKey: backend.ed25519.publicKeyOf(secretKey) };
}

const RFC3339 =
  /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/;
const I64_MIN = -(1n << 63n);
const I64_MAX = (1n << 63n) - 1n;

/**
 * Nanoseconds since the Unix epoch of an RFC 3339 timestamp, as a signed 64-bit value.
 * Fractions beyond 9 digits are truncated. Throws FederationError naming what is wrong.
 */
export function rfc3339ToNanos(timestamp: string): bigint {
  const m = typeof timestamp === "string" ? RFC3339.exec(timestamp) : null;
  if (!m) {
    throw new FederationError(
      `created_at ${JSON.stringify(timestamp)} is not an RFC 3339 timestamp`,
    );
  }
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number);
  if (
    month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month) || hour > 23 ||
    minute > 59 || second > 59
  ) {
    throw new FederationError(`created_at ${JSON.stringify(timestamp)} is not a valid date/time`);
  }
  let offsetMinutes = 0;
  if (m[9]) {
    const oh = Number(m[10]), om = Number(m[11]);
    if (oh > 23 || om > 59) {
      throw new FederationError(`created_at ${JSON.stringify(timestamp)} has a bad UTC offset`);
    }
    offsetMinutes = (m[9] === "-" ? -1 : 1) * (oh * 60 + om);
  }
  // Date.UTC handles the calendar; years 0..99 need setUTCFullYear to avoid the 1900 shift.
  const d = new Date(0);
  d.setUTCFullYear(year, month - 1, day);
  d.setUTCHours(hour, minute, second, 0);
  const seconds = BigInt(d.getTime() / 1000) - BigInt(offsetMinutes * 60);
  const fraction = BigInt((m[7] ?? "").slice(0, 9).padEnd(9, "0"));
  const nanos = seconds * 1_000_000_000n + fraction;
  if (nanos < I64_MIN || nanos > I64_MAX) {
    throw new FederationError(
      `created_at ${JSON.stringify(timestamp)} is outside the signed 64-bit nanosecond range`,
    );
  }
  return nanos;
}

function daysInMonth(year: number, month: number): number {
  if (month === 2) return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0 ? 29 : 28;
  return month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31;
}

/** An RFC 3339 UTC timestamp (millisecond precision) for a Date, e.g. for a new event. */
export function toRfc3339(date: Date): string {
  if (!(date instanceof Date) || Number.isNaN(date.getTime())) {
    throw new FederationError("created_at must be a valid Date");
  }
  return date.toISOString();
}

/**
 * Compact JSON with object keys sorted by code point, recursively (no whitespace; strings
 * escaped as JSON.stringify does). Rejects values JSON cannot carry exactly.
 */
export function canonicalJson(value: unknown): string {
  return canonical(value, "payload");
}

function canonical(value: unknown, path: string): string {
  if (value === null) return "null";
  switch (typeof value) {
    case "string":
    case "boolean":
      return JSON.stringify(value);
    case "number":
      if (!Number.isFinite(value)) {
        throw new FederationError(`${path} is not a finite number`);
      }
      return JSON.stringify(value);
    case "object": {
      if (Array.isArray(value)) {
        return `[${value.map((v, i) => canonical(v, `${path}[${i}]`)).join(",")}]`;
      }
      const obj = value as Record<string, unknown>;
      const keys = Object.keys(obj).filter((k) => obj[k] !== undefined).sort(compareCodePoints);
      return `{${
        keys.map((k) => `${JSON.stringify(k)}:${canonical(obj[k], `${path}.${k}`)}`).join(",")
      }}`;
    }
    default:
      throw new FederationError(`${path} has a value JSON cannot carry (${typeof value})`);
  }
}

// Sorting by code point equals sorting by UTF-8 bytes (what a byte-ordered map produces);
// the default sort compares UTF-16 units, which differs for characters above U+FFFF.
function compareCodePoints(a: string, b: string): number {
  const ia = a[Symbol.iterator](), ib = b[Symbol.iterator]();
  for (;;) {
    const x = ia.next(), y = ib.next();
    if (x.done || y.done) return (x.done ? 0 : 1) - (y.done ? 0 : 1);
    const cx = x.value.codePointAt(0)!, cy = y.value.codePointAt(0)!;
    if (cx !== cy) return cx - cy;
  }
}

function requireString(event: FederationEvent, field: "event_id" | "origin" | "scope"): string {
  const v = event?.[field];
  if (typeof v !== "string") throw new FederationError(`${field} must be a string`);
  return v;
}

/** The 32-byte BLAKE3 digest of an event. Throws FederationError on a malformed event. */
export function eventDigest(event: FederationEvent): Uint8Array {
  const eventId = requireString(event, "event_id");
  const origin = requireString(event, "origin");
  const scope = requireString(event, "scope");
  const createdAt = new Uint8Array(8);
  new DataView(createdAt.buffer).setBigInt64(0, rfc3339ToNanos(event.created_at), true);
  if (typeof event.payload !== "object" || event.payload === null) {
    throw new FederationError("payload must be an object");
  }
  return blake3Hash(
    utf8.encode(eventId),
    utf8.encode(origin),
    utf8.encode(scope),
    createdAt,
    utf8.encode(canonicalJson(event.payload)),
  );
}

/** The 64-byte Ed25519 signature of the event's digest. */
export function signEvent(
  event: FederationEvent,
  secretKey: Uint8Array,
  backend: CryptoBackend = defaultBackend,
): Uint8Array {
  return backend.ed25519.sign(eventDigest(event), secretKey);
}

/**
 * True when `signature` is the signature of the event's digest under `publicKey`. Never throws:
 * a malformed event, key or signature gives false.
 */
export function verifyEvent(
  event: FederationEvent,
  signature: Uint8Array,
  publicKey: Uint8Array,
  backend: CryptoBackend = defaultBackend,
): boolean {
  try {
    if (!(signature instanceof Uint8Array) || signature.length !== 64) return false;
    if (!(publicKey instanceof Uint8Array) || publicKey.length !== 32) return false;
    return backend.ed25519.verify(signature, eventDigest(event), publicKey);
  } catch {
    return false;
  }
}
