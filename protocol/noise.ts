/**
 * The Noise Protocol Framework (revision 34) for `Noise_*_25519_ChaChaPoly_BLAKE2s`:
 * CipherState, SymmetricState and a HandshakeState generic over handshake patterns.
 *
 * Primitives come from `protocol/crypto.ts` (library backends only). CommuCat uses XK and IK
 * (ccp1.md §3); the other interactive fundamental patterns are here because the state machine is
 * generic and the shared test vectors cover NN, NK, KK and XX too. The one-way patterns N, K and
 * X (spec §7.4) seal a single message to a recipient's static key: the client's sealed envelopes
 * wrap content keys with X, and `rotate_key` proves a new device key with an X message
 * ({@link writeOneWayX} / {@link readOneWayX}).
 *
 * @module
 */
import { ProblemError } from "./errors.ts";
import {
  type CryptoBackend,
  DecryptError,
  defaultBackend,
  type DhKey,
  DHLEN,
  generateKeypair,
  HASHLEN,
  hkdf,
  InvalidKeyError,
  type Keypair,
  publicKeyOf,
  RemoteKey,
  TAGLEN,
} from "./crypto.ts";

export { generateKeypair, publicKeyOf };
export type { Keypair };

/** Largest Noise message, handshake or transport (spec §3). */
export const MAX_MESSAGE_LENGTH = 65535;
/** Largest transport plaintext: a message minus the 16-byte tag. */
export const MAX_PLAINTEXT_LENGTH = MAX_MESSAGE_LENGTH - TAGLEN;

/** What went wrong, for callers that map Noise failures to protocol errors. */
export type NoiseErrorCode =
  | "decrypt" // a ciphertext did not authenticate (tampering, wrong key, replay, wrong prologue)
  | "length" // a message is too long or too short
  | "nonce" // the nonce reached 2^64-1
  | "key" // a key is missing, malformed, or a low-order point
  | "state" // a method was called out of turn, or after a failure
  | "pattern"; // unknown handshake pattern

/** Every failure of this module. After one from a handshake, that handshake is unusable. */
export class NoiseError extends ProblemError {
  readonly code: NoiseErrorCode;
  constructor(code: NoiseErrorCode, message: string, options?: { cause?: unknown }) {
    super("Noise Failure", 400, message, { fatal: true, cause: options?.cause });
    this.name = "NoiseError";
    this.code = code;
  }
}

const EMPTY = new Uint8Array(0);
const TWO_32 = 0x1_0000_0000;

/**
 * A cipher key k and nonce n (spec §5.1). The nonce travels as 4 zero bytes ‖ n as 64-bit little
 * endian. A failed decrypt leaves the state unchanged (n is not incremented), as the spec says.
 */
/**
 * The 12-byte nonce block every CipherState fills right before its (synchronous) AEAD call:
 * one for all, since each of the many idle connections holds two CipherStates.
 */
const NONCE_BLOCK = new Uint8Array(12);

export class CipherState {
  readonly backend: CryptoBackend;
  #k: Uint8Array | null = null;
  // n as two 32-bit halves: a JS number cannot count to 2^64 - 1 exactly.
  #lo = 0;
  #hi = 0;

  constructor(key: Uint8Array | null = null, backend: CryptoBackend = defaultBackend) {
    this.backend = backend;
    this.initializeKey(key);
  }

  /** Sets k (or clears it with null) and resets n to 0. */
  initializeKey(key: Uint8Array | null): void {
    if (key !== null && key.length !== 32) {
      throw new NoiseError("key", `cipher key must be 32 bytes, got ${key.length}`);
    }
    this.#k?.fill(0);
    this.#k = key === null ? null : new Uint8Array(key);
    this.#lo = 0;
    this.#hi = 0;
  }

  /** True when a key is set (encryption is active). */
  hasKey(): boolean {
    return this.#k !== null;
  }

