/**
 * The Redis ephemeral store (npm:ioredis): presence, routes and interrupt keys with TTLs
 * (ccp1.md §6) and a binary publish/subscribe bus between nodes.
 *
 * Failure policy: nothing durable lives here, so a call never waits for Redis to come back.
 * Commands are refused at once while the connection is down (no offline queue), a connection
 * attempt gives up after CONNECT_TIMEOUT_MS and a command after COMMAND_TIMEOUT_MS; every
 * failure is a RedisFailure "redis failure: <what>: <reason>". ioredis keeps reconnecting in the
 * background and re-subscribes its channels when Redis is back.
 */
import { Redis, type RedisOptions } from "ioredis";
import { Buffer } from "node:buffer";
import { InvalidValue, RedisFailure } from "../errors.ts";
import type {
  BindOutcome,
  ControlEvent,
  EphemeralStore,
  NodeHeartbeat,
  Presence,
  RateRule,
  RateVerdict,
  Route,
  StreamEvent,
} from "../types.ts";
import {
  bindingsKey,
  checkBind,
  checkChannel,
  checkChannelId,
  checkConversationId,
  checkDeviceId,
  checkHeartbeat,
  checkMessage,
  checkPresence,
  checkRate,
  checkRateKey,
  checkRoute,
  checkStream,
  checkStreamId,
  CONTROL_CHANNEL,
  CONTROL_STREAM_LENGTH,
  controlHandler,
  conversationKey,
  defaultWarn,
  deliver,
  encodeControl,
  type EphemeralOptions,
  interruptKey,
  joinedKey,
  nodeKey,
  nodesKey,
  parseHeartbeat,
  parsePresence,
  parseRoute,
  presenceKey,
  rateKey,
  routeKey,
  streamKey,
  ttlSeconds,
} from "./shared.ts";

/** How long one connection attempt may take before it counts as failed. */
export const CONNECT_TIMEOUT_MS = 2000;
/** How long one command may wait for its reply. */
export const COMMAND_TIMEOUT_MS = 2000;
/** An event stream nobody appended to for this long is dropped by Redis (readers start over). */
export const STREAM_IDLE_MS = 3_600_000;
/** Upper bound of the pause between reconnection attempts. */
const MAX_RECONNECT_DELAY_MS = 2000;

/** Delete the route KEYS[1] only while it still names the session ARGV[1] (compare-and-delete). */
const CLEAR_ROUTE_LUA = `
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local ok, route = pcall(cjson.decode, v)
if ok and type(route) == 'table' and route.sessionId == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`;

/** A session attached: KEYS route, presence; ARGV route, presence, ttl seconds. */
const ATTACH_LUA = `
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
return 1`;

/**
 * A session ended: KEYS route, presence; ARGV session id, presence, ttl seconds. The route is
 * deleted only while it names this session (as CLEAR_ROUTE_LUA).
 */
const DETACH_LUA = `
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])` + CLEAR_ROUTE_LUA;

/**
 * One GCRA step on Redis's clock (the arithmetic of gcra() in shared.ts), atomic per key.
 * KEYS[1] the bucket; ARGV interval ms, burst, cost (0: check only). Returns {allowed, retry ms}.
 */
const RATE_LUA = `
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local units = cost
if units == 0 then units = 1 end
local nxt = tat + units * interval
local allow_at = nxt - burst * interval
if allow_at > now then return {0, math.ceil(allow_at - now)} end
if cost > 0 then
  redis.call('SET', KEYS[1], string.format('%.3f', nxt), 'PX', math.max(1, math.ceil(nxt - now)))
end
return {1, 0}`;

/**
 * Bind a channel to a conversation (ccp1.md §4.1), atomically: KEYS = bindings hash, joined set
 * of the conversation; ARGV = channel, conversation id, max bindings, ttl, device id.
 */
const BIND_LUA = `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and cur ~= ARGV[2] then return {'taken', cur} end
if not cur then
  local n = redis.call('HLEN', KEYS[1])
  if n >= tonumber(ARGV[3]) then return {'full', tostring(n)} end
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('SADD', KEYS[2], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[4])
if cur then return {'already'} end
return {'bound'}`;

