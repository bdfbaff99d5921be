/**
 * Sealed envelopes, format version 1: what the SDK puts in a MSG payload so that only the
 * recipient devices can read it and each of them knows which device sealed it.
 *
 * A fresh 32-byte content key encrypts the padded body with ChaCha20-Poly1305; the content key
 * is wrapped once per recipient device with a one-way `Noise_X_25519_ChaChaPoly_BLAKE2s`
 * message from the sender's static device key to the recipient's static key (X authenticates
 * the sender: only the holder of the sender's private key can produce a wrap that opens under
 * the sender's public key). The header — version, sender, conversation and a per-sender
 * counter — is the body's associated data, and each wrap's prologue binds a digest of the header
 * and of the body ciphertext, so no part can be moved into another envelope.
 *
 * Pure: no I/O, no clock, no global state; the byte layout is documented in docs/CLIENT.md
 * ("Sealed envelopes") so another implementation can interoperate.
 *
 * @module
 */
import { ed25519 } from "@noble/curves/ed25519.js";
import { concatBytes, concatChunks } from "./bytes.ts";
import { bytesEqual, type CryptoBackend, DHLEN, TAGLEN } from "./crypto.ts";
import { ProblemError } from "./errors.ts";
import { defaultBackend } from "./crypto.ts";
import { type LocalKey, NoiseError, readOneWayX, writeOneWayX } from "./noise.ts";
import { decodeVarint, encodeVarint, varintLength } from "./varint.ts";
import { bytesToHex } from "./hex.ts";

/** The envelope format this module writes and reads. */
export const ENVELOPE_VERSION = 1;
/** First three octets of every envelope: "CCE". */
export const ENVELOPE_MAGIC = Object.freeze([0x43, 0x43, 0x45]) as readonly number[];
/** Length of a content key. */
export const CONTENT_KEY_LENGTH = 32;
/** Length of one wrapped content key: an X message carrying the 32-byte content key. */
export const WRAP_LENGTH = DHLEN + (DHLEN + TAGLEN) + (CONTENT_KEY_LENGTH + TAGLEN); // 128
/** Largest body (plaintext) an envelope carries. */
export const MAX_BODY_LENGTH = 1024 * 1024;
/** Most recipient devices one envelope is sealed for. */
export const MAX_RECIPIENTS = 1024;
/** Most members a member-set conversation lists (the server's JOIN limit is the same). */
export const MAX_CONVERSATION_MEMBERS = 1024;
/** Longest device id or group id, in UTF-8 octets (`device@domain` included). */
export const MAX_ID_OCTETS = 512;
/** Smallest padded body (4-octet length prefix included). */
export const MIN_PADDED_LENGTH = 256;

const WRAP_LABEL = new TextEncoder().encode("commucat-envelope-v1\0");
const ZERO_NONCE = new Uint8Array(12);
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** Why an envelope was refused. */
export type EnvelopeErrorCode =
  | "truncated" // the bytes end before the layout does
  | "malformed" // not an envelope, or a field breaks the layout's rules
  | "version" // an envelope of another format version
  | "too-large" // a limit of this module (body, recipients, members, id length) is exceeded
  | "tampered" // a wrap or the body does not authenticate (altered, or cut from another envelope)
  | "not-addressed" // no wrap for this device (wrong recipient)
  | "readdressed" // sealed for another conversation than the one it arrived in
  | "sender-mismatch" // the envelope's sender is not the one the server authenticated
  | "replayed" // a counter this device has already accepted from that sender there
  | "bad-key"; // a public key that is not a valid X25519 point (off the curve, low order)

/** Every refusal of this module; `code` says which rule was broken. */
export class EnvelopeError extends ProblemError {
  readonly code: EnvelopeErrorCode;
  constructor(code: EnvelopeErrorCode, message: string, options?: { cause?: unknown }) {
    super("Envelope Refused", 400, message, { cause: options?.cause });
    this.name = "EnvelopeError";
    this.code = code;
  }
}

/** How a member set names a user (every device of it): `@<user id>`. */
export const USER_PREFIX = "@";

/**
 * What an envelope is bound to: a member set (sorted, de-duplicated; device ids and
 * `@<user id>` for users, as the server's JOIN ACK lists them) or a group id.
 */
