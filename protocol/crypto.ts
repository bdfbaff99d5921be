/**
 * Primitive backends for Noise (X25519, ChaCha20-Poly1305, BLAKE2s, HMAC-BLAKE2s) and for
 * federation signing (Ed25519, BLAKE3).
 *
 * Every primitive comes from an audited library: the noble packages, or `node:crypto` or
 * `hash-wasm` (BLAKE2s and its HMAC, WebAssembly) where they are measurably faster under Deno and
 * give byte-identical output (tests check they give the same bytes; `bench/noise.ts` prints
 * which one is in use and compares them). Nothing here is a hand-written primitive: this module
 * only adapts library calls to one small interface.
 *
 * No secret is cached globally: a private key handle lives only as long as the object that owns
 * it (a handshake, a caller's keypair). The one shared object is hash-wasm's hasher, whose
 * WebAssembly memory holds the last input hashed (a chaining key, say) until the next hash
 * overwrites it, as freed memory of the other libraries may.
 *
 * @module
 */
import type * as NodeCrypto from "node:crypto";
import type * as NodeBufferModule from "node:buffer";
import { ed25519, x25519 } from "@noble/curves/ed25519.js";
import { chacha20poly1305 } from "@noble/ciphers/chacha.js";
import { blake2s } from "@noble/hashes/blake2.js";
import { blake3 } from "@noble/hashes/blake3.js";
import { hmac as nobleHmac } from "@noble/hashes/hmac.js";
import { equalBytes } from "@noble/ciphers/utils.js";
import { hexToBytes } from "./hex.ts";
import { ProblemError } from "./errors.ts";

/**
 * `node:crypto` where the runtime has it (Deno, Node), looked up at run time rather than
 * imported so this module also loads in a browser, where every primitive comes from noble.
 */
