/**
 * What both ephemeral store implementations share: key and channel names (ccp1.md §6), input
 * checks, and the parsing of values read back (presence, route, control events).
 */
import { InvalidValue } from "../errors.ts";
import type {
  ControlEvent,
  NodeHeartbeat,
  PeerStatus,
  Presence,
  RateRule,
  RateVerdict,
  Route,
} from "../types.ts";

/** The bus channel that carries control events between nodes (before any key prefix). */
export const CONTROL_CHANNEL = "commucat:control";
/** Control events the control stream (named like the channel) keeps. */
export const CONTROL_STREAM_LENGTH = 10_000;
/** The stream where nodes note who their rate limits refused (the console lists it). */
export const LIMITED_STREAM = "commucat:limited";
/** Entries the limited stream keeps. */
export const LIMITED_STREAM_LENGTH = 1_000;

/** One entry of the limited stream (JSON). */
export interface LimitedNote {
  kind: string;
  key: string;
  /** Refusals of this key on that node since it was first noted. */
  count: number;
  retryAfter: number;
  node: string;
  /** When (ms since the epoch). */
  at: number;
}

/** Options shared by both implementations. */
export interface EphemeralOptions {
  /** Prepended to every key and bus channel; lets tests isolate themselves in one Redis.
   * Default "" so keys are exactly `presence:{device}`, `route:{device}`, `interrupt:{device}`. */
  keyPrefix?: string;
  /**
   * Where warnings go (malformed bus messages, connection loss): the process's logger, which
   * `openStorage({ log })` and the CLI hand in; console.warn only when nobody does.
   */
  warn?: (message: string) => void;
}

export const presenceKey = (prefix: string, deviceId: string) => `${prefix}presence:${deviceId}`;
export const routeKey = (prefix: string, deviceId: string) => `${prefix}route:${deviceId}`;
/**
 * How long an interrupt key lives (the console and the CLI set it on revocation); nodes read the
 * keys of the devices they hold every 2 s (see `EphemeralStore.setInterrupt`).
 */
export const INTERRUPT_TTL_SECONDS = 120;

export const interruptKey = (prefix: string, deviceId: string) => `${prefix}interrupt:${deviceId}`;
export const rateKey = (prefix: string, key: string) => `${prefix}rate:${key}`;
export const streamKey = (prefix: string, stream: string) => `${prefix}stream:${stream}`;

/** Refuse a rate key that is not a short non-empty string. */
export function checkRateKey(key: unknown): asserts key is string {
  if (typeof key !== "string" || key.length === 0 || key.length > 1024) {
    throw new InvalidValue("rate key", key, "a non-empty string of at most 1024 characters");
  }
}

/** Refuse a rule or cost the bucket arithmetic cannot use. */
export function checkRate(rule: RateRule, cost: unknown): number {
  if (!Number.isInteger(rule?.burst) || rule.burst < 1 || rule.burst > 2 ** 40) {
    throw new InvalidValue("rate burst", rule?.burst, "an integer ≥ 1");
  }
  if (
    typeof rule.intervalMs !== "number" || !Number.isFinite(rule.intervalMs) ||
    rule.intervalMs <= 0 || rule.intervalMs > 2 ** 40
  ) {
    throw new InvalidValue("rate interval", rule.intervalMs, "a positive number of milliseconds");
  }
  if (typeof cost !== "number" || !Number.isFinite(cost) || cost < 0) {
    throw new InvalidValue("rate cost", cost, "a number ≥ 0");
  }
  return Math.min(cost, rule.burst);
}

/**
 * One GCRA step. `tat` is the bucket's theoretical arrival time (ms, null when unknown or
 * expired); returns the verdict and the new tat to store (null: store nothing). The Redis
 * store runs the same arithmetic in Lua (RATE_LUA in redis.ts).
 */
export function gcra(
  tat: number | null,
  now: number,
  rule: RateRule,
  cost: number,
): { verdict: RateVerdict; tat: number | null } {
  const base = tat === null || tat < now ? now : tat;
  const next = base + (cost === 0 ? 1 : cost) * rule.intervalMs;
  const allowAt = next - rule.burst * rule.intervalMs;
  if (allowAt > now) {
    return { verdict: { allowed: false, retryAfterMs: Math.ceil(allowAt - now) }, tat: null };
  }
  return { verdict: { allowed: true, retryAfterMs: 0 }, tat: cost === 0 ? null : next };
}

/** Refuse a stream name or length bound that is not usable. */
export function checkStream(stream: unknown, maxLength?: unknown): asserts stream is string {
  checkChannel(stream);
  if (maxLength !== undefined && (!Number.isInteger(maxLength) || (maxLength as number) < 1)) {
    throw new InvalidValue("stream length", maxLength, "an integer ≥ 1");
  }
}

