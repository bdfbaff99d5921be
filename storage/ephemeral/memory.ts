/**
 * The in-memory ephemeral store: the embedded default when no Redis is configured. Same
 * semantics as the Redis store, within one process: TTLs are honoured (an expired entry is
 * invisible; expiry is checked on read and swept lazily on write, so there are no timers), and
 * bus messages are delivered asynchronously (microtasks, FIFO) like Redis pub/sub would.
 */
import { RedisFailure } from "../errors.ts";
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
  compareStreamIds,
  CONTROL_CHANNEL,
  CONTROL_STREAM_LENGTH,
  controlHandler,
  conversationKey,
  defaultWarn,
  deliver,
  encodeControl,
  type EphemeralOptions,
  gcra,
  interruptKey,
  joinedKey,
  nodeKey,
  parseHeartbeat,
  parsePresence,
  parseRoute,
  presenceKey,
  rateKey,
  routeKey,
  streamKey,
  ttlSeconds,
} from "./shared.ts";

type Handler = (message: Uint8Array) => void;

/**
 * The state several in-memory stores can share, standing in for one Redis server: keys with
 * expiry and the bus. Stores opened on the same hub see each other's keys and publishes (used
 * to run several "nodes" in one process, e.g. in tests).
 */
export class MemoryHub {
  readonly #keys = new Map<string, { value: string; expiresAt: number }>();
  readonly #hashes = new Map<string, { fields: Map<string, string>; expiresAt: number }>();
  readonly #channels = new Map<string, Set<Handler>>();
  readonly #streams = new Map<string, { entries: StreamEvent[]; lastMs: number; seq: number }>();
  #writesSinceSweep = 0;

  /** The fields of a hash (or set) key; null when missing or expired. */
  hash(key: string, now = Date.now()): Map<string, string> | null {
    const entry = this.#hashes.get(key);
    if (entry === undefined) return null;
    if (entry.expiresAt <= now) {
      this.#hashes.delete(key);
      return null;
    }
    return entry.fields;
  }