export type Conversation =
  | { kind: "members"; members: readonly string[] }
  | { kind: "group"; groupId: string };

/** The canonical form of a conversation: members sorted and de-duplicated; limits checked. */
export function normalizeConversation(conversation: Conversation): Conversation {
  if (conversation?.kind === "group") {
    checkId(conversation.groupId, "group id");
    return { kind: "group", groupId: conversation.groupId };
  }
  if (conversation?.kind !== "members" || !Array.isArray(conversation.members)) {
    throw new TypeError(
      'conversation must be {kind: "members", members} or {kind: "group", groupId}',
    );
  }
  const members = [...new Set(conversation.members)].sort();
  if (members.length === 0) throw new EnvelopeError("malformed", "a conversation needs members");
  if (members.length > MAX_CONVERSATION_MEMBERS) {
    throw new EnvelopeError(
      "too-large",
      `${members.length} members exceed the limit of ${MAX_CONVERSATION_MEMBERS}`,
    );
  }
  for (const m of members) checkId(m, "member id");
  return { kind: "members", members };
}

/** True when two conversations are the same (after normalisation). */
export function sameConversation(a: Conversation, b: Conversation): boolean {
  const x = normalizeConversation(a), y = normalizeConversation(b);
  if (x.kind === "group" || y.kind === "group") {
    return x.kind === "group" && y.kind === "group" && x.groupId === y.groupId;
  }
  return x.members.length === y.members.length && x.members.every((m, i) => m === y.members[i]);
}

/** A stable text key for a conversation (for counters and replay windows). */
export function conversationKey(conversation: Conversation): string {
  const c = normalizeConversation(conversation);
  return c.kind === "group" ? `group:${c.groupId}` : `members:${c.members.join("\n")}`;
}

function checkId(id: unknown, what: string): void {
  if (typeof id !== "string" || id.length === 0) {
    throw new EnvelopeError("malformed", `${what} must be a non-empty string`);
  }
  if (encoder.encode(id).length > MAX_ID_OCTETS) {
    throw new EnvelopeError("too-large", `${what} is longer than ${MAX_ID_OCTETS} octets`);
  }
}

// ---------------------------------------------------------------------------------------------
// X25519 public key validation

const Fp = ed25519.Point.Fp;

/**
 * Checks that `key` is a usable X25519 public key: 32 octets, a canonical u-coordinate
 * (< 2^255 - 19, top bit clear), a point on Curve25519 rather than its twist, and not of small
 * order. The curve test maps u to the birationally equivalent Edwards y = (u - 1) / (u + 1) and
 * lets @noble/curves decode that point (it refuses a y with no x on the curve). Throws
 * EnvelopeError("bad-key").
 */
export function assertValidPublicKey(key: Uint8Array, what = "public key"): void {
  if (!(key instanceof Uint8Array) || key.length !== DHLEN) {
    throw new EnvelopeError("bad-key", `${what} must be a ${DHLEN}-byte X25519 public key`);
  }
  const id = bytesToHex(key);
  if (VALID_KEYS.has(id)) return;
  checkPoint(key, what);
  // Public keys only: remembering that a point is valid leaks nothing.
  if (VALID_KEYS.size >= VALID_KEY_CACHE) VALID_KEYS.delete(VALID_KEYS.values().next().value!);
  VALID_KEYS.add(id);
}

/** How many validated public keys are remembered (the curve check costs a square root). */
const VALID_KEY_CACHE = 4096;
const VALID_KEYS = new Set<string>();

function checkPoint(key: Uint8Array, what: string): void {
  if (key[31] & 0x80) {
    throw new EnvelopeError("bad-key", `${what} has its top bit set (not canonical)`);
  }
  let u = 0n;
  for (let i = 31; i >= 0; i--) u = (u << 8n) | BigInt(key[i]);
  if (u >= Fp.ORDER) throw new EnvelopeError("bad-key", `${what} is not reduced mod 2^255 - 19`);
  if (u === Fp.ORDER - 1n) throw new EnvelopeError("bad-key", `${what} is not on the curve`);
  let point;
  try {
    point = ed25519.Point.fromBytes(Fp.toBytes(Fp.div(Fp.sub(u, 1n), Fp.add(u, 1n))));
  } catch {
    throw new EnvelopeError("bad-key", `${what} is not on Curve25519 (a point of its twist)`);
  }
  if (point.isSmallOrder()) {
    throw new EnvelopeError("bad-key", `${what} is a low-order point`);
  }
}

