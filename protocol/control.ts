/**
 * Typed control payloads of ccp1.md §2–§4 and their validating parsers.
 *
 * Each parser takes the JSON the decoder already parsed (`Frame.json`) and returns a typed
 * value holding only the known fields (unknown fields are ignored, which also keeps keys
 * such as `__proto__` out of every result). A wrong field throws
 * `ProtocolError(400, "Invalid Control Payload")` whose detail names it, e.g.
 * `HELLO.client_static: expected 64 hex characters`. The error is fatal unless the caller
 * passes `{ fatal: false }`.
 *
 * @module
 */

import { type Problem, ProtocolError } from "./errors.ts";
import { type Frame, FRAME_TYPE_NAMES, FrameType } from "./frame.ts";
import { isHex } from "./hex.ts";
import {
  HANDLE_RULE,
  ID_RULE,
  isHandle,
  isId,
  isUserAddress,
  MAX_HANDLE_LENGTH,
  MAX_ID_LENGTH,
} from "./ids.ts";
import { MAX_U32 } from "./varint.ts";

export type { Problem } from "./errors.ts";

/** Options every parser accepts. */
export interface ParseOptions {
  /** Fatality of the thrown ProtocolError; default true. */
  fatal?: boolean;
}

/** Noise handshake patterns CCP-1 allows. */
export type HandshakePattern = "XK" | "IK";

/** Protocol versions this implementation speaks (ccp1.md §3). */
export const SUPPORTED_PROTOCOL_VERSIONS: readonly number[] = Object.freeze([1, 2]);

/** Longest Noise handshake message (Noise caps messages at 65535 octets). */
export const MAX_HANDSHAKE_OCTETS = 65535;
/** Most members a JOIN or GROUP_CREATE may list. */
export const MAX_MEMBERS = 1024;

/** Optional profile fields a client may send in HELLO. */
export interface HelloUser {
  id?: string;
  handle?: string;
  display_name?: string;
  avatar_url?: string;
}

/** A user as the server describes it (AUTH, completion ACK). */
export interface UserInfo {
  id: string;
  handle: string;
  display_name: string | null;
  avatar_url: string | null;
}

/** HELLO (client → server). */
export interface Hello {
  pattern: HandshakePattern;
  device_id: string;
  /** Lowercase hex of the client's 32-byte X25519 static key. */
  client_static: string;
  /** Lowercase hex of Noise message 1. */
  handshake: string;
  /**
   * Versions the client offers: `supported_versions` when sent, else `[protocol_version]`,
   * else `[1]` (ccp1.md §3: absent both fields means 1).
   */
  supported_versions: number[];
  /** `protocol_version` exactly as sent, if it was. */
  protocol_version?: number;
  user?: HelloUser;
  capabilities: string[];
  /**
   * A pairing code from a device of the user HELLO names (docs/PROTOCOL.md "Pairing a new
   * device"): a new device id then joins that user, active at once.
   */
  pairing_code?: string;
}

/** AUTH (server → client). */
export interface ServerAuth {
  session: string;
  handshake: string;
  server_static: string;
  protocol_version: number;
  supported_versions: number[];
  user: UserInfo;
}

/** AUTH (client → server, XK message 3). */
export interface ClientAuth {
  handshake: string;
}

/** JOIN. `members` may be empty only with `group_id` (the roster then comes from the group). */
export interface Join {
  members: string[];
  /** Relay through the server; absent means true. */
  relay: boolean;
  group_id?: string;
}

/** LEAVE (no required fields). */
export interface Leave {
  reason?: string;
}

/** ACK of an inbound frame: `{ack: seq}` plus context for group operations. */
export interface SequenceAck {
  ack: number;
  group_id?: string;
  device?: string;
}

/** ACK that completes the handshake. */
export interface HandshakeAck {
  handshake: "ok";
  session: string;
  user: UserInfo;
  protocol_version?: number;
}

/** Any ACK payload; tell them apart with `"handshake" in ack`. */
export type AckPayload = SequenceAck | HandshakeAck;