/** Unbind: KEYS = bindings hash; ARGV = channel, device id, joined-key prefix. */
const UNBIND_LUA = `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SREM', ARGV[3] .. cur, ARGV[2])
return cur`;

/** Extend a device's bindings, their joined sets and records: KEYS = bindings hash;
 * ARGV = ttl, joined-key prefix, conversation-key prefix. */
const TOUCH_BINDINGS_LUA = `
local ids = redis.call('HVALS', KEYS[1])
for _, id in ipairs(ids) do
  redis.call('EXPIRE', ARGV[2] .. id, ARGV[1])
  redis.call('EXPIRE', ARGV[3] .. id, ARGV[1])
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return #ids`;

type Handler = (message: Uint8Array) => void;

export interface RedisEphemeralOptions extends EphemeralOptions {
  /** CLIENT SETNAME base; the two connections are named `<name>:cmd` and `<name>:sub`. */
  connectionName?: string;
}

/** What a Redis URL may say, checked before ioredis sees it. */
interface ParsedUrl {
  /** host:port/db for messages; never the credentials. */
  display: string;
  /** Strings that must never appear in a message (the password, raw and decoded). */
  secrets: string[];
  /** The database index (0 when the URL names none). */
  db: number;
}

function parseRedisUrl(url: string): ParsedUrl {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new RedisFailure("redis failure: redis_url is not a valid URL (expected redis://…)");
  }
  if (u.protocol !== "redis:" && u.protocol !== "rediss:") {
    throw new RedisFailure(
      `redis failure: redis_url scheme ${JSON.stringify(u.protocol)} is not redis: or rediss:`,
    );
  }
  const db = u.pathname.replace(/^\//, "");
  if (db !== "" && !/^\d+$/.test(db)) {
    throw new RedisFailure(
      `redis failure: redis_url database ${JSON.stringify(db)} is not a number`,
    );
  }
  const secrets: string[] = [];
  if (u.password) {
    secrets.push(u.password);
    try {
      secrets.push(decodeURIComponent(u.password));
    } catch { /* the raw form is enough */ }
  }
  const port = u.port || "6379";
  return {
    display: `${u.protocol}//${u.hostname}:${port}/${db || "0"}`,
    secrets,
    db: Number(db || "0"),
  };
}

/** One ioredis connection plus what we learnt about its health. */
class Link {
  readonly client: Redis;
  /** The last connection error, redacted; null while healthy. */
  lastError: string | null = null;
  /** Set when Redis refused the configured database: ioredis would carry on in database 0,
   * so every call fails instead of touching the wrong keys. */
  configError: string | null = null;

  constructor(
    url: string,
    name: string,
    private readonly redact: (text: string) => string,
    private readonly warn: (message: string) => void,
    /** Commands issued in one tick leave in one write (the command link, not the subscriber). */
    autoPipelining = false,
  ) {
    const options: RedisOptions = {
      lazyConnect: true,
      enableAutoPipelining: autoPipelining,
      connectTimeout: CONNECT_TIMEOUT_MS,
      commandTimeout: COMMAND_TIMEOUT_MS,
      // Fail instead of queueing while disconnected: callers get an answer at once.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      // Re-subscribing is done by the store (see #resubscribe): ioredis's own leaves the
      // SUBSCRIBE promise unhandled, and a failure there would end the process.
      autoResubscribe: false,
      connectionName: name,
      retryStrategy: (times) => Math.min(100 * 2 ** Math.min(times - 1, 5), MAX_RECONNECT_DELAY_MS),
    };
    this.client = new Redis(url, options);
    // Without an 'error' listener an unreachable Redis would crash the process.
    this.client.on("error", (err: Error) => {
      const message = this.redact(err.message || String(err));
      if (/DB index is out of range/i.test(message)) this.configError = message;
      if (message !== this.lastError) this.warn(`ephemeral: redis ${name}: ${message}`);
      this.lastError = message;
    });
    // A connection the server closed emits no 'error', only a scheduled reconnection.
    this.client.on("reconnecting", () => {
      if (this.lastError !== null) return;
      this.lastError = "connection lost, reconnecting";
      this.warn(`ephemeral: redis ${name}: connection lost, reconnecting`);
    });
    this.client.on("ready", () => {
      if (this.lastError !== null) this.warn(`ephemeral: redis ${name}: connected again`);
      this.lastError = null;
    });
  }