// ---------------------------------------------------------------------------------------------
// padding

/**
 * The padded length for a body of `length` octets: the 4-octet length prefix plus the body,
 * rounded up by Padmé (at most ~12 % overhead, lengths leak O(log log n) bits), at least
 * {@link MIN_PADDED_LENGTH}.
 */
export function paddedLength(length: number): number {
  const l = Math.max(length + 4, MIN_PADDED_LENGTH);
  const e = Math.floor(Math.log2(l));
  const s = Math.floor(Math.log2(e)) + 1;
  const mask = 2 ** (e - s) - 1;
  return Math.ceil(l / (mask + 1)) * (mask + 1);
}

function pad(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(paddedLength(body.length));
  new DataView(out.buffer).setUint32(0, body.length);
  out.set(body, 4);
  return out;
}

function unpad(padded: Uint8Array): Uint8Array {
  if (padded.length < 4) throw new EnvelopeError("malformed", "padded body is too short");
  const length = new DataView(padded.buffer, padded.byteOffset, padded.byteLength).getUint32(0);
  if (length > padded.length - 4 || paddedLength(length) !== padded.length) {
    throw new EnvelopeError("malformed", "body length does not match its padding");
  }
  let acc = 0;
  for (let i = 4 + length; i < padded.length; i++) acc |= padded[i];
  if (acc !== 0) throw new EnvelopeError("malformed", "padding is not zero");
  return padded.slice(4, 4 + length);
}

// ---------------------------------------------------------------------------------------------
// layout

/** The parsed, not yet authenticated, parts of an envelope. */
export interface ParsedEnvelope {
  version: number;
  /** The device id the envelope claims sealed it (checked against the server's `sender`). */
  sender: string;
  conversation: Conversation;
  /** The per-sender, per-conversation counter (1, 2, …). */
  counter: bigint;
  /** Recipient device ids, in envelope order. */
  recipients: string[];
  /** The header octets (the body's associated data). */
  header: Uint8Array;
  /** Each recipient's wrap, by device id. */
  wraps: Map<string, Uint8Array>;
  /** The body ciphertext (padded body ‖ tag). */
  body: Uint8Array;
}

class Writer {
  parts: Uint8Array[] = [];
  length = 0;
  push(bytes: Uint8Array): void {
    this.parts.push(bytes);
    this.length += bytes.length;
  }
  varint(n: number): void {
    this.push(encodeVarint(n));
  }
  str(s: string): void {
    const b = encoder.encode(s);
    this.varint(b.length);
    this.push(b);
  }
  bytes(): Uint8Array {
    return concatChunks(this.parts);
  }
}

class Reader {
  off = 0;
  constructor(readonly b: Uint8Array) {}
  need(n: number, what: string): void {
    if (this.off + n > this.b.length) {
      throw new EnvelopeError(
        "truncated",
        `envelope ends inside ${what} (at octet ${this.off} of ${this.b.length})`,
      );
    }
  }
  u8(what: string): number {
    this.need(1, what);
    return this.b[this.off++];
  }
  take(n: number, what: string): Uint8Array {
    this.need(n, what);
    const out = this.b.subarray(this.off, this.off + n);
    this.off += n;
    return out;
  }
  varint(what: string, max: number): number {
    let d;
    try {
      d = decodeVarint(this.b, this.off);
    } catch {
      throw new EnvelopeError("malformed", `${what} is not a valid varint`);
    }
    if (d === null) throw new EnvelopeError("truncated", `envelope ends inside ${what}`);
    // The limit first: a value past 2^53 (hostile octets) is not a safe integer, so it must
    // be refused before anything treats it as one.
    if (d.value > max) {
      throw new EnvelopeError("too-large", `${what} ${d.value} exceeds the limit of ${max}`);
    }
    if (d.length !== varintLength(d.value)) {
      throw new EnvelopeError("malformed", `${what} is not minimally encoded`);
    }
    this.off += d.length;
    return d.value;
  }
  str(what: string): string {
    const n = this.varint(`${what} length`, MAX_ID_OCTETS);
    if (n === 0) throw new EnvelopeError("malformed", `${what} is empty`);
    try {
      return decoder.decode(this.take(n, what));
    } catch (err) {
      if (err instanceof EnvelopeError) throw err;
      throw new EnvelopeError("malformed", `${what} is not UTF-8`);
    }
  }
}