/** PRESENCE: a state update, or a peer candidate relayed by the server (`relay=false`). */
export interface PresencePayload {
  state?: string;
  channel?: number;
  peer?: string;
  candidate?: string;
}

/** Roles a group member may hold. */
export type GroupRole = "owner" | "admin" | "member";

/** GROUP_CREATE. Roles are `member` or `admin` (anything else becomes `member`). */
export interface GroupCreate {
  group_id?: string;
  members: string[];
  roles: Record<string, "admin" | "member">;
  /** Absent means true. */
  relay: boolean;
}

/**
 * GROUP_INVITE. `role` is what was asked for (absent or unknown → `member`); the server
 * lowers `owner` to `admin` (ccp1.md §4).
 */
export interface GroupInvite {
  group_id: string;
  device: string;
  role: GroupRole;
}

/**
 * One entry of an expiry notice (docs/PROTOCOL.md "Expiry notices"): frames a device sent on
 * `channel` to `recipient` that expired unread, with the times (RFC 3339) they were queued.
 */
export interface ExpiredFrames {
  channel: number;
  recipient: string;
  frames: number;
  first_queued_at: string;
  last_queued_at: string;
  expired_at: string;
}

/** TYPING and GROUP_EVENT carry any JSON object. */
export type JsonObject = Record<string, unknown>;

// ---------------------------------------------------------------------------------------
// Field readers

type Obj = Record<string, unknown>;

class Reader {
  constructor(readonly frame: string, readonly fatal: boolean) {}

  fail(field: string, expected: string): never {
    throw new ProtocolError(
      "Invalid Control Payload",
      400,
      `${this.frame}${field ? "." + field : ""}: expected ${expected}`,
      { fatal: this.fatal },
    );
  }

  object(value: unknown, field = ""): Obj {
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      this.fail(field, "a JSON object");
    }
    return value as Obj;
  }

  /** Own property only, so inherited names (`constructor`, `toString`) never leak in. */
  get(obj: Obj, key: string): unknown {
    return Object.hasOwn(obj, key) ? obj[key] : undefined;
  }

  /** True when the field is absent or null. */
  absent(obj: Obj, key: string): boolean {
    const value = this.get(obj, key);
    return value === undefined || value === null;
  }

  string(obj: Obj, key: string, max: number, path = key): string {
    const value = this.get(obj, key);
    if (typeof value !== "string" || value.length === 0 || value.length > max) {
      this.fail(path, `a non-empty string of at most ${max} characters`);
    }
    return value;
  }

  optionalString(obj: Obj, key: string, max: number, path = key): string | undefined {
    return this.absent(obj, key) ? undefined : this.string(obj, key, max, path);
  }

  id(obj: Obj, key: string, path = key): string {
    const value = this.get(obj, key);
    if (!isId(value)) this.fail(path, idExpectation);
    return value;
  }

  optionalId(obj: Obj, key: string): string | undefined {
    return this.absent(obj, key) ? undefined : this.id(obj, key);
  }

  optionalHandle(obj: Obj, key: string, path = key): string | undefined {
    if (this.absent(obj, key)) return undefined;
    const value = this.get(obj, key);
    if (!isHandle(value)) this.fail(path, `a handle of ${HANDLE_RULE}`);
    return value;
  }

  u32(obj: Obj, key: string): number {
    const value = this.get(obj, key);
    if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > MAX_U32) {
      this.fail(key, `an integer in 0..${MAX_U32}`);
    }
    return value;
  }

  boolean(obj: Obj, key: string, fallback: boolean): boolean {
    if (this.absent(obj, key)) return fallback;
    const value = this.get(obj, key);
    if (typeof value !== "boolean") this.fail(key, "true or false");
    return value;
  }

  hex(obj: Obj, key: string, octets?: number): string {
    const value = this.get(obj, key);
    if (octets !== undefined) {
      if (!isHex(value, octets)) this.fail(key, `${octets * 2} hex characters`);
    } else if (
      !isHex(value) || value.length === 0 || value.length > MAX_HANDSHAKE_OCTETS * 2
    ) {
      this.fail(key, `non-empty hex of at most ${MAX_HANDSHAKE_OCTETS} octets`);
    }
    return (value as string).toLowerCase();
  }

  version(value: unknown, path: string): number {
    if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > 0xffff) {
      this.fail(path, "an integer protocol version in 1..65535");
    }
    return value;
  }

  versions(obj: Obj, key: string): number[] {
    const value = this.get(obj, key);
    if (!Array.isArray(value) || value.length === 0 || value.length > 16) {
      this.fail(key, "an array of 1 to 16 protocol versions");
    }
    return value.map((v, i) => this.version(v, `${key}[${i}]`));
  }

  ids(obj: Obj, key: string, allowEmpty: boolean, allowUsers = false): string[] {
    const value = this.get(obj, key);
    if (!Array.isArray(value) || value.length > MAX_MEMBERS) {
      this.fail(key, `an array of at most ${MAX_MEMBERS} device ids`);
    }
    if (value.length === 0 && !allowEmpty) this.fail(key, "at least one device id");
    const seen = new Set<string>();
    value.forEach((member, i) => {
      if (!isId(member) && !(allowUsers && isUserAddress(member))) {
        this.fail(
          `${key}[${i}]`,
          allowUsers ? `${idExpectation}, or a user as @handle or @handle@domain` : idExpectation,
        );
      }
      seen.add(member);
    });
    return [...seen];
  }

  user(value: unknown, path: string): UserInfo {
    const obj = this.object(value, path);
    return {
      id: this.string(obj, "id", MAX_ID_LENGTH, `${path}.id`),
      handle: this.string(obj, "handle", MAX_HANDLE_LENGTH, `${path}.handle`),
      display_name:
        this.optionalString(obj, "display_name", MAX_DISPLAY_NAME, `${path}.display_name`) ??
          null,
      avatar_url: this.optionalString(obj, "avatar_url", MAX_URL_LENGTH, `${path}.avatar_url`) ??
        null,
    };
  }
}