const builtin = (id: string) =>
  (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process
    ?.getBuiltinModule?.(id);
const nodeCrypto = builtin("node:crypto") as typeof NodeCrypto;
const Buffer = (builtin("node:buffer") as typeof NodeBufferModule | undefined)
  ?.Buffer as typeof NodeBufferModule.Buffer;

/** True when `node:crypto` is present (Deno, Node) and the native backends can be used. */
export const hasNodeCrypto: boolean = nodeCrypto !== undefined;

/** An X25519 (or Ed25519) key pair as raw 32-byte keys. */
export type Keypair = { privateKey: Uint8Array; publicKey: Uint8Array };

/** Length of an X25519 key and of a DH output (Noise DHLEN). */
export const DHLEN = 32;
/** Length of a BLAKE2s digest (Noise HASHLEN). */
export const HASHLEN = 32;
/** Length of the ChaCha20-Poly1305 authentication tag. */
export const TAGLEN = 16;

/** Raised when an AEAD ciphertext does not authenticate. */
export class DecryptError extends ProblemError {
  constructor(message = "decryption failed: ciphertext or associated data was altered") {
    super("Decrypt Failed", 400, message, { fatal: true });
    this.name = "DecryptError";
  }
}

/** Raised when a DH input is invalid (wrong length, or a low-order point giving zero). */
export class InvalidKeyError extends ProblemError {
  constructor(message: string) {
    super("Invalid Key", 400, message);
    this.name = "InvalidKeyError";
  }
}

/**
 * An X25519 private key in the form its backend computes with fastest (for `node:crypto`, a
 * KeyObject built once). Owned by whoever created it; never stored globally.
 */
export interface DhKey {
  /** The raw 32-byte public key. */
  readonly publicKey: Uint8Array;
  /** The raw 32-byte private key (exported on demand). */
  privateKey(): Uint8Array;
}

/**
 * A remote X25519 public key that a backend may prepare once (for `node:crypto`, a KeyObject
 * built on first use) and reuse for every DH with it during one handshake. Public data only.
 */
export class RemoteKey {
  /** The raw 32-byte public key (never modified after construction). */
  readonly publicKey: Uint8Array;
  /** The backend's prepared form, set by the backend on first use. */
  prepared: unknown = undefined;
  constructor(publicKey: Uint8Array) {
    this.publicKey = publicKey;
  }
}

/** The X25519 part of a backend. */
export interface X25519Impl {
  readonly name: string;
  /** A fresh random key pair, kept in the backend's fast form. */
  generate(): DhKey;
  /** Wraps a raw private key (and its public key when already known, to skip recomputing it). */
  fromPrivate(privateKey: Uint8Array, publicKey?: Uint8Array): DhKey;
  /**
   * The X25519 shared secret of `key` and a raw 32-byte public key, or a {@link RemoteKey}
   * (prepared once, then reused by later calls with the same object).
   */
  dh(key: DhKey, publicKey: Uint8Array | RemoteKey): Uint8Array;
}

/** The ChaCha20-Poly1305 part of a backend (IETF variant, 12-byte nonce, 16-byte tag). */
export interface AeadImpl {
  readonly name: string;
  /** Returns ciphertext ‖ tag. */
  encrypt(key: Uint8Array, nonce: Uint8Array, ad: Uint8Array, plaintext: Uint8Array): Uint8Array;
  /** Writes ciphertext ‖ tag into `out` at `offset` (plaintext.length + 16 bytes). */
  encryptInto(
    key: Uint8Array,
    nonce: Uint8Array,
    ad: Uint8Array,
    plaintext: Uint8Array,
    out: Uint8Array,
    offset: number,
  ): void;
  /** Returns the plaintext; throws {@link DecryptError} when the tag does not verify. */
  decrypt(key: Uint8Array, nonce: Uint8Array, ad: Uint8Array, ciphertext: Uint8Array): Uint8Array;
}

/** The BLAKE2s-256 part of a backend. */
export interface HashImpl {
  readonly name: string;
  /** BLAKE2s-256 of `a ‖ b` (b optional), without concatenating. */
  hash(a: Uint8Array, b?: Uint8Array): Uint8Array;
}

/** The HMAC-BLAKE2s part of a backend. */
export interface HmacImpl {
  readonly name: string;
  /** HMAC-BLAKE2s(key, a ‖ b) (b optional). */
  hmac(key: Uint8Array, a: Uint8Array, b?: Uint8Array): Uint8Array;
  /**
   * Optional: HMAC-BLAKE2s under one key set up once, for several MACs under it (HKDF's
   * outputs). Other hash calls may come between two calls of the function.
   */
  keyed?(key: Uint8Array): (a: Uint8Array, b?: Uint8Array) => Uint8Array;
}

/** The Ed25519 part of a backend (RFC 8032, deterministic signatures). */
export interface Ed25519Impl {
  readonly name: string;
  publicKeyOf(secretKey: Uint8Array): Uint8Array;
  sign(message: Uint8Array, secretKey: Uint8Array): Uint8Array;
  /** Returns false for any invalid input, never throws. */
  verify(signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): boolean;
}

/**
 * The primitives Noise and federation need, with the name of the library behind each.
 * `generateKeypair`, `publicKeyOf`, `dh`, `aeadEncrypt`, `aeadDecrypt`, `hash` and `hmac` work
 * on raw bytes; the `x25519`/`aead` members expose the fast forms used by the state machine.
 */
export interface CryptoBackend {
  readonly name: string;
  readonly x25519: X25519Impl;
  readonly aead: AeadImpl;
  readonly blake2s: HashImpl;
  readonly hmacBlake2s: HmacImpl;
  readonly ed25519: Ed25519Impl;
  generateKeypair(): Keypair;
  publicKeyOf(privateKey: Uint8Array): Uint8Array;
  dh(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array;
  aeadEncrypt(
    key: Uint8Array,
    nonce: Uint8Array,
    ad: Uint8Array,
    plaintext: Uint8Array,
  ): Uint8Array;
  aeadDecrypt(
    key: Uint8Array,
    nonce: Uint8Array,
    ad: Uint8Array,
    ciphertext: Uint8Array,
  ): Uint8Array;
  hash(a: Uint8Array, b?: Uint8Array): Uint8Array;
  hmac(key: Uint8Array, a: Uint8Array, b?: Uint8Array): Uint8Array;
}

const EMPTY = new Uint8Array(0);
// A placeholder public key for `dh(privateKey, …)`, where the own public key is never needed.
const EMPTY_PUB = new Uint8Array(DHLEN);

function checkLength(bytes: Uint8Array, length: number, what: string): void {
  if (!(bytes instanceof Uint8Array) || bytes.length !== length) {
    const got = bytes instanceof Uint8Array ? `${bytes.length} bytes` : typeof bytes;
    throw new InvalidKeyError(`${what} must be ${length} bytes, got ${got}`);
  }
}

function isAllZero(bytes: Uint8Array): boolean {
  let acc = 0;
  for (let i = 0; i < bytes.length; i++) acc |= bytes[i];
  return acc === 0;
}

/** A plain Uint8Array over a node Buffer's bytes (no copy), so callers see one type. */
function view(buf: Uint8Array): Uint8Array {
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** Copies into a plain Uint8Array so callers never hold a pooled or shared Buffer. */
function plain(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes);
}

// ---------------------------------------------------------------------------------------------
// noble

class NobleDhKey implements DhKey {
  readonly #privateKey: Uint8Array;
  readonly publicKey: Uint8Array;
  constructor(privateKey: Uint8Array, publicKey?: Uint8Array) {
    checkLength(privateKey, DHLEN, "X25519 private key");
    this.#privateKey = plain(privateKey);
    this.publicKey = publicKey ? plain(publicKey) : x25519.getPublicKey(privateKey);
  }
  privateKey(): Uint8Array {
    return plain(this.#privateKey);
  }
  /** Internal: the raw key for the noble DH call (not a copy). */
  raw(): Uint8Array {
    return this.#privateKey;
  }
}

/** X25519 from @noble/curves. */
export const nobleX25519: X25519Impl = {
  name: "@noble/curves x25519",
  generate: () => new NobleDhKey(x25519.utils.randomSecretKey()),
  fromPrivate: (privateKey, publicKey) => new NobleDhKey(privateKey, publicKey),
  dh(key, remote) {
    const publicKey = remote instanceof RemoteKey ? remote.publicKey : remote;
    checkLength(publicKey, DHLEN, "X25519 public key");
    const raw = key instanceof NobleDhKey ? key.raw() : key.privateKey();
    let out: Uint8Array;
    try {
      out = x25519.getSharedSecret(raw, publicKey);
    } catch {
      throw new InvalidKeyError("X25519 public key is a low-order point (shared secret is zero)");
    }
    if (isAllZero(out)) {
      throw new InvalidKeyError("X25519 public key is a low-order point (shared secret is zero)");
    }
    return out;
  },
};

/** ChaCha20-Poly1305 from @noble/ciphers. */
export const nobleAead: AeadImpl = {
  name: "@noble/ciphers chacha20poly1305",
  encrypt: (key, nonce, ad, plaintext) =>
    chacha20poly1305(key, nonce, ad.length ? ad : undefined).encrypt(plaintext),
  encryptInto(key, nonce, ad, plaintext, out, offset) {
    chacha20poly1305(key, nonce, ad.length ? ad : undefined).encrypt(
      plaintext,
      out.subarray(offset, offset + plaintext.length + TAGLEN),
    );
  },
  decrypt(key, nonce, ad, ciphertext) {
    if (ciphertext.length < TAGLEN) throw new DecryptError("ciphertext shorter than the tag");
    try {
      return chacha20poly1305(key, nonce, ad.length ? ad : undefined).decrypt(ciphertext);
    } catch {
      throw new DecryptError();
    }
  },
};

/** BLAKE2s-256 from @noble/hashes. */
export const nobleBlake2s: HashImpl = {
  name: "@noble/hashes blake2s",
  hash(a, b) {
    const h = blake2s.create().update(a);
    if (b) h.update(b);
    return h.digest();
  },
};

/** HMAC from @noble/hashes over noble's BLAKE2s. */
export const nobleHmacBlake2s: HmacImpl = {
  name: "@noble/hashes hmac(blake2s)",
  hmac(key, a, b) {
    const m = nobleHmac.create(blake2s, key).update(a);
    if (b) m.update(b);
    return m.digest();
  },
};

/** Ed25519 from @noble/curves. */
export const nobleEd25519: Ed25519Impl = {
  name: "@noble/curves ed25519",
  publicKeyOf(secretKey) {
    checkLength(secretKey, 32, "Ed25519 secret key");
    return ed25519.getPublicKey(secretKey);
  },
  sign(message, secretKey) {
    checkLength(secretKey, 32, "Ed25519 secret key");
    return ed25519.sign(message, secretKey);
  },
  verify(signature, message, publicKey) {
    if (!(signature instanceof Uint8Array) || signature.length !== 64) return false;
    if (!(publicKey instanceof Uint8Array) || publicKey.length !== 32) return false;
    try {
      return ed25519.verify(signature, message, publicKey);
    } catch {
      return false;
    }
  },
};

// ---------------------------------------------------------------------------------------------
// node:crypto

// ASN.1 prefixes that turn a raw 32-byte key into PKCS#8 / SPKI DER; importing DER is the
// fastest way to get a KeyObject from raw bytes here (faster than JWK, measured).
const X25519_PKCS8 = hexToBytes("302e020100300506032b656e04220420");
const X25519_SPKI = hexToBytes("302a300506032b656e032100");
const ED25519_PKCS8 = hexToBytes("302e020100300506032b657004220420");
const ED25519_SPKI = hexToBytes("302a300506032b6570032100");

function der(prefix: Uint8Array, key: Uint8Array): NodeBufferModule.Buffer {
  const out = Buffer.allocUnsafe(prefix.length + key.length);
  out.set(prefix, 0);
  out.set(key, prefix.length);
  return out;
}

function x25519Public(publicKey: Uint8Array): NodeCrypto.KeyObject {
  checkLength(publicKey, DHLEN, "X25519 public key");
  return nodeCrypto.createPublicKey({
    key: der(X25519_SPKI, publicKey),
    format: "der",
    type: "spki",
  });
}

class NodeDhKey implements DhKey {
  readonly publicKey: Uint8Array;
  readonly handle: NodeCrypto.KeyObject;
  constructor(handle: NodeCrypto.KeyObject, publicKey: Uint8Array) {
    this.handle = handle;
    this.publicKey = publicKey;
  }
  privateKey(): Uint8Array {
    const d = this.handle.export({ format: "der", type: "pkcs8" });
    return plain(d.subarray(d.length - DHLEN));
  }
}

function nodePublicOf(key: NodeCrypto.KeyObject): Uint8Array {
  const spki = nodeCrypto.createPublicKey(key).export({ format: "der", type: "spki" });
  return plain(spki.subarray(spki.length - DHLEN));
}

/** X25519 from node:crypto (KeyObjects imported from DER). */
export const nodeX25519: X25519Impl = {
  name: "node:crypto x25519",
  generate() {
    const { privateKey, publicKey } = nodeCrypto.generateKeyPairSync("x25519");
    const spki = publicKey.export({ format: "der", type: "spki" });
    return new NodeDhKey(privateKey, plain(spki.subarray(spki.length - DHLEN)));
  },
  fromPrivate(privateKey, publicKey) {
    checkLength(privateKey, DHLEN, "X25519 private key");
    const handle = nodeCrypto.createPrivateKey({
      key: der(X25519_PKCS8, privateKey),
      format: "der",
      type: "pkcs8",
    });
    if (publicKey !== undefined) checkLength(publicKey, DHLEN, "X25519 public key");
    return new NodeDhKey(handle, publicKey ? plain(publicKey) : nodePublicOf(handle));
  },
  dh(key, remote) {
    // A key from another backend is imported once for this call.
    const handle = key instanceof NodeDhKey
      ? key.handle
      : (nodeX25519.fromPrivate(key.privateKey(), key.publicKey) as NodeDhKey).handle;
    let pub: NodeCrypto.KeyObject;
    if (remote instanceof RemoteKey) {
      // Import once per remote key: a responder uses the initiator's e (and, for IK, s) twice.
      if (!(remote.prepared instanceof nodeCrypto.KeyObject)) {
        remote.prepared = x25519Public(remote.publicKey);
      }
      pub = remote.prepared as NodeCrypto.KeyObject;
    } else {
      pub = x25519Public(remote);
    }
    let out: Uint8Array;
    try {
      out = view(nodeCrypto.diffieHellman({ privateKey: handle, publicKey: pub }));
    } catch {
      throw new InvalidKeyError("X25519 public key is a low-order point (shared secret is zero)");
    }
    if (isAllZero(out)) {
      throw new InvalidKeyError("X25519 public key is a low-order point (shared secret is zero)");
    }
    return out;
  },
};

const AEAD_OPTIONS = { authTagLength: TAGLEN } as const;

/** ChaCha20-Poly1305 from node:crypto. */
export const nodeAead: AeadImpl = {
  name: "node:crypto chacha20-poly1305",
  encrypt(key, nonce, ad, plaintext) {
    const out = new Uint8Array(plaintext.length + TAGLEN);
    nodeAead.encryptInto(key, nonce, ad, plaintext, out, 0);
    return out;
  },
  encryptInto(key, nonce, ad, plaintext, out, offset) {
    const c = nodeCrypto.createCipheriv("chacha20-poly1305", key, nonce, AEAD_OPTIONS);
    if (ad.length) c.setAAD(ad, { plaintextLength: plaintext.length });
    if (plaintext.length) out.set(c.update(plaintext), offset);
    c.final();
    out.set(c.getAuthTag(), offset + plaintext.length);
  },
  decrypt(key, nonce, ad, ciphertext) {
    if (ciphertext.length < TAGLEN) throw new DecryptError("ciphertext shorter than the tag");
    const bodyLength = ciphertext.length - TAGLEN;
    const d = nodeCrypto.createDecipheriv("chacha20-poly1305", key, nonce, AEAD_OPTIONS);
    if (ad.length) d.setAAD(ad, { plaintextLength: bodyLength });
    d.setAuthTag(ciphertext.subarray(bodyLength));
    try {
      const body = bodyLength ? d.update(ciphertext.subarray(0, bodyLength)) : EMPTY;
      d.final();
      return view(body);
    } catch {
      throw new DecryptError();
    }
  },
};

/** BLAKE2s-256 from node:crypto (`blake2s256`). */
export const nodeBlake2s: HashImpl = {
  name: "node:crypto blake2s256",
  hash(a, b) {
    const h = nodeCrypto.createHash("blake2s256").update(a);
    if (b) h.update(b);
    return view(h.digest());
  },
};

/** HMAC-BLAKE2s from node:crypto. */
export const nodeHmacBlake2s: HmacImpl = {
  name: "node:crypto hmac(blake2s256)",
  hmac(key, a, b) {
    const m = nodeCrypto.createHmac("blake2s256", key).update(a);
    if (b) m.update(b);
    return view(m.digest());
  },
};

/**
 * node:crypto's BLAKE2s shaped as a noble hash, so noble's audited HMAC runs over the native
 * hash: an adapter only (update, digest and state copy are node's own calls).
 */
class NodeBlake2sForNoble {
  readonly blockLen = 64;
  readonly outputLen = HASHLEN;
  readonly canXOF = false;
  h: NodeCrypto.Hash;
  constructor(h?: NodeCrypto.Hash) {
    this.h = h ?? nodeCrypto.createHash("blake2s256");
  }
  update(data: Uint8Array): this {
    this.h.update(data);
    return this;
  }
  digestInto(out: Uint8Array): void {
    out.set(this.h.digest());
  }
  digest(): Uint8Array {
    return view(this.h.digest());
  }
  _cloneInto(to?: NodeBlake2sForNoble): NodeBlake2sForNoble {
    const copy = this.h.copy();
    if (to) {
      to.h = copy;
      return to;
    }
    return new NodeBlake2sForNoble(copy);
  }
  clone(): NodeBlake2sForNoble {
    return this._cloneInto();
  }
  destroy(): void {}
}
/** noble's HMAC over the noble-shaped BLAKE2s hashes `create` makes (an adapter's). */
function nobleHmacOver(
  name: string,
  create: () => { update(data: Uint8Array): { digest(): Uint8Array } },
): HmacImpl {
  const hash = Object.assign(
    (message: Uint8Array) => create().update(message).digest(),
    { blockLen: 64, outputLen: HASHLEN, create },
  );
  return {
    name,
    hmac(key, a, b) {
      // deno-lint-ignore no-explicit-any
      const m = nobleHmac.create(hash as any, key).update(a);
      if (b) m.update(b);
      return m.digest();
    },
  };
}

/** noble's HMAC over node:crypto's BLAKE2s (fewest per-call costs on 32-byte inputs). */
export const nobleHmacNodeBlake2s: HmacImpl = nobleHmacOver(
  "@noble/hashes hmac over node:crypto blake2s256",
  () => new NodeBlake2sForNoble(),
);

// ---------------------------------------------------------------------------------------------
// hash-wasm

/** The part of hash-wasm's API used here (tests check it against the package's own types). */
export interface HashWasmHasher {
  init(): HashWasmHasher;
  update(data: Uint8Array): HashWasmHasher;
  digest(outputType: "binary"): Uint8Array;
}
/** The functions of hash-wasm used here. */
export interface HashWasmApi {
  createBLAKE2s(bits?: number): Promise<HashWasmHasher>;
  createHMAC(hash: Promise<HashWasmHasher>, key: Uint8Array): Promise<HashWasmHasher>;
}

// Named through a variable so that bundlers leave hash-wasm out of the browser bundles, which
// never use it (deno.json maps the name to the pinned npm package).
const HASH_WASM = "hash-wasm";

/** hash-wasm, loaded only where `node:crypto` is; undefined in a browser or if it fails. */
const hashWasm: HashWasmApi | undefined = hasNodeCrypto
  ? await import(HASH_WASM).catch(() => undefined)
  : undefined;

/**
 * hash-wasm's BLAKE2s-256 (WebAssembly), one hasher per module instance, reused for every call:
 * its per-call cost is well under node:crypto's `createHash`. Only where `node:crypto` is (the
 * browser bundles keep noble: a page's Content-Security-Policy may refuse WebAssembly), and
 * undefined if WebAssembly cannot be instantiated. Calls are synchronous, so one hasher is never
 * used by two computations at once.
 */
const wasmHasher: HashWasmHasher | undefined = hashWasm
  ? await hashWasm.createBLAKE2s(256).catch(() => undefined)
  : undefined;

/** True when hash-wasm's BLAKE2s is available (see {@link wasmBlake2s}). */
export const hasWasmBlake2s: boolean = wasmHasher !== undefined;

/** BLAKE2s-256 from hash-wasm (WebAssembly). */
export const wasmBlake2s: HashImpl = {
  name: "hash-wasm blake2s",
  hash(a, b) {
    const h = wasmHasher!;
    h.init();
    h.update(a);
    if (b) h.update(b);
    return h.digest("binary");
  },
};

/**
 * hash-wasm's BLAKE2s shaped as a noble hash, so noble's audited HMAC runs over it. noble's HMAC
 * keeps an inner and an outer hash open at once while there is one WebAssembly hasher, so this
 * adapter collects the (small) input and hashes it in one go at digest time: an adapter only.
 */
class WasmBlake2sForNoble {
  readonly blockLen = 64;
  readonly outputLen = HASHLEN;
  readonly canXOF = false;
  buf: Uint8Array;
  len = 0;
  constructor(capacity = 128) {
    this.buf = new Uint8Array(capacity);
  }
  update(data: Uint8Array): this {
    const need = this.len + data.length;
    if (need > this.buf.length) {
      const grown = new Uint8Array(Math.max(need, this.buf.length * 2));
      grown.set(this.buf.subarray(0, this.len));
      this.buf.fill(0);
      this.buf = grown;
    }
    this.buf.set(data, this.len);
    this.len = need;
    return this;
  }
  digestInto(out: Uint8Array): void {
    out.set(this.digest());
  }
  digest(): Uint8Array {
    const h = wasmHasher!;
    h.init();
    h.update(this.buf.subarray(0, this.len));
    this.destroy();
    return h.digest("binary");
  }
  _cloneInto(to?: WasmBlake2sForNoble): WasmBlake2sForNoble {
    const copy = to ?? new WasmBlake2sForNoble(this.buf.length);
    copy.len = 0;
    copy.update(this.buf.subarray(0, this.len));
    return copy;
  }
  clone(): WasmBlake2sForNoble {
    return this._cloneInto();
  }
  destroy(): void {
    this.buf.fill(0, 0, this.len);
    this.len = 0;
  }
}
/** noble's HMAC over hash-wasm's BLAKE2s. */
export const nobleHmacWasmBlake2s: HmacImpl = nobleHmacOver(
  "@noble/hashes hmac over hash-wasm blake2s",
  () => new WasmBlake2sForNoble(),
);

/**
 * hash-wasm's own HMAC over the module's BLAKE2s hasher. `createHMAC` takes the hasher as a
 * promise and keys it in the promise's `then`; given a thenable that calls back at once, it
 * returns the keyed HMAC synchronously (checked at start-up: {@link hasWasmHmac}).
 */
function wasmHmacOf(key: Uint8Array): HashWasmHasher {
  const ready = { then: (use: (h: HashWasmHasher) => HashWasmHasher) => use(wasmHasher!) };
  return hashWasm!.createHMAC(
    ready as unknown as Promise<HashWasmHasher>,
    key,
  ) as unknown as HashWasmHasher;
}

function wasmKeyed(key: Uint8Array): (a: Uint8Array, b?: Uint8Array) => Uint8Array {
  const m = wasmHmacOf(key);
  return (a, b) => {
    // Restarts the shared hasher from this key's inner pad, whatever ran on it since.
    m.init();
    m.update(a);
    if (b) m.update(b);
    return m.digest("binary");
  };
}

/** True when hash-wasm's HMAC can be keyed synchronously here (see {@link wasmHmacBlake2s}). */
export const hasWasmHmac: boolean = (() => {
  if (!wasmHasher) return false;
  try {
    const m = wasmHmacOf(new Uint8Array(HASHLEN));
    return typeof m?.update === "function" && typeof m?.digest === "function";
  } catch {
    return false;
  }
})();

/** HMAC-BLAKE2s from hash-wasm (`createHMAC` over its BLAKE2s). */
export const wasmHmacBlake2s: HmacImpl = {
  name: "hash-wasm hmac(blake2s)",
  hmac: (key, a, b) => wasmKeyed(key)(a, b),
  keyed: wasmKeyed,
};

/** Ed25519 from node:crypto. */
export const nodeEd25519: Ed25519Impl = {
  name: "node:crypto ed25519",
  publicKeyOf(secretKey) {
    checkLength(secretKey, 32, "Ed25519 secret key");
    const priv = nodeCrypto.createPrivateKey({
      key: der(ED25519_PKCS8, secretKey),
      format: "der",
      type: "pkcs8",
    });
    const spki = nodeCrypto.createPublicKey(priv).export({ format: "der", type: "spki" });
    return plain(spki.subarray(spki.length - 32));
  },
  sign(message, secretKey) {
    checkLength(secretKey, 32, "Ed25519 secret key");
    const priv = nodeCrypto.createPrivateKey({
      key: der(ED25519_PKCS8, secretKey),
      format: "der",
      type: "pkcs8",
    });
    return plain(nodeCrypto.sign(null, message, priv));
  },
  verify(signature, message, publicKey) {
    if (!(signature instanceof Uint8Array) || signature.length !== 64) return false;
    if (!(publicKey instanceof Uint8Array) || publicKey.length !== 32) return false;
    try {
      const pub = nodeCrypto.createPublicKey({
        key: der(ED25519_SPKI, publicKey),
        format: "der",
        type: "spki",
      });
      return nodeCrypto.verify(null, message, pub, signature);
    } catch {
      return false;
    }
  },
};

// ---------------------------------------------------------------------------------------------
// composition

/** The parts a backend is made of. */
export interface BackendParts {
  x25519: X25519Impl;
  aead: AeadImpl;
  blake2s: HashImpl;
  hmacBlake2s: HmacImpl;
  ed25519: Ed25519Impl;
}

/** Builds a {@link CryptoBackend} from one implementation per primitive. */
export function makeBackend(name: string, parts: BackendParts): CryptoBackend {
  const { x25519: dh, aead, blake2s: h, hmacBlake2s: mac } = parts;
  return {
    name,
    ...parts,
    generateKeypair() {
      const k = dh.generate();
      return { privateKey: k.privateKey(), publicKey: plain(k.publicKey) };
    },
    publicKeyOf: (privateKey) => plain(dh.fromPrivate(privateKey).publicKey),
    dh: (privateKey, publicKey) => dh.dh(dh.fromPrivate(privateKey, EMPTY_PUB), publicKey),
    aeadEncrypt: (key, nonce, ad, plaintext) => aead.encrypt(key, nonce, ad, plaintext),
    aeadDecrypt: (key, nonce, ad, ciphertext) => aead.decrypt(key, nonce, ad, ciphertext),
    hash: (a, b) => h.hash(a, b),
    hmac: (key, a, b) => mac.hmac(key, a, b),
  };
}

/** Everything from the noble libraries (portable reference). */
export const nobleBackend: CryptoBackend = makeBackend("noble", {
  x25519: nobleX25519,
  aead: nobleAead,
  blake2s: nobleBlake2s,
  hmacBlake2s: nobleHmacBlake2s,
  ed25519: nobleEd25519,
});

/** Everything from node:crypto. */
export const nodeBackend: CryptoBackend = makeBackend("node", {
  x25519: nodeX25519,
  aead: nodeAead,
  blake2s: nodeBlake2s,
  hmacBlake2s: nodeHmacBlake2s,
  ed25519: nodeEd25519,
});

/**
 * The backend used by default: node:crypto for X25519, ChaCha20-Poly1305 and Ed25519 (several
 * times faster under Deno than noble, same bytes), and hash-wasm for BLAKE2s and for Noise's
 * HKDF (HMAC-BLAKE2s): a Noise handshake makes ~32 hash calls on 32–100-byte inputs, where
 * node:crypto's per-call cost dominates (a `createHash` and its native handle each). Falls back
 * to noble's HMAC over node:crypto's BLAKE2s when WebAssembly is unavailable. In a browser,
 * everything is noble. `bench/noise.ts` compares the choices.
 */
export const defaultBackend: CryptoBackend = hasNodeCrypto
  ? makeBackend("mixed", {
    x25519: nodeX25519,
    aead: nodeAead,
    blake2s: hasWasmBlake2s ? wasmBlake2s : nodeBlake2s,
    hmacBlake2s: hasWasmHmac
      ? wasmHmacBlake2s
      : hasWasmBlake2s
      ? nobleHmacWasmBlake2s
      : nobleHmacNodeBlake2s,
    ed25519: nodeEd25519,
  })
  : nobleBackend;

/**
 * Noise's HKDF (spec §4.3) over HMAC-BLAKE2s: returns 2 or 3 outputs of HASHLEN bytes.
 * A construction over the library HMAC, not a primitive.
 */
export function hkdf(
  backend: CryptoBackend,
  chainingKey: Uint8Array,
  inputKeyMaterial: Uint8Array,
  outputs: 2 | 3,
): Uint8Array[] {
  const mac = backend.hmacBlake2s;
  const tempKey = mac.hmac(chainingKey, inputKeyMaterial);
  const withTempKey = mac.keyed?.(tempKey) ??
    ((a: Uint8Array, b?: Uint8Array) => mac.hmac(tempKey, a, b));
  const out1 = withTempKey(ONE);
  const out2 = withTempKey(out1, TWO);
  if (outputs === 2) {
    tempKey.fill(0);
    return [out1, out2];
  }
  const out3 = withTempKey(out2, THREE);
  tempKey.fill(0);
  return [out1, out2, out3];
}
const ONE = new Uint8Array([1]);
const TWO = new Uint8Array([2]);
const THREE = new Uint8Array([3]);

/** BLAKE3-256 from @noble/hashes (federation digests and key derivation). */
export function blake3Hash(...parts: Uint8Array[]): Uint8Array {
  const h = blake3.create();
  for (const p of parts) h.update(p);
  return h.digest();
}

/** A random X25519 key pair from the default backend. */
export function generateKeypair(backend: CryptoBackend = defaultBackend): Keypair {
  return backend.generateKeypair();
}

/** The X25519 public key of a raw private key. */
export function publicKeyOf(
  privateKey: Uint8Array,
  backend: CryptoBackend = defaultBackend,
): Uint8Array {
  return backend.publicKeyOf(privateKey);
}

/**
 * Constant-time equality of two byte arrays (false when lengths differ): the one comparison
 * for keys, digests and MACs, on `node:crypto.timingSafeEqual`.
 */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  return nodeCrypto ? nodeCrypto.timingSafeEqual(a, b) : equalBytes(a, b);
}

/** Per-process key: both sides of {@link tokenMatches} are hashed to equal-length digests. */
const TOKEN_COMPARE_KEY = globalThis.crypto.getRandomValues(new Uint8Array(32));

/**
 * True when a presented secret (bearer token, admin token) equals the expected one, in time
 * that depends neither on where they differ nor on their lengths: both are HMAC'd under a
 * per-process key and the digests compared with {@link bytesEqual}.
 */
export function tokenMatches(presented: string, expected: string): boolean {
  const digest = (text: string) =>
    nodeCrypto.createHmac("sha256", TOKEN_COMPARE_KEY).update(text, "utf8").digest();
  return bytesEqual(digest(presented), digest(expected));
}