const KIND_MEMBERS = 1;
const KIND_GROUP = 2;

function writeHeader(sender: string, conversation: Conversation, counter: bigint): Uint8Array {
  const w = new Writer();
  w.push(new Uint8Array([...ENVELOPE_MAGIC, ENVELOPE_VERSION, 0]));
  w.str(sender);
  if (conversation.kind === "group") {
    w.push(new Uint8Array([KIND_GROUP]));
    w.str(conversation.groupId);
  } else {
    w.push(new Uint8Array([KIND_MEMBERS]));
    w.varint(conversation.members.length);
    for (const m of conversation.members) w.str(m);
  }
  const c = new Uint8Array(8);
  new DataView(c.buffer).setBigUint64(0, counter);
  w.push(c);
  return w.bytes();
}

/**
 * Parses an envelope's layout without decrypting anything. Throws EnvelopeError: "malformed"
 * (not an envelope: wrong magic, reserved flags set, members not sorted), "version", "truncated",
 * "too-large".
 */
export function parseEnvelope(bytes: Uint8Array): ParsedEnvelope {
  if (!(bytes instanceof Uint8Array)) throw new TypeError("envelope must be a Uint8Array");
  const r = new Reader(bytes);
  if (bytes.length < ENVELOPE_MAGIC.length) {
    throw new EnvelopeError("truncated", `${bytes.length} octets are too short for an envelope`);
  }
  for (const m of ENVELOPE_MAGIC) {
    if (r.u8("magic") !== m) {
      throw new EnvelopeError("malformed", "not a sealed envelope (no CCE magic)");
    }
  }
  const version = r.u8("version");
  if (version !== ENVELOPE_VERSION) {
    throw new EnvelopeError(
      "version",
      `envelope format version ${version} is not supported (this client reads ${ENVELOPE_VERSION})`,
    );
  }
  if (r.u8("flags") !== 0) throw new EnvelopeError("malformed", "reserved flags are set");
  const sender = r.str("sender");
  const kind = r.u8("conversation kind");
  let conversation: Conversation;
  if (kind === KIND_GROUP) {
    conversation = { kind: "group", groupId: r.str("group id") };
  } else if (kind === KIND_MEMBERS) {
    const n = r.varint("member count", MAX_CONVERSATION_MEMBERS);
    if (n === 0) throw new EnvelopeError("malformed", "member set is empty");
    const members: string[] = [];
    for (let i = 0; i < n; i++) {
      const m = r.str("member id");
      if (i > 0 && !(members[i - 1] < m)) {
        throw new EnvelopeError("malformed", "members are not sorted and distinct");
      }
      members.push(m);
    }
    conversation = { kind: "members", members };
  } else {
    throw new EnvelopeError("malformed", `unknown conversation kind ${kind}`);
  }
  const counterBytes = r.take(8, "counter");
  const counter = new DataView(counterBytes.buffer, counterBytes.byteOffset, 8).getBigUint64(0);
  if (counter === 0n) throw new EnvelopeError("malformed", "counter 0 is not used");
  const header = bytes.subarray(0, r.off);
  const count = r.varint("recipient count", MAX_RECIPIENTS);
  if (count === 0) throw new EnvelopeError("malformed", "no recipients");
  const recipients: string[] = [];
  const wraps = new Map<string, Uint8Array>();
  for (let i = 0; i < count; i++) {
    const id = r.str("recipient id");
    if (wraps.has(id)) throw new EnvelopeError("malformed", `recipient ${id} is listed twice`);
    recipients.push(id);
    wraps.set(id, r.take(WRAP_LENGTH, "wrapped key"));
  }
  const body = bytes.subarray(r.off);
  if (body.length < MIN_PADDED_LENGTH + TAGLEN) {
    throw new EnvelopeError(
      "truncated",
      `body of ${body.length} octets is shorter than the minimum`,
    );
  }
  if (body.length > paddedLength(MAX_BODY_LENGTH) + TAGLEN) {
    throw new EnvelopeError("too-large", `body of ${body.length} octets exceeds the limit`);
  }
  return { version, sender, conversation, counter, recipients, header, wraps, body };
}