const idExpectation = `an id of ${ID_RULE}`;
const MAX_DISPLAY_NAME = 256;
const MAX_URL_LENGTH = 2048;
const MAX_CAPABILITIES = 64;
const MAX_CAPABILITY_LENGTH = 64;

function reader(frame: string, options: ParseOptions): Reader {
  return new Reader(frame, options.fatal ?? true);
}

// ---------------------------------------------------------------------------------------
// Parsers

/** Validates a HELLO payload. */
export function parseHello(value: unknown, options: ParseOptions = {}): Hello {
  const r: Reader = reader("HELLO", options);
  const obj = r.object(value);
  const pattern = r.get(obj, "pattern");
  if (pattern !== "XK" && pattern !== "IK") r.fail("pattern", `"XK" or "IK"`);
  const hello: Hello = {
    pattern,
    device_id: r.id(obj, "device_id"),
    client_static: r.hex(obj, "client_static", 32),
    handshake: r.hex(obj, "handshake"),
    supported_versions: [1],
    capabilities: [],
  };
  if (!r.absent(obj, "protocol_version")) {
    hello.protocol_version = r.version(r.get(obj, "protocol_version"), "protocol_version");
    hello.supported_versions = [hello.protocol_version];
  }
  if (!r.absent(obj, "supported_versions")) {
    hello.supported_versions = r.versions(obj, "supported_versions");
  }
  if (!r.absent(obj, "user")) {
    const user = r.object(r.get(obj, "user"), "user");
    const parsed: HelloUser = {};
    const id = r.absent(user, "id") ? undefined : r.id(user, "id", "user.id");
    const handle = r.optionalHandle(user, "handle", "user.handle");
    const name = r.optionalString(user, "display_name", MAX_DISPLAY_NAME, "user.display_name");
    const avatar = r.optionalString(user, "avatar_url", MAX_URL_LENGTH, "user.avatar_url");
    if (id !== undefined) parsed.id = id;
    if (handle !== undefined) parsed.handle = handle;
    if (name !== undefined) parsed.display_name = name;
    if (avatar !== undefined) parsed.avatar_url = avatar;
    hello.user = parsed;
  }
  const pairing = r.optionalString(obj, "pairing_code", 32, "pairing_code");
  if (pairing !== undefined) hello.pairing_code = pairing;
  if (!r.absent(obj, "capabilities")) {
    const caps = r.get(obj, "capabilities");
    if (!Array.isArray(caps) || caps.length > MAX_CAPABILITIES) {
      r.fail("capabilities", `an array of at most ${MAX_CAPABILITIES} strings`);
    }
    hello.capabilities = caps.map((cap, i) => {
      if (typeof cap !== "string" || cap.length === 0 || cap.length > MAX_CAPABILITY_LENGTH) {
        r.fail(`capabilities[${i}]`, `a non-empty string of at most ${MAX_CAPABILITY_LENGTH}`);
      }
      return cap;
    });
  }
  return hello;
}