/** Refuse a stream position that is not `<ms>` or `<ms>-<n>`. */
export function checkStreamId(id: unknown): asserts id is string {
  if (typeof id !== "string" || !/^\d{1,20}(-\d{1,20})?$/.test(id)) {
    throw new InvalidValue("stream position", id, 'a stream id such as "0" or "1700000000000-0"');
  }
}

/** Compares two stream ids (`<ms>-<n>`, a missing `-n` counting as 0). */
export function compareStreamIds(a: string, b: string): number {
  const [am, an = "0"] = a.split("-");
  const [bm, bn = "0"] = b.split("-");
  const ms = BigInt(am) - BigInt(bm);
  if (ms !== 0n) return ms < 0n ? -1 : 1;
  const n = BigInt(an) - BigInt(bn);
  return n === 0n ? 0 : n < 0n ? -1 : 1;
}
export const nodeKey = (prefix: string, nodeId: string) => `${prefix}node:${nodeId}`;
/** The set of node ids that have published a heartbeat (stale ones are dropped on read). */
export const nodesKey = (prefix: string) => `${prefix}nodes`;

/** Checks a heartbeat and returns it as JSON text. */
export function checkHeartbeat(h: NodeHeartbeat): string {
  if (typeof h?.nodeId !== "string" || !/^[A-Za-z0-9._:-]{1,128}$/.test(h.nodeId)) {
    throw new InvalidValue("node id", h?.nodeId, "1..128 letters, digits, '.', '_', ':' or '-'");
  }
  return JSON.stringify({
    nodeId: h.nodeId,
    address: String(h.address).slice(0, 256),
    version: String(h.version).slice(0, 64),
    startedAt: String(h.startedAt),
    connections: Number(h.connections) || 0,
    framesPerSecond: Number(h.framesPerSecond) || 0,
    at: String(h.at),
  });
}

/** A stored heartbeat, or null when the text is not one. */
export function parseHeartbeat(text: string | null): NodeHeartbeat | null {
  if (text === null) return null;
  const v = jsonOrUndefined(text) as { nodeId?: unknown } | undefined;
  return typeof v?.nodeId === "string" ? v as NodeHeartbeat : null;
}

/** A device's channel bindings (a hash: channel id → conversation id). */
export const bindingsKey = (prefix: string, deviceId: string) => `${prefix}binds:${deviceId}`;
/** A conversation's record (its member set). */
export const conversationKey = (prefix: string, id: string) => `${prefix}conv:${id}`;
/** The devices that joined a conversation (a set). */
export const joinedKey = (prefix: string, id: string) => `${prefix}joined:${id}`;

/** Refuse a channel id that is not a u32 other than 0. */
export function checkChannelId(channel: unknown): asserts channel is number {
  if (
    typeof channel !== "number" || !Number.isInteger(channel) || channel < 1 ||
    channel > 0xffff_ffff
  ) {
    throw new InvalidValue("channel id", channel, "an integer from 1 to 4294967295");
  }
}

/** Refuse an empty or overlong conversation id. */
export function checkConversationId(id: unknown): asserts id is string {
  if (typeof id !== "string" || id.length === 0 || id.length > 256) {
    throw new InvalidValue("conversation id", id, "a non-empty string of at most 256 characters");
  }
}

/** Refuse a binding limit that is not a positive integer. */
export function checkMaxBindings(max: unknown): asserts max is number {
  if (typeof max !== "number" || !Number.isInteger(max) || max < 1) {
    throw new InvalidValue("binding limit", max, "a positive integer");
  }
}

/** The checks of a `bind` call: ids, channel and limit; returns the TTL in whole seconds. */
export function checkBind(
  deviceId: string,
  channel: number,
  conversationId: string,
  maxBindings: number,
  ttl: number,
): number {
  checkDeviceId(deviceId);
  checkChannelId(channel);
  checkConversationId(conversationId);
  checkMaxBindings(maxBindings);
  return ttlSeconds(ttl);
}

/** Refuse an empty or non-string device id, naming the value. */
export function checkDeviceId(deviceId: unknown): asserts deviceId is string {
  if (typeof deviceId !== "string" || deviceId.length === 0 || deviceId.length > 512) {
    throw new InvalidValue("device id", deviceId, "a non-empty string of at most 512 characters");
  }
}

/** Refuse a bus channel name that is not a non-empty string. */
export function checkChannel(channel: unknown): asserts channel is string {
  if (typeof channel !== "string" || channel.length === 0 || channel.length > 1024) {
    throw new InvalidValue("bus channel", channel, "a non-empty string of at most 1024 characters");
  }
}

/** Redis EX takes whole seconds ≥ 1; fractions round up so a key never lives shorter. */
export function ttlSeconds(ttl: unknown): number {
  if (typeof ttl !== "number" || !Number.isFinite(ttl) || ttl <= 0 || ttl > 2 ** 31) {
    throw new InvalidValue("ttl", ttl, "a positive number of seconds");
  }
  return Math.ceil(ttl);
}