/**
 * BLAKE2s(header ‖ recipient list ‖ body ciphertext), where the recipient list is
 * varint(count) ‖ (varint(length) ‖ id) per recipient, without the wraps: what every wrap of
 * one envelope binds, so the header, who it was sealed for and the body are all authenticated.
 */
function envelopeDigest(
  backend: CryptoBackend,
  header: Uint8Array,
  recipients: readonly string[],
  body: Uint8Array,
): Uint8Array {
  const w = new Writer();
  w.push(header);
  w.varint(recipients.length);
  for (const r of recipients) w.str(r);
  return backend.blake2s.hash(w.bytes(), body);
}

/** A wrap's Noise prologue: label ‖ envelope digest ‖ recipient id (UTF-8). */
function wrapPrologue(digest: Uint8Array, recipient: string): Uint8Array {
  return concatBytes(WRAP_LABEL, digest, encoder.encode(recipient));
}

/** A recipient device: its id and its static public key (validated by the caller's trust store). */
export interface EnvelopeRecipient {
  deviceId: string;
  publicKey: Uint8Array;
}

/** Options of {@link sealEnvelope}. */
export interface SealOptions {
  /** The sending device's id (must equal the `sender` the server will stamp). */
  sender: string;
  /** The sending device's static key pair (or a backend key from `importStaticKey`). */
  senderKey: LocalKey;
  conversation: Conversation;
  /** This sender's next counter in this conversation (≥ 1, never reused). */
  counter: bigint | number;
  recipients: readonly EnvelopeRecipient[];
  body: Uint8Array;
  backend?: CryptoBackend;
  /** Fixed content key (deterministic tests only). */
  contentKey?: Uint8Array;
}

/**
 * Seals `body` for every recipient. Throws EnvelopeError ("too-large", "bad-key", "malformed")
 * before producing anything when an input breaks a rule.
 */
export function sealEnvelope(options: SealOptions): Uint8Array {
  const backend = options.backend ?? defaultBackend;
  checkId(options.sender, "sender id");
  const conversation = normalizeConversation(options.conversation);
  const counter = BigInt(options.counter);
  if (counter < 1n || counter > 0xffff_ffff_ffff_ffffn) {
    throw new RangeError("counter must be in 1..2^64-1");
  }
  const body = options.body;
  if (!(body instanceof Uint8Array)) throw new TypeError("body must be a Uint8Array");
  if (body.length > MAX_BODY_LENGTH) {
    throw new EnvelopeError(
      "too-large",
      `body of ${body.length} octets exceeds ${MAX_BODY_LENGTH}`,
    );
  }
  const recipients = options.recipients;
  if (recipients.length === 0) throw new EnvelopeError("malformed", "no recipients");
  if (recipients.length > MAX_RECIPIENTS) {
    throw new EnvelopeError(
      "too-large",
      `${recipients.length} recipients exceed the limit of ${MAX_RECIPIENTS}`,
    );
  }
  const seen = new Set<string>();
  for (const r of recipients) {
    checkId(r.deviceId, "recipient id");
    if (seen.has(r.deviceId)) {
      throw new EnvelopeError("malformed", `recipient ${r.deviceId} is listed twice`);
    }
    seen.add(r.deviceId);
    assertValidPublicKey(r.publicKey, `public key of ${r.deviceId}`);
  }
  const header = writeHeader(options.sender, conversation, counter);
  const contentKey = options.contentKey ?? crypto.getRandomValues(new Uint8Array(32));
  if (contentKey.length !== CONTENT_KEY_LENGTH) {
    throw new RangeError("content key must be 32 bytes");
  }
  const padded = pad(body);
  const ciphertext = backend.aead.encrypt(contentKey, ZERO_NONCE, header, padded);
  padded.fill(0);
  const digest = envelopeDigest(
    backend,
    header,
    recipients.map((r) => r.deviceId),
    ciphertext,
  );
  const w = new Writer();
  w.push(header);
  w.varint(recipients.length);
  try {
    for (const r of recipients) {
      w.str(r.deviceId);
      const wrap = writeOneWayX({
        sender: options.senderKey,
        recipient: r.publicKey,
        prologue: wrapPrologue(digest, r.deviceId),
        payload: contentKey,
        backend,
      });
      w.push(wrap);
    }
  } catch (err) {
    if (err instanceof NoiseError && err.code === "key") {
      throw new EnvelopeError("bad-key", err.message, { cause: err });
    }
    throw err;
  } finally {
    if (!options.contentKey) contentKey.fill(0);
  }
  w.push(ciphertext);
  return w.bytes();
}