/** Validates the server's AUTH payload (handshake message 2). */
export function parseServerAuth(value: unknown, options: ParseOptions = {}): ServerAuth {
  const r: Reader = reader("AUTH", options);
  const obj = r.object(value);
  return {
    session: r.id(obj, "session"),
    handshake: r.hex(obj, "handshake"),
    server_static: r.hex(obj, "server_static", 32),
    protocol_version: r.version(r.get(obj, "protocol_version"), "protocol_version"),
    supported_versions: r.versions(obj, "supported_versions"),
    user: r.user(r.get(obj, "user"), "user"),
  };
}

/** Validates the client's AUTH payload (XK message 3). */
export function parseClientAuth(value: unknown, options: ParseOptions = {}): ClientAuth {
  const r: Reader = reader("AUTH", options);
  const obj = r.object(value);
  return { handshake: r.hex(obj, "handshake") };
}

/** Validates a JOIN payload. */
export function parseJoin(value: unknown, options: ParseOptions = {}): Join {
  const r: Reader = reader("JOIN", options);
  const obj = r.object(value);
  const groupId = r.optionalId(obj, "group_id");
  const members = groupId !== undefined && r.absent(obj, "members")
    ? []
    : r.ids(obj, "members", groupId !== undefined, true);
  const join: Join = { members, relay: r.boolean(obj, "relay", true) };
  if (groupId !== undefined) join.group_id = groupId;
  return join;
}

/** Validates a LEAVE payload. */
export function parseLeave(value: unknown, options: ParseOptions = {}): Leave {
  const r: Reader = reader("LEAVE", options);
  const obj = r.object(value);
  const reason = r.optionalString(obj, "reason", 256);
  return reason === undefined ? {} : { reason };
}

/** Validates an ACK payload: a sequence ACK, or the handshake-completion ACK. */
export function parseAck(value: unknown, options: ParseOptions = {}): AckPayload {
  const r: Reader = reader("ACK", options);
  const obj = r.object(value);
  if (!r.absent(obj, "handshake")) {
    if (r.get(obj, "handshake") !== "ok") r.fail("handshake", `"ok"`);
    const ack: HandshakeAck = {
      handshake: "ok",
      session: r.id(obj, "session"),
      user: r.user(r.get(obj, "user"), "user"),
    };
    if (!r.absent(obj, "protocol_version")) {
      ack.protocol_version = r.version(r.get(obj, "protocol_version"), "protocol_version");
    }
    return ack;
  }
  const ack: SequenceAck = { ack: r.u32(obj, "ack") };
  const groupId = r.optionalId(obj, "group_id");
  const device = r.optionalId(obj, "device");
  if (groupId !== undefined) ack.group_id = groupId;
  if (device !== undefined) ack.device = device;
  return ack;
}