  get ready(): boolean {
    return this.client.status === "ready";
  }

  /** First connection; bounded by CONNECT_TIMEOUT_MS. Failure is remembered, not thrown:
   * ioredis keeps retrying and calls fail with the reason meanwhile. */
  async connect(): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    // The TCP connect is bounded by connectTimeout, but a server that accepts and then stays
    // silent would hold each handshake command for COMMAND_TIMEOUT_MS: bound the whole.
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        this.lastError ??= `no answer within ${CONNECT_TIMEOUT_MS} ms`;
        resolve();
      }, CONNECT_TIMEOUT_MS);
    });
    const attempt = this.client.connect().catch((err) => {
      this.lastError ??= this.redact(err instanceof Error ? err.message : String(err));
    });
    await Promise.race([attempt, timeout]);
    clearTimeout(timer);
  }

  /** QUIT when connected (DISCONNECT otherwise) and wait until the socket is closed. */
  async shutdown(): Promise<void> {
    const c = this.client;
    // Without a socket (never connected, or between reconnection attempts) there is nothing
    // to wait for: disconnect() only cancels the pending reconnection.
    if (c.status !== "connecting" && c.status !== "connect" && c.status !== "ready") {
      c.disconnect();
      return;
    }
    const ended = new Promise<void>((resolve) => c.once("end", () => resolve()));
    if (c.status === "ready") c.quit().catch(() => c.disconnect());
    else c.disconnect();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const giveUp = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        // The server did not close its side (it stopped answering): drop the socket.
        (c as unknown as { stream?: { destroy(): void } }).stream?.destroy();
        resolve();
      }, 1000);
    });
    await Promise.race([ended, giveUp]);
    clearTimeout(timer);
  }
}

/** An EphemeralStore on Redis: one command connection, one lazily opened subscriber. */
export class RedisEphemeralStore implements EphemeralStore {
  readonly kind = "redis" as const;
  readonly #url: string;
  readonly #parsed: ParsedUrl;
  readonly #prefix: string;
  /** Prefix of pub/sub channels: see the constructor. */
  readonly #channelPrefix: string;
  readonly #name: string;
  readonly #warn: (message: string) => void;
  readonly #cmd: Link;
  #sub: Link | null = null;
  #subConnecting: Promise<Link> | null = null;
  /** Handlers per (prefixed) channel; a channel is in the map while it has one. */
  readonly #handlers = new Map<string, Set<Handler>>();
  /** Channels SUBSCRIBEd on the subscriber connection. */
  readonly #subscribed = new Set<string>();
  /** SUBSCRIBE/UNSUBSCRIBE run one at a time so their effects never cross. */
  #serial: Promise<unknown> = Promise.resolve();
  #closed = false;

  private constructor(url: string, parsed: ParsedUrl, options: RedisEphemeralOptions) {
    this.#url = url;
    this.#parsed = parsed;
    this.#prefix = options.keyPrefix ?? "";
    // Keys live in the URL's database, but pub/sub channels are global to the Redis server:
    // deployments (or test runs) on different databases of one server would hear each other's
    // route changes, nudges and revocations. Channels outside database 0 carry its index
    // (database 0 keeps the plain names, so nodes of earlier releases still share its bus).
    this.#channelPrefix = this.#prefix + (parsed.db === 0 ? "" : `db${parsed.db}:`);
    this.#name = options.connectionName ?? "commucat";
    this.#warn = options.warn ?? defaultWarn;
    this.#cmd = new Link(url, `${this.#name}:cmd`, this.#redact, this.#warn, true);
  }

  /** Connect (waiting at most CONNECT_TIMEOUT_MS). An unreachable Redis does not make this
   * throw: the store is returned, its calls fail with RedisFailure until Redis is reachable.
   * A malformed URL throws RedisFailure. */
  static async open(
    url: string,
    options: RedisEphemeralOptions = {},
  ): Promise<RedisEphemeralStore> {
    const store = new RedisEphemeralStore(url, parseRedisUrl(url), options);
    await store.#cmd.connect();
    return store;
  }

