/**
 * Value parsers: each takes a raw value (a TOML value, or the text of an environment variable)
 * and returns the typed value or throws Expected; the loader adds the key and the source.
 *
 * @module
 */
import { resolve } from "node:path";
import { hexToBytes, isHex } from "../../protocol/hex.ts";
import { toDomain } from "../../protocol/ids.ts";
import { isLoopbackHost } from "../../protocol/net.ts";
import { LEDGER_MODES } from "../../storage/ledger.ts";
import type { LedgerMode, StaticPeer } from "./types.ts";

/** What a parser may need beyond the value: where relative paths start, this server's domain. */
export interface ParseContext {
  cwd: string;
  /** This server's domain (`[server] domain`), which no peer may claim. */
  domain: string;
}

/** A value parser (see the module doc). */
export type Parser<T> = (value: unknown, ctx: ParseContext) => T;

/** Thrown by a value parser: what was expected, and whether the loader may show the value. */
export class Expected extends Error {
  constructor(readonly expected: string, readonly showValue = true) {
    super(expected);
  }
}

/** Like Expected, for a value with parts (peers): the text says itself what was wrong. */
export class Invalid extends Expected {
  constructor(text: string) {
    super(text, false);
  }
}

/** True for a TOML table (not an array or a date). */
export function isTable(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value) &&
    !(value instanceof Date);
}

/** A short description of a value for an error message (long strings are cut). */
export function describeValue(value: unknown): string {
  if (typeof value === "string") {
    return JSON.stringify(value.length > 80 ? value.slice(0, 77) + "…" : value);
  }
  if (typeof value === "number" || typeof value === "boolean" || typeof value === "bigint") {
    return String(value);
  }
  if (Array.isArray(value)) return "an array";
  if (value instanceof Date) return "a date";
  if (isTable(value)) return "a table";
  return typeof value;
}

/** Any string. */
export function parseString(value: unknown, expected: string): string {
  if (typeof value !== "string") throw new Expected(expected);
  return value;
}

/** A string with something besides white space, trimmed. */
export function parseNonEmptyString(value: unknown, expected: string): string {
  const text = parseString(value, expected).trim();
  if (text === "") throw new Expected(expected);
  return text;
}

/** A parser of non-empty text, refused with `expected`. */
export const nonEmpty = (expected: string): Parser<string> => (value) =>
  parseNonEmptyString(value, expected);

/** A whole number min..max, as a TOML integer or decimal digits in a string. */
export function parseInteger(value: unknown, min: number, max: number, expected: string): number {
  let n: number;
  if (typeof value === "number") n = value;
  else if (typeof value === "bigint") n = Number(value);
  else if (typeof value === "string" && /^\s*\d+\s*$/.test(value)) n = Number(value);
  else throw new Expected(expected);
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new Expected(expected);
  return n;
}

/** A parser of a whole number min..max, refused with `expected`. */
export const integer = (min: number, max: number, expected: string): Parser<number> => (value) =>
  parseInteger(value, min, max, expected);

/** A parser of a positive count of `unit`s up to `max` ("seconds", "frames", …). */
export const positive = (max: number, unit: string): Parser<number> =>
  integer(1, max, `a positive integer number of ${unit} (1..${max})`);

/** A file path, resolved against the working directory. */
export function parsePath(value: unknown, ctx: ParseContext): string {
  return resolve(ctx.cwd, parseNonEmptyString(value, "a file path"));
}

/** true/false, "true"/"false", "1"/"0", "yes"/"no", "on"/"off" (any case), 1/0. */
export function parseBoolean(value: unknown): boolean {
  if (typeof value === "boolean") return value;
  if (value === 1 || value === 0) return value === 1;
  if (typeof value === "string") {
    const text = value.trim().toLowerCase();
    if (["true", "1", "yes", "on"].includes(text)) return true;
    if (["false", "0", "no", "off"].includes(text)) return false;
  }
  throw new Expected("a boolean (true/false, yes/no, 1/0)");
}

/** "host:port", "[ipv6]:port"; the port 0 asks the system for a free one. */
export function parseBind(value: unknown): { hostname: string; port: number } {
  const expected = 'an address "host:port" such as "127.0.0.1:8443" or "[::1]:8443"';
  if (typeof value !== "string") throw new Expected(expected);
  const text = value.trim();
  const match = /^(?:\[([0-9a-fA-F:.%\w]+)\]|([^\s:\[\]]+)):(\d{1,5})$/.exec(text);
  if (!match) throw new Expected(expected);
  const hostname = match[1] ?? match[2];
  const port = Number(match[3]);
  if (port > 65535) throw new Expected(`${expected} (port 0..65535)`);
  if (match[1] !== undefined && !match[1].includes(":")) throw new Expected(expected);
  if (match[2] !== undefined && !isHostname(hostname) && !isIpv4(hostname)) {
    throw new Expected(expected);
  }
  if (match[2] !== undefined && /^[\d.]+$/.test(hostname) && !isIpv4(hostname)) {
    throw new Expected(expected);
  }
  return { hostname, port };
}