  /** The hash at `key`, created when missing; its lifetime becomes `ttlSeconds` from now. */
  hashForWrite(key: string, ttlSeconds: number): Map<string, string> {
    const fields = this.hash(key) ?? new Map<string, string>();
    this.#hashes.set(key, { fields, expiresAt: Date.now() + ttlSeconds * 1000 });
    if (++this.#writesSinceSweep >= 1024) this.sweep();
    return fields;
  }

  /** Extends a live hash's lifetime. */
  expireHash(key: string, ttlSeconds: number): void {
    const fields = this.hash(key);
    if (fields !== null) {
      this.#hashes.set(key, { fields, expiresAt: Date.now() + ttlSeconds * 1000 });
    }
  }

  /** Deletes a hash field; an emptied hash goes away. */
  hashDelete(key: string, field: string): void {
    const fields = this.hash(key);
    if (fields === null) return;
    fields.delete(field);
    if (fields.size === 0) this.#hashes.delete(key);
  }

  get(key: string, now = Date.now()): string | null {
    const entry = this.#keys.get(key);
    if (entry === undefined) return null;
    if (entry.expiresAt <= now) {
      this.#keys.delete(key);
      return null;
    }
    return entry.value;
  }

  set(key: string, value: string, ttlSeconds: number): void {
    this.#keys.set(key, { value, expiresAt: Date.now() + ttlSeconds * 1000 });
    // Sweep expired keys now and then so a long-running process does not accumulate them.
    if (++this.#writesSinceSweep >= 1024) this.sweep();
  }

  delete(key: string): void {
    this.#keys.delete(key);
  }

  /** Drop every expired entry; returns how many were dropped. */
  sweep(now = Date.now()): number {
    this.#writesSinceSweep = 0;
    let dropped = 0;
    for (const [key, entry] of this.#keys) {
      if (entry.expiresAt <= now) {
        this.#keys.delete(key);
        dropped++;
      }
    }
    for (const [key, entry] of this.#hashes) {
      if (entry.expiresAt <= now) {
        this.#hashes.delete(key);
        dropped++;
      }
    }
    return dropped;
  }

  /** The live values of every key that starts with `prefix`. */
  values(prefix: string, now = Date.now()): string[] {
    const out: string[] = [];
    for (const [key, entry] of this.#keys) {
      if (key.startsWith(prefix) && entry.expiresAt > now) out.push(entry.value);
    }
    return out;
  }

  /** Number of live keys (for tests and diagnostics). */
  size(): number {
    this.sweep();
    return this.#keys.size + this.#hashes.size;
  }

  /** XADD with MAXLEN: ids are `<ms>-<n>`, increasing even if the clock steps back. */
  append(stream: string, message: Uint8Array, maxLength: number): string {
    let s = this.#streams.get(stream);
    if (s === undefined) this.#streams.set(stream, s = { entries: [], lastMs: 0, seq: 0 });
    const now = Date.now();
    if (now > s.lastMs) {
      s.lastMs = now;
      s.seq = 0;
    } else {
      s.seq++;
    }
    const id = `${s.lastMs}-${s.seq}`;
    s.entries.push({ id, message: message.slice() });
    if (s.entries.length > maxLength) s.entries.splice(0, s.entries.length - maxLength);
    return id;
  }

  /** XRANGE (after, +] COUNT count. */
  read(stream: string, after: string, count: number): StreamEvent[] {
    const s = this.#streams.get(stream);
    if (s === undefined) return [];
    const out: StreamEvent[] = [];
    for (const entry of s.entries) {
      if (out.length >= count) break;
      if (compareStreamIds(entry.id, after) > 0) {
        out.push({ id: entry.id, message: entry.message.slice() });
      }
    }
    return out;
  }

  lastId(stream: string): string {
    const entries = this.#streams.get(stream)?.entries;
    return entries && entries.length > 0 ? entries[entries.length - 1].id : "0";
  }

  /** Forget every key and stream, as a restarted Redis without persistence would (tests). */
  flush(): void {
    this.#keys.clear();
    this.#streams.clear();
  }

  addHandler(channel: string, handler: Handler): void {
    let set = this.#channels.get(channel);
    if (set === undefined) this.#channels.set(channel, set = new Set());
    set.add(handler);
  }

  removeHandler(channel: string, handler: Handler): void {
    const set = this.#channels.get(channel);
    if (set === undefined) return;
    set.delete(handler);
    if (set.size === 0) this.#channels.delete(channel);
  }

  /** Deliver a copy of `message` to the channel's handlers, after the current task, in order.
   * Handlers registered when publishing receive it unless they unsubscribe before delivery. */
  publish(channel: string, message: Uint8Array, warn: (m: string) => void): void {
    const set = this.#channels.get(channel);
    if (set === undefined || set.size === 0) return;
    const targets = [...set];
    const copy = message.slice();
    queueMicrotask(() => {
      const current = this.#channels.get(channel);
      if (current === undefined) return;
      for (const handler of targets) if (current.has(handler)) deliver(handler, copy, warn);
    });
  }
}

/** An EphemeralStore over a MemoryHub (a fresh private hub unless one is given). */
export class MemoryEphemeralStore implements EphemeralStore {
  readonly kind = "memory" as const;
  readonly #hub: MemoryHub;
  readonly #prefix: string;
  readonly #warn: (message: string) => void;
  readonly #subscriptions = new Set<{ channel: string; handler: Handler }>();
  #closed = false;

  constructor(options: EphemeralOptions & { hub?: MemoryHub } = {}) {
    this.#hub = options.hub ?? new MemoryHub();
    this.#prefix = options.keyPrefix ?? "";
    this.#warn = options.warn ?? defaultWarn;
  }

  #open(): void {
    if (this.#closed) throw new RedisFailure("redis failure: the ephemeral store is closed");
  }

  setPresence(deviceId: string, presence: Presence, ttl: number): Promise<void> {
    return this.#run(() => {
      checkDeviceId(deviceId);
      const text = checkPresence(presence);
      this.#hub.set(presenceKey(this.#prefix, deviceId), text, ttlSeconds(ttl));
    });
  }