/** Options of {@link openEnvelope}. */
export interface OpenOptions {
  /** This device's id (its wrap is looked up under it). */
  recipient: string;
  /** This device's static key pair. */
  recipientKey: LocalKey;
  /**
   * The sender the server authenticated (capability `sender`). When given, an envelope naming
   * another sender is refused ("sender-mismatch"). Omit only when the server stamps no sender.
   */
  serverSender?: string;
  /**
   * The conversation the frame arrived in, when this device knows it (its channel binding).
   * An envelope sealed for another conversation is refused ("readdressed").
   */
  conversation?: Conversation;
  /**
   * The user of this device. A member set may name users (`@<user id>`, a conversation of
   * users): this device is a member when its id or `@<recipientUser>` is listed.
   */
  recipientUser?: string;
  /** The sender's user (from the key directory): the sender is a member as `@<senderUser>`. */
  senderUser?: string;
  /**
   * The sender's static public key this device trusts. When given, a wrap proving another key
   * is refused ("tampered" — the sealer did not hold the trusted key). When omitted, the caller
   * must check `senderKey` of the result itself (pin on first use).
   */
  senderKey?: Uint8Array;
  backend?: CryptoBackend;
}

/** An opened envelope. */
export interface OpenedEnvelope {
  sender: string;
  /** The sender's static public key, proven by the wrap (X pattern). */
  senderKey: Uint8Array;
  conversation: Conversation;
  counter: bigint;
  recipients: string[];
  plaintext: Uint8Array;
}

/**
 * Authenticates and decrypts an envelope (bytes, or the result of {@link parseEnvelope}).
 * Checks in this order, each a typed EnvelopeError: layout ("truncated", "malformed",
 * "version", "too-large"), sender ("sender-mismatch"), conversation ("readdressed", also when
 * this device or the sender is not a member of the envelope's member set), recipient
 * ("not-addressed"), wrap and body ("tampered"; "bad-key" for a low-order ephemeral), and the
 * trusted sender key ("tampered"). Replay is the caller's to check with `counter`
 * ({@link ReplayWindow}).
 */