function isIpv4(text: string): boolean {
  const parts = text.split(".");
  return parts.length === 4 && parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255);
}

/** A host name: the domain grammar of protocol/ids.ts in either case. */
function isHostname(text: string): boolean {
  return toDomain(text) !== null;
}

/** A domain name (protocol/ids.ts), lower-cased. */
export function parseDomain(value: unknown): string {
  const expected = 'a domain name such as "chat.example.org"';
  const domain = toDomain(parseNonEmptyString(value, expected));
  if (domain === null) throw new Expected(expected);
  return domain;
}

function parseHex(value: unknown, expected: string): Uint8Array {
  if (typeof value !== "string") throw new Expected(expected, false);
  const text = value.trim();
  if (text.length === 0 || !isHex(text)) {
    throw new Expected(
      `${expected}, got ${text.length} characters that are not even-length hex`,
      false,
    );
  }
  return hexToBytes(text);
}

/** A 32-byte key as 64 hex characters (never echoed: keys may be private). */
export function parseKey32(value: unknown): Uint8Array {
  const expected = "64 hex characters (a 32-byte key)";
  const bytes = parseHex(value, expected);
  if (bytes.length !== 32) {
    throw new Expected(`${expected}, got ${bytes.length * 2} hex characters`, false);
  }
  return bytes;
}

/** Federation seed: hex, 16 to 1024 bytes (generated seeds are 32 bytes). */
export function parseSeed(value: unknown): Uint8Array {
  const expected = "hex of 16 to 1024 bytes (32..2048 hex characters)";
  const bytes = parseHex(value, expected);
  if (bytes.length < 16 || bytes.length > 1024) {
    throw new Expected(`${expected}, got ${bytes.length} bytes`, false);
  }
  return bytes;
}

/** An RFC 3339 time, as a TOML date-time or a string. */
export function parseTime(value: unknown): Date {
  const text = value instanceof Date
    ? value.toISOString()
    : parseNonEmptyString(value, "an RFC 3339 time");
  const date = new Date(text);
  if (!/^\d{4}-\d{2}-\d{2}T/.test(text) || Number.isNaN(date.getTime())) {
    throw new Expected("an RFC 3339 time such as 2026-12-08T00:00:00Z");
  }
  return date;
}

function parseUrl(value: unknown, schemes: string[], expected: string): URL {
  if (typeof value !== "string") throw new Expected(expected, false);
  let url: URL;
  try {
    url = new URL(value.trim());
  } catch {
    throw new Expected(`${expected} (not a URL)`, false);
  }
  if (!schemes.includes(url.protocol)) {
    throw new Expected(`${expected}, got scheme "${url.protocol}"`, false);
  }
  if (!url.hostname) throw new Expected(`${expected} (no host)`, false);
  return url;
}

/** A PostgreSQL URL, trimmed (never echoed: it may carry a password). */
export function parsePostgresDsn(value: unknown): string {
  parseUrl(
    value,
    ["postgres:", "postgresql:"],
    "a PostgreSQL URL postgres://user:password@host:port/database",
  );
  return (value as string).trim();
}