  /** Sets n (0 ≤ n < 2^64). */
  setNonce(n: bigint | number): void {
    const v = BigInt(n);
    if (v < 0n || v > 0xffff_ffff_ffff_ffffn) {
      throw new NoiseError("nonce", `nonce must be in [0, 2^64-1], got ${v}`);
    }
    this.#lo = Number(v & 0xffff_ffffn);
    this.#hi = Number(v >> 32n);
  }

  /** The next nonce n. */
  get nonce(): bigint {
    return (BigInt(this.#hi) << 32n) | BigInt(this.#lo);
  }

  /** Fills the 12-byte nonce block for n, refusing the reserved value 2^64-1. */
  #nonceBlock(): Uint8Array {
    if (this.#lo === 0xffff_ffff && this.#hi === 0xffff_ffff) {
      throw new NoiseError("nonce", "nonce exhausted (2^64-1 reached): rekey or start over");
    }
    const b = NONCE_BLOCK;
    const lo = this.#lo, hi = this.#hi;
    b[4] = lo & 0xff;
    b[5] = (lo >>> 8) & 0xff;
    b[6] = (lo >>> 16) & 0xff;
    b[7] = lo >>> 24;
    b[8] = hi & 0xff;
    b[9] = (hi >>> 8) & 0xff;
    b[10] = (hi >>> 16) & 0xff;
    b[11] = hi >>> 24;
    return b;
  }

  #advance(): void {
    if (++this.#lo === TWO_32) {
      this.#lo = 0;
      this.#hi++;
    }
  }