  #redact = (text: string): string => {
    let out = text;
    for (const secret of this.#parsed.secrets) {
      if (secret.length > 0) out = out.split(secret).join("***");
    }
    return out;
  };

  #failure(what: string, err: unknown, link: Link): RedisFailure {
    if (err instanceof RedisFailure || err instanceof InvalidValue) return err;
    const raw = err instanceof Error ? err.message : String(err);
    // ioredis's own wording for "not connected" says nothing useful to an operator.
    const notConnected = /enableOfflineQueue|Connection is closed|MaxRetriesPerRequest/i.test(raw);
    const reason = link.ready && !notConnected
      ? raw === "Command timed out" ? `no reply within ${COMMAND_TIMEOUT_MS} ms` : this.#redact(raw)
      : `not connected to ${this.#parsed.display} (${link.lastError ?? "connection lost"})`;
    return new RedisFailure(`redis failure: ${what}: ${reason}`);
  }

  async #command<T>(what: string, fn: (client: Redis) => Promise<T>): Promise<T> {
    if (this.#closed) throw new RedisFailure("redis failure: the ephemeral store is closed");
    if (this.#cmd.configError !== null) {
      throw new RedisFailure(
        `redis failure: ${what}: ${this.#parsed.display}: ${this.#cmd.configError}`,
      );
    }
    try {
      return await fn(this.#cmd.client);
    } catch (err) {
      throw this.#failure(what, err, this.#cmd);
    }
  }

  async setPresence(deviceId: string, presence: Presence, ttl: number): Promise<void> {
    checkDeviceId(deviceId);
    const text = checkPresence(presence);
    const ex = ttlSeconds(ttl);
    await this.#command(
      "set presence",
      (c) => c.set(presenceKey(this.#prefix, deviceId), text, "EX", ex),
    );
  }

  async getPresence(deviceId: string): Promise<Presence | null> {
    checkDeviceId(deviceId);
    const text = await this.#command(
      "get presence",
      (c) => c.get(presenceKey(this.#prefix, deviceId)),
    );
    return text === null ? null : parsePresence(text);
  }

  async setRoute(deviceId: string, route: Route, ttl: number): Promise<void> {
    checkDeviceId(deviceId);
    const text = checkRoute(route);
    const ex = ttlSeconds(ttl);
    await this.#command(
      "set route",
      (c) => c.set(routeKey(this.#prefix, deviceId), text, "EX", ex),
    );
  }

  async getRoute(deviceId: string): Promise<Route | null> {
    checkDeviceId(deviceId);
    const text = await this.#command("get route", (c) => c.get(routeKey(this.#prefix, deviceId)));
    return text === null ? null : parseRoute(text);
  }

  async clearRoute(deviceId: string, sessionId: string): Promise<void> {
    checkDeviceId(deviceId);
    const key = routeKey(this.#prefix, deviceId);
    await this.#command("clear route", (c) => c.eval(CLEAR_ROUTE_LUA, 1, key, String(sessionId)));
  }

  async attachSession(
    deviceId: string,
    route: Route,
    presence: Presence,
    ttl: number,
  ): Promise<void> {
    checkDeviceId(deviceId);
    const routeText = checkRoute(route);
    const presenceText = checkPresence(presence);
    const ex = String(ttlSeconds(ttl));
    const keys = [routeKey(this.#prefix, deviceId), presenceKey(this.#prefix, deviceId)];
    await this.#command(
      "attach session",
      (c) => c.eval(ATTACH_LUA, 2, keys[0], keys[1], routeText, presenceText, ex),
    );
  }

  async detachSession(
    deviceId: string,
    sessionId: string,
    presence: Presence,
    ttl: number,
  ): Promise<void> {
    checkDeviceId(deviceId);
    const presenceText = checkPresence(presence);
    const ex = String(ttlSeconds(ttl));
    const keys = [routeKey(this.#prefix, deviceId), presenceKey(this.#prefix, deviceId)];
    await this.#command(
      "detach session",
      (c) => c.eval(DETACH_LUA, 2, keys[0], keys[1], String(sessionId), presenceText, ex),
    );
  }

  async setInterrupt(deviceId: string, reason: string, ttl: number): Promise<void> {
    checkDeviceId(deviceId);
    const ex = ttlSeconds(ttl);
    const key = interruptKey(this.#prefix, deviceId);
    await this.#command("set interrupt", (c) => c.set(key, String(reason), "EX", ex));
  }

  async getInterrupts(deviceIds: string[]): Promise<(string | null)[]> {
    for (const id of deviceIds) checkDeviceId(id);
    if (deviceIds.length === 0) return [];
    const keys = deviceIds.map((id) => interruptKey(this.#prefix, id));
    return await this.#command("get interrupts", (c) => c.mget(...keys));
  }

  async getInterrupt(deviceId: string): Promise<string | null> {
    checkDeviceId(deviceId);
    return await this.#command("get interrupt", (c) => c.get(interruptKey(this.#prefix, deviceId)));
  }

  async bindings(deviceId: string): Promise<Map<number, string>> {
    checkDeviceId(deviceId);
    const all = await this.#command(
      "get bindings",
      (c) => c.hgetall(bindingsKey(this.#prefix, deviceId)),
    );
    const out = new Map<number, string>();
    for (const [channel, id] of Object.entries(all)) out.set(Number(channel), id);
    return out;
  }

  async bind(
    deviceId: string,
    channel: number,
    conversationId: string,
    maxBindings: number,
    ttl: number,
  ): Promise<BindOutcome> {
    const ex = checkBind(deviceId, channel, conversationId, maxBindings, ttl);
    const reply = await this.#command("bind channel", (c) =>
      c.eval(
        BIND_LUA,
        2,
        bindingsKey(this.#prefix, deviceId),
        joinedKey(this.#prefix, conversationId),
        String(channel),
        conversationId,
        String(maxBindings),
        String(ex),
        deviceId,
      )) as string[];
    switch (reply[0]) {
      case "taken":
        return { outcome: "taken", conversationId: reply[1] };
      case "full":
        return { outcome: "full", count: Number(reply[1]) };
      case "already":
        return { outcome: "already" };
      default:
        return { outcome: "bound" };
    }
  }

  async unbind(deviceId: string, channel: number): Promise<string | null> {
    checkDeviceId(deviceId);
    checkChannelId(channel);
    const reply = await this.#command("unbind channel", (c) =>
      c.eval(
        UNBIND_LUA,
        1,
        bindingsKey(this.#prefix, deviceId),
        String(channel),
        deviceId,
        joinedKey(this.#prefix, ""),
      )) as string | null;
    return typeof reply === "string" ? reply : null;
  }

  async touchBindings(deviceId: string, ttl: number): Promise<void> {
    checkDeviceId(deviceId);
    const ex = ttlSeconds(ttl);
    await this.#command("touch bindings", (c) =>
      c.eval(
        TOUCH_BINDINGS_LUA,
        1,
        bindingsKey(this.#prefix, deviceId),
        String(ex),
        joinedKey(this.#prefix, ""),
        conversationKey(this.#prefix, ""),
      ));
  }

  async putConversation(conversationId: string, record: string, ttl: number): Promise<void> {
    checkConversationId(conversationId);
    const ex = ttlSeconds(ttl);
    await this.#command(
      "store conversation",
      (c) => c.set(conversationKey(this.#prefix, conversationId), String(record), "EX", ex),
    );
  }

  async getConversations(conversationIds: string[]): Promise<(string | null)[]> {
    if (conversationIds.length === 0) return [];
    for (const id of conversationIds) checkConversationId(id);
    return await this.#command(
      "get conversations",
      (c) => c.mget(...conversationIds.map((id) => conversationKey(this.#prefix, id))),
    );
  }

  async joinedOf(conversationIds: string[]): Promise<string[][]> {
    if (conversationIds.length === 0) return [];
    for (const id of conversationIds) checkConversationId(id);
    const replies = await this.#command("get joined members", (c) => {
      const pipe = c.pipeline();
      for (const id of conversationIds) pipe.smembers(joinedKey(this.#prefix, id));
      return pipe.exec();
    });
    return (replies ?? []).map(([err, members]) => {
      if (err) throw this.#failure("get joined members", err, this.#cmd);
      return members as string[];
    });
  }

  async publish(channel: string, message: Uint8Array): Promise<void> {
    checkChannel(channel);
    checkMessage(message);
    // Buffer.from copies: the caller may reuse its buffer as soon as this returns.
    const bytes = Buffer.from(message);
    await this.#command("publish", (c) => c.publish(this.#channelPrefix + channel, bytes));
  }

  async publishControl(event: ControlEvent): Promise<void> {
    const bytes = Buffer.from(encodeControl(event));
    const stream = streamKey(this.#prefix, CONTROL_CHANNEL);
    await this.#command("publish control", async (c) => {
      const replies = await c.multi()
        .xadd(stream, "MAXLEN", "~", String(CONTROL_STREAM_LENGTH), "*", "m", bytes)
        .pexpire(stream, STREAM_IDLE_MS)
        .publish(this.#channelPrefix + CONTROL_CHANNEL, bytes)
        .exec();
      const failed = replies?.find(([err]) => err !== null);
      if (!replies || failed) throw failed?.[0] ?? new Error("transaction aborted");
    });
  }

  subscribeControl(onEvent: (event: ControlEvent) => void): Promise<() => Promise<void>> {
    return this.subscribe(CONTROL_CHANNEL, controlHandler(onEvent, this.#warn));
  }

  /** Subscribe a handler; all subscriptions share one subscriber connection. The returned
   * function removes this handler only (UNSUBSCRIBE when it was the channel's last); it never
   * throws — if Redis is down the channel stays subscribed server-side, which is harmless. */
  async subscribe(
    channel: string,
    onMessage: (message: Uint8Array) => void,
  ): Promise<() => Promise<void>> {
    checkChannel(channel);
    if (this.#closed) throw new RedisFailure("redis failure: the ephemeral store is closed");
    const full = this.#channelPrefix + channel;
    const handler: Handler = (m) => onMessage(m);
    let set = this.#handlers.get(full);
    if (set === undefined) this.#handlers.set(full, set = new Set());
    set.add(handler);
    try {
      await this.#serialize(async () => {
        if (this.#subscribed.has(full) || !this.#handlers.get(full)?.has(handler)) return;
        const link = await this.#subscriber();
        if (link.configError !== null) {
          throw new RedisFailure(
            `redis failure: subscribe: ${this.#parsed.display}: ${link.configError}`,
          );
        }
        try {
          await link.client.subscribe(full);
        } catch (err) {
          throw this.#failure("subscribe", err, link);
        }
        this.#subscribed.add(full);
      });
    } catch (err) {
      this.#removeHandler(full, handler);
      throw err;
    }
    let active = true;
    return async () => {
      if (!active) return;
      active = false;
      this.#removeHandler(full, handler);
      await this.#serialize(async () => {
        if (this.#handlers.has(full) || !this.#subscribed.has(full) || this.#closed) return;
        this.#subscribed.delete(full);
        const link = this.#sub;
        if (link === null || !link.ready) return;
        try {
          await link.client.unsubscribe(full);
        } catch (err) {
          this.#warn(`ephemeral: unsubscribe: ${this.#failure("unsubscribe", err, link).message}`);
        }
      });
    };
  }

  #removeHandler(full: string, handler: Handler): void {
    const set = this.#handlers.get(full);
    if (set === undefined) return;
    set.delete(handler);
    if (set.size === 0) this.#handlers.delete(full);
  }

  #serialize(fn: () => Promise<void>): Promise<void> {
    const run = this.#serial.then(fn, fn);
    this.#serial = run.catch(() => {});
    return run;
  }

  /** The subscriber connection, opened on first use. */
  #subscriber(): Promise<Link> {
    if (this.#subConnecting !== null) return this.#subConnecting;
    const link = new Link(this.#url, `${this.#name}:sub`, this.#redact, this.#warn);
    link.client.on("messageBuffer", (channel: Buffer, message: Buffer) => {
      const set = this.#handlers.get(channel.toString());
      if (set === undefined) return;
      // A plain Uint8Array copy: independent of the parser's buffers and of Buffer's quirks.
      const bytes = new Uint8Array(message);
      for (const handler of [...set]) deliver(handler, bytes, this.#warn);
    });
    link.client.on("ready", () => this.#resubscribe(link));
    this.#sub = link;
    this.#subConnecting = link.connect().then(() => link);
    return this.#subConnecting;
  }

  /** After a reconnection, subscribe again to every channel that has handlers. If that fails
   * on a live connection, drop it so the next reconnection tries again. */
  #resubscribe(link: Link): void {
    this.#serialize(async () => {
      const channels = [...this.#subscribed];
      if (this.#closed || channels.length === 0 || !link.ready) return;
      try {
        await link.client.subscribe(...channels);
      } catch (err) {
        const reason = this.#failure("resubscribe", err, link).message;
        this.#warn(`ephemeral: ${reason}; reconnecting to retry`);
        if (link.ready) link.client.disconnect(true);
      }
    }).catch(() => {});
  }

  async consumeRate(key: string, rule: RateRule, cost: number): Promise<RateVerdict> {
    checkRateKey(key);
    const units = checkRate(rule, cost);
    const full = rateKey(this.#prefix, key);
    const reply = await this.#command(
      "rate limit",
      (c) => c.eval(RATE_LUA, 1, full, rule.intervalMs, rule.burst, units) as Promise<number[]>,
    );
    return { allowed: Number(reply[0]) === 1, retryAfterMs: Number(reply[1]) };
  }

  async appendEvent(stream: string, message: Uint8Array, maxLength: number): Promise<string> {
    checkStream(stream, maxLength);
    checkMessage(message);
    const key = streamKey(this.#prefix, stream);
    const bytes = Buffer.from(message);
    const id = await this.#command("append event", async (c) => {
      const replies = await c.multi()
        .xadd(key, "MAXLEN", "~", String(maxLength), "*", "m", bytes)
        .pexpire(key, STREAM_IDLE_MS)
        .exec();
      const failed = replies?.find(([err]) => err !== null);
      if (!replies || failed) throw failed?.[0] ?? new Error("transaction aborted");
      return replies[0][1];
    });
    return String(id);
  }

  async readEvents(stream: string, after: string, count: number): Promise<StreamEvent[]> {
    checkStream(stream, count);
    checkStreamId(after);
    const key = streamKey(this.#prefix, stream);
    const rows = await this.#command(
      "read events",
      (c) => c.xrangeBuffer(key, `(${after}`, "+", "COUNT", count),
    );
    const out: StreamEvent[] = [];
    for (const [id, fields] of rows) {
      const at = fields.findIndex((f, i) => i % 2 === 0 && f.toString() === "m");
      if (at < 0) continue;
      out.push({ id: id.toString(), message: new Uint8Array(fields[at + 1]) });
    }
    return out;
  }

  async lastEventId(stream: string): Promise<string> {
    checkStream(stream);
    const key = streamKey(this.#prefix, stream);
    const rows = await this.#command(
      "last event",
      (c) => c.xrevrange(key, "+", "-", "COUNT", 1),
    );
    return rows.length > 0 ? rows[0][0] : "0";
  }

  async setNodeHeartbeat(heartbeat: NodeHeartbeat, ttl: number): Promise<void> {
    const text = checkHeartbeat(heartbeat);
    const ex = ttlSeconds(ttl);
    await this.#command("set node heartbeat", (c) =>
      c.multi()
        .set(nodeKey(this.#prefix, heartbeat.nodeId), text, "EX", ex)
        .sadd(nodesKey(this.#prefix), heartbeat.nodeId)
        .exec());
  }

  async listNodeHeartbeats(): Promise<NodeHeartbeat[]> {
    const ids = await this.#command("list nodes", (c) => c.smembers(nodesKey(this.#prefix)));
    if (ids.length === 0) return [];
    const texts = await this.#command(
      "read node heartbeats",
      (c) => c.mget(...ids.map((id) => nodeKey(this.#prefix, id))),
    );
    const stale = ids.filter((_, i) => texts[i] === null);
    // Nodes that stopped publishing leave the set, so it stays as small as the cluster.
    if (stale.length > 0) {
      await this.#command("drop stale nodes", (c) => c.srem(nodesKey(this.#prefix), ...stale));
    }
    return texts.map(parseHeartbeat).filter((h): h is NodeHeartbeat => h !== null)
      .sort((a, b) => a.nodeId.localeCompare(b.nodeId));
  }

  async ping(): Promise<void> {
    await this.#command("ping", (c) => c.ping());
  }

  /** Quit both connections and wait for their sockets to close. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#handlers.clear();
    await this.#serial;
    if (this.#subConnecting !== null) await this.#subConnecting;
    await Promise.all([this.#cmd.shutdown(), this.#sub?.shutdown()]);
  }
}