export function openEnvelope(
  input: Uint8Array | ParsedEnvelope,
  options: OpenOptions,
): OpenedEnvelope {
  const backend = options.backend ?? defaultBackend;
  const env = input instanceof Uint8Array ? parseEnvelope(input) : input;
  if (options.serverSender !== undefined && env.sender !== options.serverSender) {
    throw new EnvelopeError(
      "sender-mismatch",
      `envelope claims sender ${env.sender} but the server relayed it from ${options.serverSender}`,
    );
  }
  if (
    options.conversation !== undefined && !sameConversation(options.conversation, env.conversation)
  ) {
    throw new EnvelopeError(
      "readdressed",
      `envelope was sealed for ${describeConversation(env.conversation)}, ` +
        `not ${describeConversation(options.conversation)}`,
    );
  }
  if (env.conversation.kind === "members") {
    const members = env.conversation.members;
    const listed = (device: string, user: string | undefined) =>
      members.includes(device) || (user !== undefined && members.includes(USER_PREFIX + user));
    if (
      !listed(options.recipient, options.recipientUser) || !listed(env.sender, options.senderUser)
    ) {
      throw new EnvelopeError(
        "readdressed",
        `envelope's member set ${describeConversation(env.conversation)} does not include ` +
          `both ${env.sender} and ${options.recipient}`,
      );
    }
  }
  const wrap = env.wraps.get(options.recipient);
  if (!wrap) {
    throw new EnvelopeError(
      "not-addressed",
      `envelope holds no key for ${options.recipient} (sealed for ${env.recipients.join(", ")})`,
    );
  }
  let senderKey: Uint8Array;
  let contentKey: Uint8Array;
  try {
    const read = readOneWayX({
      recipient: options.recipientKey,
      prologue: wrapPrologue(
        envelopeDigest(backend, env.header, env.recipients, env.body),
        options.recipient,
      ),
      message: wrap,
      backend,
    });
    senderKey = read.senderStatic;
    contentKey = read.payload;
  } catch (err) {
    if (err instanceof NoiseError && err.code === "key") {
      throw new EnvelopeError("bad-key", `wrapped key: ${err.message}`, { cause: err });
    }
    if (err instanceof NoiseError) {
      throw new EnvelopeError(
        "tampered",
        "the wrapped key does not authenticate (envelope altered, or not sealed for this key)",
        { cause: err },
      );
    }
    throw err;
  }
  if (contentKey.length !== CONTENT_KEY_LENGTH) {
    throw new EnvelopeError("malformed", "wrapped content key has the wrong length");
  }
  if (options.senderKey !== undefined && !bytesEqual(senderKey, options.senderKey)) {
    contentKey.fill(0);
    throw new EnvelopeError(
      "tampered",
      `envelope was not sealed with the key trusted for ${env.sender}`,
    );
  }
  let padded: Uint8Array;
  try {
    padded = backend.aead.decrypt(contentKey, ZERO_NONCE, env.header, env.body);
  } catch (err) {
    throw new EnvelopeError("tampered", "the body does not authenticate", { cause: err });
  } finally {
    contentKey.fill(0);
  }
  const plaintext = unpad(padded);
  padded.fill(0);
  return {
    sender: env.sender,
    senderKey,
    conversation: env.conversation,
    counter: env.counter,
    recipients: env.recipients,
    plaintext,
  };
}

/** A short human description of a conversation, for messages. */
export function describeConversation(c: Conversation): string {
  return c.kind === "group" ? `group ${c.groupId}` : `members {${c.members.join(", ")}}`;
}

// ---------------------------------------------------------------------------------------------
// replay

/** How far below the highest accepted counter a late envelope is still accepted. */
export const REPLAY_WINDOW = 64;

/**
 * The counters accepted from one sender in one conversation: the highest one and a bitmap of
 * the {@link REPLAY_WINDOW} below it (as IPsec does). Serialisable for a key store.
 */
export class ReplayWindow {
  highest: bigint;
  bitmap: bigint;
  constructor(highest = 0n, bitmap = 0n) {
    this.highest = highest;
    this.bitmap = bitmap;
  }

  /**
   * Checks `counter` without recording it: throws EnvelopeError("replayed") for a counter seen
   * before or older than the window. Returns how many counters were skipped (a gap: envelopes
   * not seen, or still to come out of order), 0 when it follows on or is the first one seen.
   */
  check(counter: bigint): number {
    if (counter <= 0n) throw new EnvelopeError("malformed", "counter must be ≥ 1");
    if (counter > this.highest) {
      if (this.highest === 0n) return 0; // the first counter seen: nothing to compare with
      const gap = counter - this.highest - 1n;
      return gap > 0xffff_ffffn ? 0xffff_ffff : Number(gap);
    }
    const back = this.highest - counter;
    if (back >= BigInt(REPLAY_WINDOW) || (this.bitmap >> back) & 1n) {
      throw new EnvelopeError(
        "replayed",
        `counter ${counter} was already accepted (or is older than the replay window; highest ${this.highest})`,
      );
    }
    return 0;
  }

  /** Records an accepted counter (call after {@link check} and a successful open). */
  accept(counter: bigint): void {
    const mask = (1n << BigInt(REPLAY_WINDOW)) - 1n;
    if (counter > this.highest) {
      const shift = counter - this.highest;
      this.bitmap = shift >= BigInt(REPLAY_WINDOW) ? 1n : ((this.bitmap << shift) | 1n) & mask;
      this.highest = counter;
    } else {
      this.bitmap |= 1n << (this.highest - counter);
    }
  }
}
