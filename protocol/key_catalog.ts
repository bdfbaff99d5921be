/**
 * The server key catalog (docs/PROTOCOL.md "Server key catalog"): the Noise static keys a server
 * accepts, signed with its Ed25519 federation key. Served at `GET /.well-known/commucat` and
 * announced to connected clients (an ACK on channel 0 `{"key_catalog": catalog}`); a client
 * accepts one only when it is signed by the federation key it already trusts.
 *
 * Pure code shared by the server (server/noise_keys.ts signs) and the SDK (client/sdk.ts checks).
 *
 * @module
 */
import { ed25519 } from "@noble/curves/ed25519.js";
import { bytesToHex, hexToBytes } from "./hex.ts";

export const CATALOG_PATH = "/.well-known/commucat";
export const CATALOG_FORMAT = "commucat-key-catalog/1";

/** Where a key stands in the rotation. */
export type KeyStatus = "current" | "next" | "previous";

export interface KeyCatalogBody {
  format: typeof CATALOG_FORMAT;
  domain: string;
  issued_at: string;
  /** Ed25519 public key (hex) the catalog is signed with. */
  federation_key: string;
  keys: { public_key: string; status: KeyStatus; not_after: string | null }[];
}

export interface KeyCatalog {
  body: KeyCatalogBody;
  /** Ed25519 over canonicalJson(body). */
  signature: string;
}

/** JSON with sorted keys at every level: the bytes the catalog signature covers. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const o = value as Record<string, unknown>;
    return `{${
      Object.keys(o).filter((k) => o[k] !== undefined).sort()
        .map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(",")
    }}`;
  }
  return JSON.stringify(value);
}

/** Signs a catalog body with a 32-byte Ed25519 secret key. */
export function signKeyCatalog(body: KeyCatalogBody, secretKey: Uint8Array): KeyCatalog {
  const signature = ed25519.sign(new TextEncoder().encode(canonicalJson(body)), secretKey);
  return { body, signature: bytesToHex(signature) };
}

const HEX32 = /^[0-9a-f]{64}$/;
const STATUSES: readonly string[] = ["current", "next", "previous"];

/**
 * Checks a catalog against a federation key the checker already trusts; returns its body or
 * throws saying what is wrong (shape, signer, signature, keys).
 */
export function verifyKeyCatalog(catalog: unknown, trustedKey: Uint8Array): KeyCatalogBody {
  const c = catalog as KeyCatalog;
  if (
    typeof c !== "object" || c === null || typeof c.body !== "object" || c.body === null ||
    c.body.format !== CATALOG_FORMAT || typeof c.signature !== "string" ||
    !/^[0-9a-f]{128}$/.test(c.signature) || !Array.isArray(c.body.keys)
  ) {
    throw new Error(`not a ${CATALOG_FORMAT} catalog`);
  }
  if (c.body.federation_key !== bytesToHex(trustedKey)) {
    throw new Error("the catalog is signed by another federation key than the trusted one");
  }
  let ok = false;
  try {
    ok = ed25519.verify(
      hexToBytes(c.signature),
      new TextEncoder().encode(canonicalJson(c.body)),
      trustedKey,
    );
  } catch {
    ok = false;
  }
  if (!ok) throw new Error("the catalog's signature does not verify");
  const keys = c.body.keys;
  if (
    !keys.every((k) =>
      typeof k === "object" && k !== null && typeof k.public_key === "string" &&
      HEX32.test(k.public_key) && STATUSES.includes(k.status)
    ) || keys.filter((k) => k.status === "current").length !== 1
  ) {
    throw new Error("the catalog's keys are malformed (exactly one current key, hex public keys)");
  }
  if (typeof c.body.issued_at !== "string" || Number.isNaN(Date.parse(c.body.issued_at))) {
    throw new Error("the catalog's issued_at is not a time");
  }
  return c.body;
}
