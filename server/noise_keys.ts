/**
 * Server Noise key rotation: the static keys a server accepts handshakes to, and the key
 * catalog it publishes at `GET /.well-known/commucat`, signed with its Ed25519 federation key.
 *
 * `[crypto] noise_private` is the current key; `noise_next` (optional) is the key that will
 * replace it — announced in the catalog and already accepted, so clients that picked it up can
 * use it before the switch; `noise_previous` (optional) is the key it replaced, accepted until
 * `noise_previous_not_after` (the grace window). A handshake is answered with whichever accepted
 * key the client's first message was made for: the responder tries each in turn (Noise's first
 * message authenticates `es` with an AEAD tag, so a wrong key fails cleanly and costs one DH).
 */
import { ed25519, x25519 } from "@noble/curves/ed25519.js";
import { bytesToHex, hexToBytes } from "@noble/hashes/utils.js";
import { HandshakeState, importStaticKey, type PatternName } from "../protocol/noise.ts";
import type { DhKey } from "../protocol/crypto.ts";
import { federationKeypair } from "../protocol/federation.ts";
import type { Config } from "./config/mod.ts";

export const CATALOG_PATH = "/.well-known/commucat";
export const CATALOG_FORMAT = "commucat-key-catalog/1";

export interface StaticKey {
  privateKey: Uint8Array;
  publicKey: Uint8Array;
  status: "current" | "next" | "previous";
  /** Previous key only: no handshake to it after this time. */
  notAfter: Date | null;
}

/**
 * Each configured static key in the backend's fast form and its public key, computed once per
 * key (not per handshake) and held only as long as the config holding the key.
 */
const imported = new WeakMap<Uint8Array, DhKey>();
const publics = new WeakMap<Uint8Array, Uint8Array>();

function publicOf(privateKey: Uint8Array): Uint8Array {
  let pub = publics.get(privateKey);
  if (pub === undefined) {
    pub = x25519.getPublicKey(privateKey);
    publics.set(privateKey, pub);
  }
  return pub;
}

function fastKeyOf(key: StaticKey): DhKey {
  let fast = imported.get(key.privateKey);
  if (fast === undefined) {
    fast = importStaticKey({ privateKey: key.privateKey, publicKey: key.publicKey });
    imported.set(key.privateKey, fast);
  }
  return fast;
}

/** The keys a handshake may be made for now, current first. */
export function acceptedKeys(config: Config, now = new Date()): StaticKey[] {
  const c = config.crypto;
  const keys: StaticKey[] = [
    { privateKey: c.noisePrivate, publicKey: c.noisePublic, status: "current", notAfter: null },
  ];
  if (c.noiseNext) {
    keys.push({
      privateKey: c.noiseNext,
      publicKey: publicOf(c.noiseNext),
      status: "next",
      notAfter: null,
    });
  }
  if (c.noisePrevious && c.noisePreviousNotAfter && now < c.noisePreviousNotAfter) {
    keys.push({
      privateKey: c.noisePrevious,
      publicKey: publicOf(c.noisePrevious),
      status: "previous",
      notAfter: c.noisePreviousNotAfter,
    });
  }
  return keys;
}

/**
 * A responder HandshakeState that has read the client's first message, for whichever accepted
 * key it was made; throws the last key's error when none fits.
 */
export function respondToFirstMessage(
  config: Config,
  pattern: PatternName,
  message: Uint8Array,
  now = new Date(),
): { noise: HandshakeState; key: StaticKey } {
  const prologue = new TextEncoder().encode(config.crypto.prologue);
  let failure: unknown = null;
  for (const key of acceptedKeys(config, now)) {
    const noise = new HandshakeState({
      pattern,
      initiator: false,
      prologue,
      s: fastKeyOf(key),
    });
    try {
      noise.readMessage(message);
      return { noise, key };
    } catch (err) {
      failure = err;
    }
  }
  throw failure;
}

export interface KeyCatalogBody {
  format: typeof CATALOG_FORMAT;
  domain: string;
  issued_at: string;
  /** Ed25519 public key (hex) the catalog is signed with. */
  federation_key: string;
  keys: { public_key: string; status: StaticKey["status"]; not_after: string | null }[];
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

/** The signed catalog of this server's Noise keys (current, next, previous in its grace). */
export function keyCatalog(config: Config, now = new Date()): KeyCatalog {
  const { secretKey: secret, publicKey: federationKey } = federationKeypair(
    config.crypto.federationSeed,
  );
  const body: KeyCatalogBody = {
    format: CATALOG_FORMAT,
    domain: config.server.domain,
    issued_at: now.toISOString(),
    federation_key: bytesToHex(federationKey),
    keys: acceptedKeys(config, now).map((k) => ({
      public_key: bytesToHex(k.publicKey),
      status: k.status,
      not_after: k.notAfter?.toISOString() ?? null,
    })),
  };
  const signature = ed25519.sign(new TextEncoder().encode(canonicalJson(body)), secret);
  return { body, signature: bytesToHex(signature) };
}

/**
 * Checks a catalog against a federation key the checker already trusts; returns its body or
 * throws saying what is wrong.
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
  return c.body;
}