export function checkMessage(message: unknown): asserts message is Uint8Array {
  if (!(message instanceof Uint8Array)) {
    throw new InvalidValue("bus message", typeof message, "a Uint8Array");
  }
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);
/** The JSON value of stored text, or undefined when the text is not JSON. */
function jsonOrUndefined(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

const isNonEmpty = (v: unknown): v is string => typeof v === "string" && v.length > 0;
const isNullableString = (v: unknown) => v === null || typeof v === "string";

/** A presence value as stored, or null when the stored text is not one. */
export function parsePresence(text: string): Presence | null {
  const v = jsonOrUndefined(text);
  if (!isObject(v) || !isNonEmpty(v.entity) || typeof v.expires_at !== "string") return null;
  if (v.state !== "online" && v.state !== "offline") return null;
  const u = v.user;
  if (!isObject(u) || typeof u.id !== "string" || typeof u.handle !== "string") return null;
  if (!isNullableString(u.display_name) || !isNullableString(u.avatar_url)) return null;
  return v as unknown as Presence;
}

/** Refuse a presence value that would not read back. */
export function checkPresence(presence: Presence): string {
  const text = JSON.stringify(presence);
  if (typeof text !== "string" || parsePresence(text) === null) {
    throw new InvalidValue(
      "presence",
      presence,
      "{entity, state: online|offline, expires_at, user: {id, handle, display_name, avatar_url}}",
    );
  }
  return text;
}

/** A route as stored, or null when the stored text is not one. */
export function parseRoute(text: string): Route | null {
  const v = jsonOrUndefined(text);
  if (!isObject(v) || !isNonEmpty(v.nodeId) || !isNonEmpty(v.sessionId)) return null;
  return { nodeId: v.nodeId, sessionId: v.sessionId };
}

export function checkRoute(route: Route): string {
  if (!isObject(route) || !isNonEmpty(route.nodeId) || !isNonEmpty(route.sessionId)) {
    throw new InvalidValue("route", route, "{nodeId, sessionId} as non-empty strings");
  }
  return JSON.stringify({ nodeId: route.nodeId, sessionId: route.sessionId });
}

const PEER_STATUSES: readonly PeerStatus[] = ["active", "pending", "blocked"];

/** A control event with exactly its known fields, or null when `v` is not one. */
export function toControlEvent(v: unknown): ControlEvent | null {
  if (!isObject(v)) return null;
  switch (v.kind) {
    case "device-approved":
    case "device-revoked":
    case "device-key-changed":
      return isNonEmpty(v.deviceId) ? { kind: v.kind, deviceId: v.deviceId } : null;
    case "member-removed":
      return isNonEmpty(v.groupId) && isNonEmpty(v.deviceId)
        ? { kind: v.kind, groupId: v.groupId, deviceId: v.deviceId }
        : null;
    case "peer-status":
      return isNonEmpty(v.domain) && PEER_STATUSES.includes(v.status as PeerStatus)
        ? { kind: v.kind, domain: v.domain, status: v.status as PeerStatus }
        : null;
    default:
      return null;
  }
}

/** Encode a control event for the bus, refusing one that receivers would drop. */
export function encodeControl(event: ControlEvent): Uint8Array {
  const clean = toControlEvent(event);
  if (clean === null) {
    throw new InvalidValue("control event", event, "a known kind with its fields");
  }
  return new TextEncoder().encode(JSON.stringify(clean));
}

/** A control event read back from the bus or the control stream, or null when malformed. */
export function decodeControl(message: Uint8Array): ControlEvent | null {
  try {
    return toControlEvent(JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(message)));
  } catch {
    return null;
  }
}

/** Wrap a control handler as a bus handler: malformed messages are dropped with a warning. */
export function controlHandler(
  onEvent: (event: ControlEvent) => void,
  warn: (message: string) => void,
): (message: Uint8Array) => void {
  const decoder = new TextDecoder("utf-8", { fatal: true });
  return (message) => {
    let parsed: unknown;
    try {
      parsed = JSON.parse(decoder.decode(message));
    } catch {
      warn(`ephemeral: ignored a control message that is not JSON (${message.length} bytes)`);
      return;
    }
    const event = toControlEvent(parsed);
    if (event === null) {
      warn(`ephemeral: ignored a malformed control event (${message.length} bytes)`);
      return;
    }
    onEvent(event);
  };
}

/** Call a subscriber without letting its exception escape into the delivery loop. */
export function deliver(
  handler: (message: Uint8Array) => void,
  message: Uint8Array,
  warn: (message: string) => void,
): void {
  try {
    handler(message);
  } catch (err) {
    warn(`ephemeral: a bus subscriber threw: ${err instanceof Error ? err.message : String(err)}`);
  }
}

export const defaultWarn = (message: string) => console.warn(message);