/** A Redis URL whose path, when there is one, is a database index. */
export function parseRedisUrl(value: unknown): string {
  const expected = "a Redis URL redis://[:password@]host:port/db (or rediss://)";
  const url = parseUrl(value, ["redis:", "rediss:"], expected);
  const db = url.pathname.replace(/^\//, "");
  if (db !== "" && !/^\d+$/.test(db)) {
    throw new Expected(`${expected}, the path must be a database index`, false);
  }
  return (value as string).trim();
}

/** An S3-compatible service URL: https://, or http:// for a loopback host; no trailing slash. */
export function parseS3Endpoint(value: unknown): string {
  const url = parseUrl(value, ["https:", "http:"], "an https:// URL");
  if (url.protocol === "http:" && !isLoopbackHost(url.hostname)) {
    throw new Expected("an https:// URL (http:// is allowed only for loopback hosts)", false);
  }
  return url.origin + url.pathname.replace(/\/+$/, "");
}

/** One of LEDGER_MODES: `"null"`, `"debug"` or `"file"`. */
export function parseLedgerMode(value: unknown): LedgerMode {
  const mode = LEDGER_MODES.find((m) => m === value);
  if (mode !== undefined) return mode;
  const names = LEDGER_MODES.map((m) => JSON.stringify(m));
  throw new Expected(`${names.slice(0, -1).join(", ")} or ${names.at(-1)}`);
}

/** A bearer token: no white space, and not the sample's placeholder. */
export function parseToken(value: unknown): string {
  const text = parseNonEmptyString(value, "a non-empty token");
  // The original's sample value would otherwise become a publicly known credential.
  if (text === "replace-with-secret") {
    throw new Expected("a real secret, not the sample placeholder");
  }
  if (/\s/.test(text)) throw new Expected("a token without whitespace", false);
  // The token travels as `Authorization: Bearer <token>` (GET /metrics, /api/v1/…), whose
  // grammar is RFC 6750's b64token: a token outside it could be configured but never presented.
  if (!/^[A-Za-z0-9\-._~+/]+=*$/.test(text)) {
    throw new Expected(
      "a token of letters, digits and - . _ ~ + / (optionally ending in =), as a bearer token must be",
      false,
    );
  }
  return text;
}

/** Origins as an array of strings or "a,b": each `scheme://host[:port]` of http(s), or "*". */
export function parseOrigins(value: unknown): string[] {
  const items = typeof value === "string"
    ? value.split(",").map((o) => o.trim()).filter((o) => o !== "")
    : value;
  if (!Array.isArray(items)) {
    throw new Expected('an array of origins like "https://chat.example.org", or "*"');
  }
  return items.map((item, i) => {
    if (item === "*") return item;
    let url: URL | null = null;
    try {
      url = typeof item === "string" ? new URL(item) : null;
    } catch {
      url = null;
    }
    if (
      url === null || (url.protocol !== "http:" && url.protocol !== "https:") ||
      url.pathname !== "/" || url.search !== "" || url.hash !== "" || url.username !== ""
    ) {
      throw new Invalid(
        `origin ${i + 1}: expected scheme://host[:port] (http or https, no path), got ` +
          JSON.stringify(item),
      );
    }
    return url.origin;
  });
}

/** Peers as an array of tables {domain, endpoint, public_key}, or "domain,endpoint,hexkey;…". */
export function parsePeers(value: unknown, ctx: ParseContext): StaticPeer[] {
  const peers: StaticPeer[] = [];
  if (typeof value === "string") {
    const entries = value.split(";").map((e) => e.trim()).filter((e) => e !== "");
    entries.forEach((entry, i) => {
      const parts = entry.split(",").map((p) => p.trim());
      if (parts.length !== 3) {
        throw new Invalid(
          `peer ${i + 1}: expected "domain,endpoint,hexkey" (three comma-separated fields), ` +
            `got ${parts.length} fields`,
        );
      }
      peers.push(parsePeer(parts[0], parts[1], parts[2], `peer ${i + 1}`, ctx.domain));
    });
  } else if (Array.isArray(value)) {
    value.forEach((item, i) => {
      const label = `peer ${i + 1}`;
      if (!isTable(item)) {
        throw new Invalid(`${label}: expected a table {domain, endpoint, public_key}`);
      }
      for (const key of Object.keys(item)) {
        if (!["domain", "endpoint", "public_key"].includes(key)) {
          throw new Invalid(
            `${label}: unknown key "${key}" (known: domain, endpoint, public_key)`,
          );
        }
      }
      peers.push(parsePeer(item.domain, item.endpoint, item.public_key, label, ctx.domain));
    });
  } else {
    throw new Expected(
      'an array of {domain, endpoint, public_key} tables or "domain,endpoint,hexkey;…"',
    );
  }
  const seen = new Set<string>();
  for (const peer of peers) {
    if (seen.has(peer.domain)) {
      throw new Invalid(`peer domain "${peer.domain}" appears twice; list each peer once`);
    }
    seen.add(peer.domain);
  }
  return peers;
}

function parsePeer(
  domain: unknown,
  endpoint: unknown,
  publicKey: unknown,
  label: string,
  ownDomain: string,
): StaticPeer {
  let peerDomain: string;
  try {
    peerDomain = parseDomain(domain);
  } catch {
    throw new Invalid(`${label}: domain must be a domain name, got ${describeValue(domain)}`);
  }
  if (peerDomain === ownDomain) {
    throw new Invalid(`${label}: domain "${peerDomain}" is this server's own domain`);
  }
  let url: URL;
  try {
    url = parseUrl(endpoint, ["https:", "http:"], "an https:// URL");
  } catch {
    throw new Invalid(`${label}: endpoint must be an https:// URL, got ${describeValue(endpoint)}`);
  }
  if (url.protocol === "http:" && !isLoopbackHost(url.hostname)) {
    throw new Invalid(
      `${label}: endpoint must use https:// (http:// is allowed only for loopback hosts), got ` +
        describeValue(endpoint),
    );
  }
  let key: Uint8Array;
  try {
    key = parseKey32(publicKey);
  } catch {
    throw new Invalid(`${label}: public_key must be 64 hex characters (an Ed25519 public key)`);
  }
  return { domain: peerDomain, endpoint: (endpoint as string).trim(), publicKey: key };
}