const STATE_PATTERN = /^[A-Za-z][A-Za-z0-9_-]{0,31}$/;

/** Validates a PRESENCE payload: needs `state`, or `peer` with `candidate`. */
export function parsePresence(value: unknown, options: ParseOptions = {}): PresencePayload {
  const r: Reader = reader("PRESENCE", options);
  const obj = r.object(value);
  const presence: PresencePayload = {};
  if (!r.absent(obj, "state")) {
    const state = r.get(obj, "state");
    if (typeof state !== "string" || !STATE_PATTERN.test(state)) {
      r.fail("state", "a word of at most 32 letters, digits, _ or -");
    }
    presence.state = state;
  }
  if (!r.absent(obj, "channel")) presence.channel = r.u32(obj, "channel");
  const peer = r.optionalId(obj, "peer");
  const candidate = r.optionalString(obj, "candidate", 512);
  if (peer !== undefined) presence.peer = peer;
  if (candidate !== undefined) presence.candidate = candidate;
  if (presence.state === undefined && (peer === undefined || candidate === undefined)) {
    r.fail("state", "a state, or a peer with a candidate");
  }
  return presence;
}

/** Validates a GROUP_CREATE payload. */
export function parseGroupCreate(value: unknown, options: ParseOptions = {}): GroupCreate {
  const r: Reader = reader("GROUP_CREATE", options);
  const obj = r.object(value);
  const create: GroupCreate = {
    members: r.absent(obj, "members") ? [] : r.ids(obj, "members", true, true),
    roles: {},
    relay: r.boolean(obj, "relay", true),
  };
  const groupId = r.optionalId(obj, "group_id");
  if (groupId !== undefined) create.group_id = groupId;
  if (!r.absent(obj, "roles")) {
    const roles = r.object(r.get(obj, "roles"), "roles");
    const entries = Object.keys(roles);
    if (entries.length > MAX_MEMBERS) r.fail("roles", `at most ${MAX_MEMBERS} entries`);
    // Object.fromEntries defines own properties, so even a hostile key cannot reach a
    // prototype; ids are validated first anyway, and `__proto__` is not a valid id.
    create.roles = Object.fromEntries(entries.map((device) => {
      if (!isId(device) && !isUserAddress(device)) {
        r.fail(`roles[${JSON.stringify(device)}]`, idExpectation);
      }
      const role = roles[device];
      if (typeof role !== "string") r.fail(`roles.${device}`, "a role string");
      return [device, role === "admin" ? "admin" : "member"] as const;
    }));
  }
  return create;
}

/** Validates a GROUP_INVITE payload. */
export function parseGroupInvite(value: unknown, options: ParseOptions = {}): GroupInvite {
  const r: Reader = reader("GROUP_INVITE", options);
  const obj = r.object(value);
  let role: GroupRole = "member";
  if (!r.absent(obj, "role")) {
    const asked = r.get(obj, "role");
    if (typeof asked !== "string") r.fail("role", "a role string");
    if (asked === "admin" || asked === "owner") role = asked;
  }
  // `device` may name a user (`@handle`): every active device of that user joins the roster.
  const device = r.get(obj, "device");
  if (!isId(device) && !isUserAddress(device)) r.fail("device", `${idExpectation}, or @handle`);
  return { group_id: r.id(obj, "group_id"), device, role };
}

/** Validates a TYPING payload (any JSON object). */
export function parseTyping(value: unknown, options: ParseOptions = {}): JsonObject {
  return reader("TYPING", options).object(value);
}

/** Validates a GROUP_EVENT payload (any JSON object). */
export function parseGroupEvent(value: unknown, options: ParseOptions = {}): JsonObject {
  return reader("GROUP_EVENT", options).object(value);
}