  /** ENCRYPT(k, n++, ad, plaintext), or the plaintext itself when no key is set. */
  encryptWithAd(ad: Uint8Array, plaintext: Uint8Array): Uint8Array {
    if (this.#k === null) return plaintext;
    checkPlaintext(plaintext.length);
    const out = this.backend.aead.encrypt(this.#k, this.#nonceBlock(), ad, plaintext);
    this.#advance();
    return out;
  }

  /**
   * Like {@link encryptWithAd} but writes ciphertext ‖ tag into `out` at `offset`; returns the
   * number of bytes written. Requires a key (used by the secure stream to build one buffer).
   */
  encryptWithAdInto(
    ad: Uint8Array,
    plaintext: Uint8Array,
    out: Uint8Array,
    offset: number,
  ): number {
    if (this.#k === null) throw new NoiseError("state", "cipher has no key");
    checkPlaintext(plaintext.length);
    this.backend.aead.encryptInto(this.#k, this.#nonceBlock(), ad, plaintext, out, offset);
    this.#advance();
    return plaintext.length + TAGLEN;
  }

  /**
   * DECRYPT(k, n, ad, ciphertext), incrementing n only on success; the ciphertext itself when no
   * key is set. Throws NoiseError("decrypt") when the tag does not verify.
   */
  decryptWithAd(ad: Uint8Array, ciphertext: Uint8Array): Uint8Array {
    if (this.#k === null) return ciphertext;
    if (ciphertext.length > MAX_MESSAGE_LENGTH) {
      throw new NoiseError(
        "length",
        `ciphertext of ${ciphertext.length} bytes exceeds ${MAX_MESSAGE_LENGTH}`,
      );
    }
    if (ciphertext.length < TAGLEN) {
      throw new NoiseError(
        "length",
        `ciphertext of ${ciphertext.length} bytes is shorter than the tag`,
      );
    }
    let out: Uint8Array;
    try {
      out = this.backend.aead.decrypt(this.#k, this.#nonceBlock(), ad, ciphertext);
    } catch (err) {
      if (err instanceof NoiseError) throw err;
      if (err instanceof DecryptError) {
        throw new NoiseError(
          "decrypt",
          `decryption failed at nonce ${this.nonce}: message altered, replayed or out of order, ` +
            "or keys/prologue differ",
        );
      }
      throw err;
    }
    this.#advance();
    return out;
  }

  /** Transport encryption with empty associated data. */
  encrypt(plaintext: Uint8Array): Uint8Array {
    if (this.#k === null) throw new NoiseError("state", "cipher has no key");
    return this.encryptWithAd(EMPTY, plaintext);
  }

  /** Transport decryption with empty associated data. */
  decrypt(ciphertext: Uint8Array): Uint8Array {
    if (this.#k === null) throw new NoiseError("state", "cipher has no key");
    return this.decryptWithAd(EMPTY, ciphertext);
  }

  /** k = REKEY(k): the first 32 bytes of ENCRYPT(k, 2^64-1, empty, 32 zero bytes). n is kept. */
  rekey(): void {
    if (this.#k === null) throw new NoiseError("state", "cipher has no key");
    const nonce = new Uint8Array(12);
    nonce.fill(0xff, 4);
    const out = this.backend.aead.encrypt(this.#k, nonce, EMPTY, new Uint8Array(32));
    this.#k.set(out.subarray(0, 32));
    out.fill(0);
  }

  /** Wipes the key; the state can no longer encrypt. */
  destroy(): void {
    this.#k?.fill(0);
    this.#k = null;
  }
}

function checkPlaintext(length: number): void {
  if (length > MAX_PLAINTEXT_LENGTH) {
    throw new NoiseError(
      "length",
      `plaintext of ${length} bytes exceeds ${MAX_PLAINTEXT_LENGTH} (message limit ${MAX_MESSAGE_LENGTH})`,
    );
  }
}

// h after InitializeSymmetric depends only on the (public) protocol name.
const INITIAL_HASH = new Map<string, Uint8Array>();

/** The chaining key ck, handshake hash h and a CipherState (spec §5.2). */
export class SymmetricState {
  readonly backend: CryptoBackend;
  readonly cipher: CipherState;
  #ck: Uint8Array;
  #h: Uint8Array;

  /** InitializeSymmetric(protocolName). */
  constructor(protocolName: string, backend: CryptoBackend = defaultBackend) {
    this.backend = backend;
    let h0 = INITIAL_HASH.get(protocolName);
    if (!h0) {
      const name = new TextEncoder().encode(protocolName);
      if (name.length <= HASHLEN) {
        h0 = new Uint8Array(HASHLEN);
        h0.set(name);
      } else {
        h0 = backend.blake2s.hash(name);
      }
      INITIAL_HASH.set(protocolName, h0);
    }
    this.#h = new Uint8Array(h0);
    this.#ck = new Uint8Array(h0);
    this.cipher = new CipherState(null, backend);
  }

  /** ck, temp_k = HKDF(ck, ikm, 2); InitializeKey(temp_k). */
  mixKey(inputKeyMaterial: Uint8Array): void {
    const [ck, tempK] = hkdf(this.backend, this.#ck, inputKeyMaterial, 2);
    this.#ck.fill(0);
    this.#ck = ck;
    this.cipher.initializeKey(tempK);
    tempK.fill(0);
  }

  /** h = HASH(h ‖ data). */
  mixHash(data: Uint8Array): void {
    this.#h = this.backend.blake2s.hash(this.#h, data);
  }

  /** ck, temp_h, temp_k = HKDF(ck, ikm, 3); MixHash(temp_h); InitializeKey(temp_k). */
  mixKeyAndHash(inputKeyMaterial: Uint8Array): void {
    const [ck, tempH, tempK] = hkdf(this.backend, this.#ck, inputKeyMaterial, 3);
    this.#ck.fill(0);
    this.#ck = ck;
    this.mixHash(tempH);
    this.cipher.initializeKey(tempK);
    tempK.fill(0);
  }

  /** A copy of h. */
  getHandshakeHash(): Uint8Array {
    return new Uint8Array(this.#h);
  }

  /** ciphertext = EncryptWithAd(h, plaintext); MixHash(ciphertext). */
  encryptAndHash(plaintext: Uint8Array): Uint8Array {
    const ct = this.cipher.encryptWithAd(this.#h, plaintext);
    this.mixHash(ct);
    return ct;
  }

  /** plaintext = DecryptWithAd(h, ciphertext); MixHash(ciphertext). */
  decryptAndHash(ciphertext: Uint8Array): Uint8Array {
    const pt = this.cipher.decryptWithAd(this.#h, ciphertext);
    this.mixHash(ciphertext);
    return pt;
  }

  /** The two transport CipherStates: [initiator→responder, responder→initiator]. */
  split(): [CipherState, CipherState] {
    const [k1, k2] = hkdf(this.backend, this.#ck, EMPTY, 2);
    const c1 = new CipherState(k1, this.backend);
    const c2 = new CipherState(k2, this.backend);
    k1.fill(0);
    k2.fill(0);
    this.#ck.fill(0);
    this.cipher.destroy();
    return [c1, c2];
  }
}

/** A message pattern token. */
export type Token = "e" | "s" | "ee" | "es" | "se" | "ss";

/** A handshake pattern: pre-messages and message token lists (first message initiator → responder). */
export interface PatternDefinition {
  readonly preInitiator: readonly ("e" | "s")[];
  readonly preResponder: readonly ("e" | "s")[];
  readonly messages: readonly (readonly Token[])[];
}

/**
 * The one-way patterns of spec §7.4 (one message, initiator → responder; the responder's static
 * key is known in advance) and the interactive fundamental patterns of spec §7.5.
 */
export const PATTERNS = {
  N: { preInitiator: [], preResponder: ["s"], messages: [["e", "es"]] },
  K: { preInitiator: ["s"], preResponder: ["s"], messages: [["e", "es", "ss"]] },
  X: { preInitiator: [], preResponder: ["s"], messages: [["e", "es", "s", "ss"]] },
  NN: { preInitiator: [], preResponder: [], messages: [["e"], ["e", "ee"]] },
  NK: { preInitiator: [], preResponder: ["s"], messages: [["e", "es"], ["e", "ee"]] },
  NX: { preInitiator: [], preResponder: [], messages: [["e"], ["e", "ee", "s", "es"]] },
  KN: { preInitiator: ["s"], preResponder: [], messages: [["e"], ["e", "ee", "se"]] },
  KK: {
    preInitiator: ["s"],
    preResponder: ["s"],
    messages: [["e", "es", "ss"], ["e", "ee", "se"]],
  },
  KX: {
    preInitiator: ["s"],
    preResponder: [],
    messages: [["e"], ["e", "ee", "se", "s", "es"]],
  },
  XN: { preInitiator: [], preResponder: [], messages: [["e"], ["e", "ee"], ["s", "se"]] },
  XK: {
    preInitiator: [],
    preResponder: ["s"],
    messages: [["e", "es"], ["e", "ee"], ["s", "se"]],
  },
  XX: {
    preInitiator: [],
    preResponder: [],
    messages: [["e"], ["e", "ee", "s", "es"], ["s", "se"]],
  },
  IN: { preInitiator: [], preResponder: [], messages: [["e", "s"], ["e", "ee", "se"]] },
  IK: {
    preInitiator: [],
    preResponder: ["s"],
    messages: [["e", "es", "s", "ss"], ["e", "ee", "se"]],
  },
  IX: {
    preInitiator: [],
    preResponder: [],
    messages: [["e", "s"], ["e", "ee", "se", "s", "es"]],
  },
} as const satisfies Record<string, PatternDefinition>;

/** Names of the supported handshake patterns. */
export type PatternName = keyof typeof PATTERNS;

/** The one-way patterns: after the handshake only the initiator sends. */
export const ONE_WAY_PATTERNS: ReadonlySet<PatternName> = new Set(["N", "K", "X"]);

/** A local key: raw bytes, or a backend key from `backend.x25519.fromPrivate` (no re-import). */
export type LocalKey = Keypair | DhKey;

/** Options of {@link HandshakeState}. */
export interface HandshakeOptions {
  pattern: PatternName;
  initiator: boolean;
  /** Bound into the handshake hash; both sides must use the same bytes. */
  prologue?: Uint8Array;
  /** Local static key pair (required when the pattern sends or pre-shares it). */
  s?: LocalKey;
  /** Local ephemeral key pair; only for deterministic tests (normally generated). */
  e?: LocalKey;
  /** Remote static public key known in advance (pre-message patterns: NK, KK, XK, IK, …). */
  rs?: Uint8Array;
  /** Remote ephemeral public key known in advance (only for patterns with an e pre-message). */
  re?: Uint8Array;
  backend?: CryptoBackend;
}

/**
 * Imports a long-lived static key pair once into the backend's fast form, for a server that runs
 * many handshakes with the same key (pass the result as `s`). The caller owns the result.
 */
export function importStaticKey(keypair: Keypair, backend: CryptoBackend = defaultBackend): DhKey {
  try {
    return backend.x25519.fromPrivate(keypair.privateKey, keypair.publicKey);
  } catch (err) {
    throw new NoiseError("key", `invalid static key: ${(err as Error).message}`);
  }
}

function isDhKey(k: LocalKey): k is DhKey {
  return typeof (k as DhKey).privateKey === "function";
}

/**
 * The handshake state machine (spec §5.3). Sides alternate: the initiator writes message 0, the
 * responder reads it and writes message 1, and so on. Any error while processing a message
 * leaves the handshake unusable (every later call throws); calling a method out of turn throws
 * and changes nothing.
 */
export class HandshakeState {
  readonly pattern: PatternName;
  readonly initiator: boolean;
  readonly protocolName: string;
  readonly backend: CryptoBackend;
  readonly #def: PatternDefinition;
  readonly #ss: SymmetricState;
  #s: DhKey | null;
  #e: DhKey | null;
  #presetE: DhKey | null;
  #rs: Uint8Array | null;
  #re: Uint8Array | null;
  // The remote keys in the backend's prepared form, built on first DH and reused after.
  #rsKey: RemoteKey | null = null;
  #reKey: RemoteKey | null = null;
  #index = 0;
  #failed: NoiseError | null = null;
  #split = false;

  constructor(options: HandshakeOptions) {
    const def: PatternDefinition | undefined = Object.hasOwn(PATTERNS, options.pattern)
      ? PATTERNS[options.pattern]
      : undefined;
    if (!def) {
      throw new NoiseError(
        "pattern",
        `unknown handshake pattern ${JSON.stringify(options.pattern)}; expected one of ${
          Object.keys(PATTERNS).join(", ")
        }`,
      );
    }
    this.pattern = options.pattern;
    this.initiator = options.initiator === true;
    this.backend = options.backend ?? defaultBackend;
    this.#def = def;
    this.protocolName = `Noise_${options.pattern}_25519_ChaChaPoly_BLAKE2s`;
    this.#s = options.s ? this.#importLocal(options.s, "s") : null;
    this.#presetE = options.e ? this.#importLocal(options.e, "e") : null;
    this.#e = null;
    this.#rs = options.rs ? checkPublic(options.rs, "rs") : null;
    this.#re = options.re ? checkPublic(options.re, "re") : null;

    const localPre = this.initiator ? def.preInitiator : def.preResponder;
    const remotePre = this.initiator ? def.preResponder : def.preInitiator;
    const sendsS = def.messages.some((m, i) => (i % 2 === 0) === this.initiator && m.includes("s"));
    if ((localPre.includes("s") || sendsS) && !this.#s) {
      throw new NoiseError("key", `pattern ${this.pattern} needs the local static key (s)`);
    }
    if (remotePre.includes("s") && !this.#rs) {
      throw new NoiseError(
        "key",
        `pattern ${this.pattern} needs the remote static public key (rs) in advance`,
      );
    }
    if (localPre.includes("e")) {
      if (!this.#presetE) throw new NoiseError("key", "pattern needs a pre-shared local e");
      this.#e = this.#presetE;
      this.#presetE = null;
    }
    if (remotePre.includes("e") && !this.#re) {
      throw new NoiseError("key", "pattern needs the remote ephemeral public key (re)");
    }

    this.#ss = new SymmetricState(this.protocolName, this.backend);
    this.#ss.mixHash(options.prologue ?? EMPTY);
    // Pre-message keys: the initiator's first, then the responder's (spec §7.1).
    for (
      const [pre, local] of [[def.preInitiator, this.initiator], [
        def.preResponder,
        !this.initiator,
      ]] as const
    ) {
      for (const t of pre) {
        const key = t === "s"
          ? (local ? this.#s!.publicKey : this.#rs!)
          : (local ? this.#e!.publicKey : this.#re!);
        this.#ss.mixHash(key);
      }
    }
  }

  #importLocal(k: LocalKey, what: string): DhKey {
    try {
      if (isDhKey(k)) return k;
      if (!k || !(k.privateKey instanceof Uint8Array) || !(k.publicKey instanceof Uint8Array)) {
        throw new InvalidKeyError(`${what} must be { privateKey, publicKey } byte arrays`);
      }
      checkPublic(k.publicKey, `${what}.publicKey`);
      return this.backend.x25519.fromPrivate(k.privateKey, k.publicKey);
    } catch (err) {
      if (err instanceof NoiseError) throw err;
      throw new NoiseError("key", `invalid local key ${what}: ${(err as Error).message}`);
    }
  }

  /** True once every handshake message has been written or read. */
  isComplete(): boolean {
    return this.#index === this.#def.messages.length;
  }

  /** True when the next step is this side writing a message. */
  isMyTurn(): boolean {
    return !this.isComplete() && (this.#index % 2 === 0) === this.initiator;
  }

  /** The remote static public key: known in advance, or as proven by the handshake; else null. */
  get remoteStatic(): Uint8Array | null {
    return this.#rs ? new Uint8Array(this.#rs) : null;
  }

  /** The local ephemeral public key, once generated. */
  get localEphemeral(): Uint8Array | null {
    return this.#e ? new Uint8Array(this.#e.publicKey) : null;
  }

  /** The handshake hash h (final after the last message; a channel binding value). */
  getHandshakeHash(): Uint8Array {
    return this.#ss.getHandshakeHash();
  }

  #checkUsable(action: string): void {
    if (this.#failed) {
      throw new NoiseError(
        "state",
        `handshake failed earlier (${this.#failed.message}); ${action} refused`,
      );
    }
    if (this.isComplete()) {
      throw new NoiseError("state", `handshake is already complete; ${action} refused`);
    }
  }

  #fail(err: unknown): never {
    const e = err instanceof NoiseError
      ? err
      : err instanceof InvalidKeyError
      ? new NoiseError("key", err.message, { cause: err })
      : new NoiseError("state", `handshake error: ${(err as Error)?.message ?? err}`, {
        cause: err,
      });
    this.#failed = e;
    this.#e = null;
    this.#presetE = null;
    throw e;
  }

  /** Length the next written message will have with a payload of `payloadLength` bytes. */
  #plannedLength(tokens: readonly Token[], payloadLength: number): number {
    let keyed = this.#ss.cipher.hasKey();
    let n = 0;
    for (const t of tokens) {
      if (t === "e") n += DHLEN;
      else if (t === "s") n += DHLEN + (keyed ? TAGLEN : 0);
      else keyed = true;
    }
    return n + payloadLength + (keyed ? TAGLEN : 0);
  }

  /** Writes the next handshake message carrying `payload` (spec WriteMessage). */
  writeMessage(payload: Uint8Array = EMPTY): Uint8Array {
    this.#checkUsable("writeMessage");
    if (!this.isMyTurn()) {
      throw new NoiseError("state", "writeMessage out of turn: expected readMessage");
    }
    const tokens = this.#def.messages[this.#index];
    const total = this.#plannedLength(tokens, payload.length);
    if (total > MAX_MESSAGE_LENGTH) {
      throw new NoiseError(
        "length",
        `handshake message would be ${total} bytes, over ${MAX_MESSAGE_LENGTH}`,
      );
    }
    try {
      const out = new Uint8Array(total);
      let off = 0;
      const ss = this.#ss;
      for (const t of tokens) {
        if (t === "e") {
          this.#e = this.#presetE ?? this.backend.x25519.generate();
          this.#presetE = null;
          out.set(this.#e.publicKey, off);
          off += DHLEN;
          ss.mixHash(this.#e.publicKey);
        } else if (t === "s") {
          const ct = ss.encryptAndHash(this.#s!.publicKey);
          out.set(ct, off);
          off += ct.length;
        } else {
          this.#mixDh(t);
        }
      }
      const ct = ss.encryptAndHash(payload);
      out.set(ct, off);
      off += ct.length;
      if (off !== total) throw new Error(`internal: message length ${off} != planned ${total}`);
      this.#index++;
      return out;
    } catch (err) {
      this.#fail(err);
    }
  }

  /** Reads the next handshake message and returns its payload (spec ReadMessage). */
  readMessage(message: Uint8Array): Uint8Array {
    this.#checkUsable("readMessage");
    if (this.isMyTurn()) {
      throw new NoiseError("state", "readMessage out of turn: expected writeMessage");
    }
    try {
      if (!(message instanceof Uint8Array)) {
        throw new NoiseError("length", "handshake message must be a byte array");
      }
      if (message.length > MAX_MESSAGE_LENGTH) {
        throw new NoiseError(
          "length",
          `handshake message of ${message.length} bytes exceeds ${MAX_MESSAGE_LENGTH}`,
        );
      }
      const tokens = this.#def.messages[this.#index];
      const min = this.#plannedLength(tokens, 0);
      if (message.length < min) {
        throw new NoiseError(
          "length",
          `handshake message ${this.#index + 1} of ${this.pattern} is ${message.length} bytes, ` +
            `needs at least ${min}`,
        );
      }
      const ss = this.#ss;
      let off = 0;
      for (const t of tokens) {
        if (t === "e") {
          this.#re = message.slice(off, off + DHLEN);
          off += DHLEN;
          ss.mixHash(this.#re);
        } else if (t === "s") {
          const len = DHLEN + (ss.cipher.hasKey() ? TAGLEN : 0);
          const rs = ss.decryptAndHash(message.subarray(off, off + len));
          off += len;
          this.#rs = new Uint8Array(rs);
        } else {
          this.#mixDh(t);
        }
      }
      const payload = ss.decryptAndHash(message.subarray(off));
      this.#index++;
      // The payload may be a view of the caller's buffer when no key is set: copy it.
      return payload.buffer === message.buffer ? payload.slice() : payload;
    } catch (err) {
      this.#fail(err);
    }
  }

  #mixDh(t: Token): void {
    const x = this.backend.x25519;
    // For es/se the initiator's half is the first letter (spec §5.3).
    const localIsE = t === "ee" || (t === "es" ? this.initiator : t === "se" && !this.initiator);
    const remoteIsE = t === "ee" || (t === "es" ? !this.initiator : t === "se" && this.initiator);
    const local = localIsE ? this.#e : this.#s;
    let remote: RemoteKey | null;
    if (remoteIsE) {
      if (this.#re && this.#reKey?.publicKey !== this.#re) this.#reKey = new RemoteKey(this.#re);
      remote = this.#re ? this.#reKey : null;
    } else {
      if (this.#rs && this.#rsKey?.publicKey !== this.#rs) this.#rsKey = new RemoteKey(this.#rs);
      remote = this.#rs ? this.#rsKey : null;
    }
    if (!local || !remote) {
      throw new NoiseError("key", `token ${t} lacks a key (pattern ${this.pattern})`);
    }
    const shared = x.dh(local, remote);
    this.#ss.mixKey(shared);
    shared.fill(0);
  }

  /** True for N, K and X: one handshake message, then a one-way stream initiator → responder. */
  get oneWay(): boolean {
    return ONE_WAY_PATTERNS.has(this.pattern);
  }

  #splitStates(): [CipherState, CipherState] {
    if (this.#failed) throw new NoiseError("state", "handshake failed; split refused");
    if (!this.isComplete()) {
      throw new NoiseError(
        "state",
        `handshake is not complete (${this.#index}/${this.#def.messages.length} messages); split refused`,
      );
    }
    if (this.#split) throw new NoiseError("state", "split already called");
    this.#split = true;
    const states = this.#ss.split();
    this.#e = null;
    return states;
  }

  /**
   * The transport CipherStates from this side's point of view. Only once, after the last
   * handshake message, and only for interactive patterns (one-way ones use {@link splitOneWay}).
   */
  split(): { send: CipherState; recv: CipherState } {
    if (this.oneWay) {
      throw new NoiseError(
        "state",
        `pattern ${this.pattern} is one-way: use splitOneWay() (the responder never sends)`,
      );
    }
    const [c1, c2] = this.#splitStates();
    return this.initiator ? { send: c1, recv: c2 } : { send: c2, recv: c1 };
  }

  /**
   * The one transport CipherState of a one-way pattern (spec §7.4): the initiator's sending
   * state, or the responder's receiving state (the first CipherState of the split; the second
   * is wiped). Only once, after the handshake message.
   */
  splitOneWay(): CipherState {
    if (!this.oneWay) {
      throw new NoiseError(
        "state",
        `pattern ${this.pattern} is interactive: use split()`,
      );
    }
    const [c1, c2] = this.#splitStates();
    c2.destroy();
    return c1;
  }
}

/** What {@link readOneWayX} learned from an X message. */
export interface OneWayXResult {
  /** The sender's static public key, authenticated by the message (the `ss` token). */
  senderStatic: Uint8Array;
  /** The decrypted payload. */
  payload: Uint8Array;
  /** The handshake hash after the message (binds prologue, keys and payload). */
  handshakeHash: Uint8Array;
}

/**
 * Writes one `Noise_X_25519_ChaChaPoly_BLAKE2s` message from `sender` (a static key pair) to the
 * recipient's static public key, binding `prologue` and carrying `payload` encrypted. The
 * message is 96 + payload length + 16 bytes: e ‖ ENC(s) ‖ ENC(payload). Only the holder of the
 * recipient's private key can read it, and reading it proves the sender held `sender`'s private
 * key (no forward secrecy for the sender's key: X is a static-key seal).
 *
 * `e` fixes the ephemeral key (deterministic tests only).
 */
export function writeOneWayX(options: {
  sender: LocalKey;
  recipient: Uint8Array;
  prologue: Uint8Array;
  payload: Uint8Array;
  e?: LocalKey;
  backend?: CryptoBackend;
}): Uint8Array {
  const hs = new HandshakeState({
    pattern: "X",
    initiator: true,
    prologue: options.prologue,
    s: options.sender,
    rs: options.recipient,
    e: options.e,
    backend: options.backend,
  });
  return hs.writeMessage(options.payload);
}

/**
 * Reads one `Noise_X_25519_ChaChaPoly_BLAKE2s` message addressed to `recipient` (its static key
 * pair) with the same `prologue` the sender used. Throws {@link NoiseError}: "length" when
 * truncated, "decrypt" when altered, addressed to another key or bound to another prologue,
 * "key" when the message carries a low-order point.
 */
export function readOneWayX(options: {
  recipient: LocalKey;
  prologue: Uint8Array;
  message: Uint8Array;
  backend?: CryptoBackend;
}): OneWayXResult {
  const hs = new HandshakeState({
    pattern: "X",
    initiator: false,
    prologue: options.prologue,
    s: options.recipient,
    backend: options.backend,
  });
  const payload = hs.readMessage(options.message);
  return { senderStatic: hs.remoteStatic!, payload, handshakeHash: hs.getHandshakeHash() };
}

function checkPublic(key: Uint8Array, what: string): Uint8Array {
  if (!(key instanceof Uint8Array) || key.length !== DHLEN) {
    throw new NoiseError("key", `${what} must be a ${DHLEN}-byte X25519 public key`);
  }
  return new Uint8Array(key);
}