  getPresence(deviceId: string): Promise<Presence | null> {
    return this.#run(() => {
      checkDeviceId(deviceId);
      const text = this.#hub.get(presenceKey(this.#prefix, deviceId));
      return text === null ? null : parsePresence(text);
    });
  }

  setRoute(deviceId: string, route: Route, ttl: number): Promise<void> {
    return this.#run(() => {
      checkDeviceId(deviceId);
      const text = checkRoute(route);
      this.#hub.set(routeKey(this.#prefix, deviceId), text, ttlSeconds(ttl));
    });
  }

  getRoute(deviceId: string): Promise<Route | null> {
    return this.#run(() => {
      checkDeviceId(deviceId);
      const text = this.#hub.get(routeKey(this.#prefix, deviceId));
      return text === null ? null : parseRoute(text);
    });
  }

  clearRoute(deviceId: string, sessionId: string): Promise<void> {
    return this.#run(() => {
      checkDeviceId(deviceId);
      const key = routeKey(this.#prefix, deviceId);
      const text = this.#hub.get(key);
      // Synchronous compare-and-delete: nothing can interleave within one task.
      if (text !== null && parseRoute(text)?.sessionId === sessionId) this.#hub.delete(key);
    });
  }

  attachSession(deviceId: string, route: Route, presence: Presence, ttl: number): Promise<void> {
    return this.#run(() => {
      checkDeviceId(deviceId);
      const routeText = checkRoute(route);
      const presenceText = checkPresence(presence);
      const ex = ttlSeconds(ttl);
      this.#hub.set(routeKey(this.#prefix, deviceId), routeText, ex);
      this.#hub.set(presenceKey(this.#prefix, deviceId), presenceText, ex);
    });
  }

  detachSession(
    deviceId: string,
    sessionId: string,
    presence: Presence,
    ttl: number,
  ): Promise<void> {
    return this.#run(() => {
      checkDeviceId(deviceId);
      const presenceText = checkPresence(presence);
      const ex = ttlSeconds(ttl);
      const key = routeKey(this.#prefix, deviceId);
      const text = this.#hub.get(key);
      if (text !== null && parseRoute(text)?.sessionId === sessionId) this.#hub.delete(key);
      this.#hub.set(presenceKey(this.#prefix, deviceId), presenceText, ex);
    });
  }

  setInterrupt(deviceId: string, reason: string, ttl: number): Promise<void> {
    return this.#run(() => {
      checkDeviceId(deviceId);
      this.#hub.set(interruptKey(this.#prefix, deviceId), String(reason), ttlSeconds(ttl));
    });
  }

  getInterrupts(deviceIds: string[]): Promise<(string | null)[]> {
    return this.#run(() => {
      for (const id of deviceIds) checkDeviceId(id);
      return deviceIds.map((id) => this.#hub.get(interruptKey(this.#prefix, id)));
    });
  }

  getInterrupt(deviceId: string): Promise<string | null> {
    return this.#run(() => {
      checkDeviceId(deviceId);
      return this.#hub.get(interruptKey(this.#prefix, deviceId));
    });
  }

  bindings(deviceId: string): Promise<Map<number, string>> {
    return this.#run(() => {
      checkDeviceId(deviceId);
      const fields = this.#hub.hash(bindingsKey(this.#prefix, deviceId));
      const out = new Map<number, string>();
      for (const [channel, id] of fields ?? []) out.set(Number(channel), id);
      return out;
    });
  }

  bind(
    deviceId: string,
    channel: number,
    conversationId: string,
    maxBindings: number,
    ttl: number,
  ): Promise<BindOutcome> {
    return this.#run((): BindOutcome => {
      const ex = checkBind(deviceId, channel, conversationId, maxBindings, ttl);
      const key = bindingsKey(this.#prefix, deviceId);
      const current = this.#hub.hash(key);
      const bound = current?.get(String(channel));
      if (bound !== undefined && bound !== conversationId) {
        return { outcome: "taken", conversationId: bound };
      }
      if (bound === undefined && (current?.size ?? 0) >= maxBindings) {
        return { outcome: "full", count: current!.size };
      }
      this.#hub.hashForWrite(key, ex).set(String(channel), conversationId);
      this.#hub.hashForWrite(joinedKey(this.#prefix, conversationId), ex).set(deviceId, "1");
      return { outcome: bound === undefined ? "bound" : "already" };
    });
  }

  unbind(deviceId: string, channel: number): Promise<string | null> {
    return this.#run(() => {
      checkDeviceId(deviceId);
      checkChannelId(channel);
      const key = bindingsKey(this.#prefix, deviceId);
      const bound = this.#hub.hash(key)?.get(String(channel));
      if (bound === undefined) return null;
      this.#hub.hashDelete(key, String(channel));
      this.#hub.hashDelete(joinedKey(this.#prefix, bound), deviceId);
      return bound;
    });
  }

  touchBindings(deviceId: string, ttl: number): Promise<void> {
    return this.#run(() => {
      checkDeviceId(deviceId);
      const ex = ttlSeconds(ttl);
      const key = bindingsKey(this.#prefix, deviceId);
      for (const id of this.#hub.hash(key)?.values() ?? []) {
        this.#hub.expireHash(joinedKey(this.#prefix, id), ex);
        const record = this.#hub.get(conversationKey(this.#prefix, id));
        if (record !== null) this.#hub.set(conversationKey(this.#prefix, id), record, ex);
      }
      this.#hub.expireHash(key, ex);
    });
  }

  putConversation(conversationId: string, record: string, ttl: number): Promise<void> {
    return this.#run(() => {
      checkConversationId(conversationId);
      this.#hub.set(conversationKey(this.#prefix, conversationId), String(record), ttlSeconds(ttl));
    });
  }

  getConversations(conversationIds: string[]): Promise<(string | null)[]> {
    return this.#run(() =>
      conversationIds.map((id) => {
        checkConversationId(id);
        return this.#hub.get(conversationKey(this.#prefix, id));
      })
    );
  }

  joinedOf(conversationIds: string[]): Promise<string[][]> {
    return this.#run(() =>
      conversationIds.map((id) => {
        checkConversationId(id);
        return [...(this.#hub.hash(joinedKey(this.#prefix, id))?.keys() ?? [])];
      })
    );
  }

  publish(channel: string, message: Uint8Array): Promise<void> {
    return this.#run(() => {
      checkChannel(channel);
      checkMessage(message);
      this.#hub.publish(this.#prefix + channel, message, this.#warn);
    });
  }

  subscribe(
    channel: string,
    onMessage: (message: Uint8Array) => void,
  ): Promise<() => Promise<void>> {
    return this.#run(() => {
      checkChannel(channel);
      // A distinct wrapper per subscription, so subscribing one function twice yields two
      // independent subscriptions (as with the Redis store).
      const handler: Handler = (m) => onMessage(m);
      const sub = { channel: this.#prefix + channel, handler };
      this.#hub.addHandler(sub.channel, handler);
      this.#subscriptions.add(sub);
      return () => {
        if (this.#subscriptions.delete(sub)) this.#hub.removeHandler(sub.channel, handler);
        return Promise.resolve();
      };
    });
  }

  publishControl(event: ControlEvent): Promise<void> {
    return this.#run(() => {
      const bytes = encodeControl(event);
      this.#hub.append(streamKey(this.#prefix, CONTROL_CHANNEL), bytes, CONTROL_STREAM_LENGTH);
      this.#hub.publish(this.#prefix + CONTROL_CHANNEL, bytes, this.#warn);
    });
  }

  subscribeControl(onEvent: (event: ControlEvent) => void): Promise<() => Promise<void>> {
    return this.subscribe(CONTROL_CHANNEL, controlHandler(onEvent, this.#warn));
  }

  consumeRate(key: string, rule: RateRule, cost: number): Promise<RateVerdict> {
    return this.#run(() => {
      checkRateKey(key);
      const units = checkRate(rule, cost);
      const full = rateKey(this.#prefix, key);
      const now = Date.now();
      const stored = this.#hub.get(full, now);
      const step = gcra(stored === null ? null : Number(stored), now, rule, units);
      if (step.tat !== null) this.#hub.set(full, String(step.tat), (step.tat - now) / 1000);
      return step.verdict;
    });
  }

  appendEvent(stream: string, message: Uint8Array, maxLength: number): Promise<string> {
    return this.#run(() => {
      checkStream(stream, maxLength);
      checkMessage(message);
      return this.#hub.append(streamKey(this.#prefix, stream), message, maxLength);
    });
  }

  readEvents(stream: string, after: string, count: number): Promise<StreamEvent[]> {
    return this.#run(() => {
      checkStream(stream, count);
      checkStreamId(after);
      return this.#hub.read(streamKey(this.#prefix, stream), after, count);
    });
  }

  lastEventId(stream: string): Promise<string> {
    return this.#run(() => {
      checkStream(stream);
      return this.#hub.lastId(streamKey(this.#prefix, stream));
    });
  }

  setNodeHeartbeat(heartbeat: NodeHeartbeat, ttl: number): Promise<void> {
    return this.#run(() => {
      const text = checkHeartbeat(heartbeat);
      this.#hub.set(nodeKey(this.#prefix, heartbeat.nodeId), text, ttlSeconds(ttl));
    });
  }

  listNodeHeartbeats(): Promise<NodeHeartbeat[]> {
    return this.#run(() =>
      this.#hub.values(nodeKey(this.#prefix, ""))
        .map(parseHeartbeat)
        .filter((h): h is NodeHeartbeat => h !== null)
        .sort((a, b) => a.nodeId.localeCompare(b.nodeId))
    );
  }

  ping(): Promise<void> {
    return this.#run(() => {});
  }

  /** Ends this store's subscriptions; the hub (shared or not) keeps its keys. */
  close(): Promise<void> {
    this.#closed = true;
    for (const sub of this.#subscriptions) this.#hub.removeHandler(sub.channel, sub.handler);
    this.#subscriptions.clear();
    return Promise.resolve();
  }

  /** Run synchronously and settle a promise, so input errors reject instead of throwing. */
  #run<T>(fn: () => T): Promise<T> {
    try {
      this.#open();
      return Promise.resolve(fn());
    } catch (err) {
      return Promise.reject(err);
    }
  }
}