/** Validates an ERROR payload (ccp1.md §2); absent `type` → about:blank, `fatal` → true. */
export function parseErrorPayload(value: unknown, options: ParseOptions = {}): Problem {
  const r: Reader = reader("ERROR", options);
  const obj = r.object(value);
  if (!r.absent(obj, "type") && typeof r.get(obj, "type") !== "string") {
    r.fail("type", "a string");
  }
  const status = r.get(obj, "status");
  if (typeof status !== "number" || !Number.isInteger(status) || status < 100 || status > 599) {
    r.fail("status", "an HTTP status in 100..599");
  }
  const detail = r.get(obj, "detail");
  if (detail !== undefined && detail !== null && typeof detail !== "string") {
    r.fail("detail", "a string");
  }
  const problem: Problem = {
    type: "about:blank",
    title: r.string(obj, "title", 256),
    status,
    detail: typeof detail === "string" ? detail : "",
    fatal: r.boolean(obj, "fatal", true),
  };
  if (!r.absent(obj, "sequence")) problem.sequence = r.u32(obj, "sequence");
  return problem;
}

// ---------------------------------------------------------------------------------------
// Versions and dispatch

/**
 * The highest version both sides support, or null (→ fatal "Protocol Version Mismatch").
 */
export function negotiateVersion(
  offered: readonly number[],
  supported: readonly number[] = SUPPORTED_PROTOCOL_VERSIONS,
): number | null {
  let best: number | null = null;
  for (const v of offered) if (supported.includes(v) && (best === null || v > best)) best = v;
  return best;
}

/** A decoded control frame's payload, by frame type. */
export type ControlPayload =
  | { type: typeof FrameType.Hello; value: Hello }
  | { type: typeof FrameType.Auth; value: ServerAuth | ClientAuth }
  | { type: typeof FrameType.Join; value: Join }
  | { type: typeof FrameType.Leave; value: Leave }
  | { type: typeof FrameType.Ack; value: AckPayload }
  | { type: typeof FrameType.Typing; value: JsonObject }
  | { type: typeof FrameType.Presence; value: PresencePayload }
  | { type: typeof FrameType.GroupCreate; value: GroupCreate }
  | { type: typeof FrameType.GroupInvite; value: GroupInvite }
  | { type: typeof FrameType.GroupEvent; value: JsonObject }
  | { type: typeof FrameType.Error; value: Problem };

/**
 * Validates the JSON of a decoded control frame by its type. AUTH is read as the client's
 * AUTH when it has no `session`, else as the server's. Throws ProtocolError 400 for a
 * wrong field, or for an opaque type (MSG, KEY_UPDATE).
 */
export function parseControlFrame(frame: Frame, options: ParseOptions = {}): ControlPayload {
  const json = frame.json;
  switch (frame.type) {
    case FrameType.Hello:
      return { type: frame.type, value: parseHello(json, options) };
    case FrameType.Auth: {
      const isServer = typeof json === "object" && json !== null && Object.hasOwn(json, "session");
      return {
        type: frame.type,
        value: isServer ? parseServerAuth(json, options) : parseClientAuth(json, options),
      };
    }
    case FrameType.Join:
      return { type: frame.type, value: parseJoin(json, options) };
    case FrameType.Leave:
      return { type: frame.type, value: parseLeave(json, options) };
    case FrameType.Ack:
      return { type: frame.type, value: parseAck(json, options) };
    case FrameType.Typing:
      return { type: frame.type, value: parseTyping(json, options) };
    case FrameType.Presence:
      return { type: frame.type, value: parsePresence(json, options) };
    case FrameType.GroupCreate:
      return { type: frame.type, value: parseGroupCreate(json, options) };
    case FrameType.GroupInvite:
      return { type: frame.type, value: parseGroupInvite(json, options) };
    case FrameType.GroupEvent:
      return { type: frame.type, value: parseGroupEvent(json, options) };
    case FrameType.Error:
      return { type: frame.type, value: parseErrorPayload(json, options) };
    default:
      throw new ProtocolError(
        "Invalid Control Payload",
        400,
        `${FRAME_TYPE_NAMES[frame.type] ?? frame.type} carries opaque bytes, not control JSON`,
        { fatal: options.fatal ?? true },
      );
  }
}
