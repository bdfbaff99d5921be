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
import { x25519 } from "@noble/curves/ed25519.js";
import { bytesToHex } from "@noble/hashes/utils.js";
import { HandshakeState, importStaticKey, type PatternName } from "../protocol/noise.ts";
import type { DhKey } from "../protocol/crypto.ts";
import { federationKeypair } from "../protocol/federation.ts";
import type { Config } from "./config/mod.ts";
import {
  CATALOG_FORMAT,
  type KeyCatalog,
  type KeyCatalogBody,
  type KeyStatus,
  signKeyCatalog,
} from "../protocol/key_catalog.ts";

export {
  canonicalJson,
  CATALOG_FORMAT,
  CATALOG_PATH,
  type KeyCatalog,
  type KeyCatalogBody,
  type KeyStatus,
  verifyKeyCatalog,
} from "../protocol/key_catalog.ts";

export interface StaticKey {
  privateKey: Uint8Array;
  publicKey: Uint8Array;
  status: KeyStatus;
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
  return signKeyCatalog(body, secret);
}
