/**
 * One relay node: the live connections it holds, delivery to a device wherever it is (this
 * node, another node over the bus, the relay queue, federation), the shared channel table,
 * control events from operators, and the periodic chores (keepalive, presence refresh, purge).
 *
 * @module
 */
import { expireWithNotices } from "./expiry_notices.ts";
import { encodeControlPayload, FrameType } from "../protocol/frame.ts";
import type { ControlEvent, Presence } from "../storage/types.ts";
import { parseRouteChange, type RouteChange } from "./channels.ts";
import { Connection, encodeItem, itemFromEncoded, type RoutedItem } from "./connection.ts";
import { Reconciler, ROUTE_STREAM_LENGTH } from "./reconcile.ts";
import { nodeChannel, type NodeContext, ROUTES_CHANNEL } from "./context.ts";
import { fatal, Titles } from "./errors.ts";
import { type FederationOptions, FederationRouter, localDeviceId } from "./federation.ts";
import { Router } from "./router.ts";
import type { Transport } from "./transport.ts";

/** How a copy was handed over right away, or the lookup still running. */
export type DeliveryOutcome = "live" | "waiting" | "dropped" | Promise<void>;

const FLAG_EPHEMERAL = 1;
/** A nudge: "the relay queue of this device has something new", no frame attached. */
const FLAG_NUDGE = 2;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Bus packet: flags(1) ‖ device length(2, BE) ‖ device id ‖ encoded frame. */
export function encodeBusPacket(
  deviceId: string,
  item: RoutedItem,
  ephemeral: boolean,
): Uint8Array {
  const id = encoder.encode(deviceId);
  const frame = encodeItem(item);
  const out = new Uint8Array(3 + id.length + frame.length);
  out[0] = ephemeral ? FLAG_EPHEMERAL : 0;
  out[1] = id.length >> 8;
  out[2] = id.length & 0xff;
  out.set(id, 3);
  out.set(frame, 3 + id.length);
  return out;
}

/**
 * Bus nudge: flags(1) = NUDGE ‖ device length(2, BE) ‖ device id. The frame itself is already in
 * the relay queue; the node holding the device claims it from there.
 */
export function encodeNudge(deviceId: string): Uint8Array {
  const id = encoder.encode(deviceId);
  const out = new Uint8Array(3 + id.length);
  out[0] = FLAG_NUDGE;
  out[1] = id.length >> 8;
  out[2] = id.length & 0xff;
  out.set(id, 3);
  return out;
}

/** The device a nudge names; null when `bytes` is not a well-formed nudge. */
export function decodeNudge(bytes: Uint8Array): string | null {
  if (bytes.length < 3 || (bytes[0] & FLAG_NUDGE) === 0) return null;
  const length = (bytes[1] << 8) | bytes[2];
  if (length === 0 || bytes.length !== 3 + length) return null;
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(3));
  } catch {
    return null;
  }
}

/** Reads a bus packet; null when malformed. */
export function decodeBusPacket(
  bytes: Uint8Array,
): { deviceId: string; item: RoutedItem; ephemeral: boolean } | null {
  if (bytes.length < 3) return null;
  const length = (bytes[1] << 8) | bytes[2];
  if (bytes.length < 3 + length) return null;
  try {
    return {
      ephemeral: (bytes[0] & FLAG_EPHEMERAL) !== 0,
      deviceId: decoder.decode(bytes.subarray(3, 3 + length)),
      item: itemFromEncoded(bytes.subarray(3 + length)),
    };
  } catch {
    return null;
  }
}

/** Writes relay envelopes in batches: frames arriving while a batch is written share the next. */
class EnqueueBatcher {
  #pending: {
    deviceId: string;
    channelId: number;
    payload: Uint8Array;
    done: PromiseWithResolvers<void>;
  }[] = [];
  #running = false;
  #idle: PromiseWithResolvers<void> | null = null;

  constructor(private readonly ctx: NodeContext) {}

  add(deviceId: string, item: RoutedItem): Promise<void> {
    const done = Promise.withResolvers<void>();
    this.#pending.push({ deviceId, channelId: item.channel, payload: encodeItem(item), done });
    if (!this.#running) {
      this.#running = true;
      queueMicrotask(() => this.#run());
    }
    return done.promise;
  }

  /** Resolves when nothing is waiting to be written. */
  idle(): Promise<void> {
    if (!this.#running) return Promise.resolve();
    this.#idle ??= Promise.withResolvers<void>();
    return this.#idle.promise;
  }

  async #run(): Promise<void> {
    const { storage, config, metrics } = this.ctx;
    while (this.#pending.length > 0) {
      const batch = this.#pending.splice(0, 1024);
      try {
        await storage.relay.enqueue(
          batch.map(({ deviceId, channelId, payload }) => ({ deviceId, channelId, payload })),
          config.limits.relayTtl,
        );
        metrics.enqueued(batch.length);
        for (const entry of batch) entry.done.resolve();
      } catch (err) {
        for (const entry of batch) entry.done.reject(err);
      }
    }
    this.#running = false;
    this.#idle?.resolve();
    this.#idle = null;
  }
}

export class RelayNode {
  readonly router: Router;
  readonly federation: FederationRouter;
  readonly #local = new Map<string, Connection>();
  readonly #all = new Set<Connection>();
  readonly #batcher: EnqueueBatcher;
  /** Nudges being published after a durable enqueue (awaited on stop). */
  readonly #nudging = new Set<Promise<void>>();
  /** Presence frames still looking up where a peer is (awaited on stop). */
  readonly #announcing = new Set<Promise<void>>();
  #unsubscribe: (() => Promise<void>)[] = [];
  #timers: ReturnType<typeof setInterval>[] = [];
  #reconciler: Reconciler | null = null;
  #stopping = false;

  constructor(readonly ctx: NodeContext, options: { federation?: FederationOptions } = {}) {
    this.router = new Router(this);
    this.federation = new FederationRouter(
      ctx,
      (deviceId, frame, meta) => this.deliverFederated(deviceId, frame, meta),
      options.federation,
    );
    this.#batcher = new EnqueueBatcher(ctx);
  }

  /** Subscribes to the bus and control events and starts the periodic chores. */
  async start(): Promise<void> {
    const { storage, nodeId, config } = this.ctx;
    const eph = storage.ephemeral;
    this.#unsubscribe.push(
      await eph.subscribe(nodeChannel(nodeId), (bytes) => this.#onBusFrame(bytes)),
      await eph.subscribe(ROUTES_CHANNEL, (bytes) => this.#onRouteChange(bytes)),
      await eph.subscribeControl((event) => this.#onControl(event)),
    );
    const sweepMs = clamp(
      (Math.min(config.server.handshakeTimeout, config.server.keepalive) * 1000) / 4,
      50,
      5000,
    );
    this.#every(sweepMs, () => this.#sweep());
    this.#every(Math.max(1, config.limits.presenceTtl / 3) * 1000, () => this.#refresh());
    this.#every(Math.min(60, Math.max(1, config.limits.relayTtl)) * 1000, () => this.#purge());
    // The bus's second chance (server/reconcile.ts): lost nudges, revocations, route changes.
    this.#reconciler = new Reconciler(this.ctx, {
      sessions: () =>
        [...this.#local.values()].filter((c) => c.state === "open").map((c) => ({
          deviceId: c.deviceId,
          sessionId: c.sessionId,
          openedAt: c.openedAt,
        })),
      wake: (deviceId) => this.localConnection(deviceId)?.startReplay(),
      cut: (deviceId, title, status, detail) => {
        for (const c of this.#all) {
          if (c.deviceId === deviceId) c.fail(fatal(title, status, detail));
        }
      },
      control: (event) => this.#onControl(event),
      routeChange: (message) => this.#onRouteChange(message),
    });
    await this.#reconciler.start();
    this.federation.start();
  }

  #every(ms: number, fn: () => Promise<void> | void): void {
    let busy = false;
    const id = setInterval(async () => {
      if (busy) return;
      busy = true;
      try {
        await fn();
      } catch (err) {
        this.ctx.log.warn("periodic task failed", { error: err });
      } finally {
        busy = false;
      }
    }, ms);
    this.#timers.push(id);
  }

  /** Serves a new client connection until it ends. */
  accept(transport: Transport): Promise<void> {
    if (this.#stopping) {
      transport.close();
      return Promise.resolve();
    }
    const conn = new Connection(this, transport);
    this.#all.add(conn);
    return conn.run().finally(() => this.#all.delete(conn));
  }

  /** The open connection of a device on this node, if any. */
  localConnection(deviceId: string): Connection | undefined {
    const conn = this.#local.get(deviceId);
    return conn?.state === "open" ? conn : undefined;
  }

  /** Number of connections (any state) this node holds. */
  get connectionCount(): number {
    return this.#all.size;
  }

  // -------------------------------------------------------------------------------------
  // Sessions

  /** A connection finished its handshake: it becomes the device's route. */
  async attach(conn: Connection): Promise<void> {
    const previous = this.#local.get(conn.deviceId);
    // A session taking over from a live one in the same state changes nothing for the peers.
    const unchanged = previous !== undefined && previous !== conn && previous.state === "open" &&
      previous.presenceState === conn.presenceState;
    this.#local.set(conn.deviceId, conn);
    if (previous && previous !== conn) {
      await previous.fail(
        fatal(
          Titles.sessionReplaced,
          409,
          `a newer session ${conn.sessionId} took over this device`,
        ),
      );
      await previous.closed;
    }
    const { storage, nodeId, config } = this.ctx;
    try {
      // Claims left by sessions that ended without releasing them (a crashed node).
      await storage.relay.requeue({ deviceId: conn.deviceId });
    } catch (err) {
      conn.log.warn("releasing stale claims failed", { error: err });
    }
    try {
      await storage.ephemeral.setRoute(
        conn.deviceId,
        { nodeId, sessionId: conn.sessionId },
        config.limits.presenceTtl,
      );
      await this.publishPresence(conn, "online");
    } catch (err) {
      conn.log.warn("route or presence not stored", { error: err });
    }
    this.announcePresence(conn, { notify: !unchanged });
  }

  /** A connection ended: drop its route and publish the device offline. */
  async detach(conn: Connection): Promise<void> {
    if (this.#local.get(conn.deviceId) !== conn) return;
    this.#local.delete(conn.deviceId);
    try {
      await this.ctx.storage.ephemeral.clearRoute(conn.deviceId, conn.sessionId);
      await this.publishPresence(conn, "offline");
    } catch (err) {
      conn.log.warn("route or presence not cleared", { error: err });
    }
    // Peers told "offline" already (the client said so) are not told again.
    if (conn.presenceState !== "offline") {
      conn.presenceState = "offline";
      this.announcePresence(conn);
    }
  }

  /**
   * Tells the other members of the channels this device has joined (or of `channel` only) its
   * presence: PRESENCE `{channel, peer, state}` with `conn.presenceState`, live only — never
   * queued, never federated, over the bus to members on other nodes. With `notify: false` the
   * channels are only marked as told (a session that took over from one in the same state).
   */
  announcePresence(conn: Connection, options: { channel?: number; notify?: boolean } = {}): void {
    const device = conn.deviceId;
    const channels = this.router.channels;
    const one = options.channel === undefined ? undefined : channels.get(options.channel);
    const routes = options.channel === undefined ? channels.channelsOf(device) : one ? [one] : [];
    for (const route of routes) {
      if (!route.members.has(device)) continue;
      (conn.presenceToldOn ??= new Set()).add(route.channel);
      if (options.notify === false) continue;
      const item: RoutedItem = {
        type: FrameType.Presence,
        channel: route.channel,
        payload: encodeControlPayload({
          channel: route.channel,
          peer: device,
          state: conn.presenceState,
        }),
      };
      for (const member of route.members) {
        if (member !== device) this.#sendLive(member, item);
      }
    }
  }

  /**
   * Tells `conn` which other members of `channel` are online now: PRESENCE
   * `{channel, peer, state}` for each. A member on this node reports the state it announced; one
   * elsewhere is online while its presence record says so (records know online and offline).
   */
  async tellWhoIsOnline(conn: Connection, channel: number): Promise<void> {
    const route = this.router.channels.get(channel);
    if (!route) return;
    const { storage, config } = this.ctx;
    const lookups: Promise<[string, string] | null>[] = [];
    for (const member of route.members) {
      if (member === conn.deviceId || this.federation.remoteDomain(member) !== null) continue;
      const id = localDeviceId(member, config.server.domain);
      const local = this.localConnection(id);
      if (local) {
        lookups.push(Promise.resolve([member, local.presenceState]));
        continue;
      }
      lookups.push(
        storage.ephemeral.getPresence(id).then(
          (p) => (p?.state === "online" ? [member, "online"] : null),
          (err) => {
            conn.log.debug("presence lookup failed", { error: err, device: id });
            return null;
          },
        ),
      );
    }
    for (const found of await Promise.all(lookups)) {
      if (found === null || found[1] === "offline" || conn.state !== "open") continue;
      conn.sendControl(FrameType.Presence, channel, { channel, peer: found[0], state: found[1] });
    }
  }

  /** Stores the device's presence record (ccp1.md §6). */
  async publishPresence(conn: Connection, state: "online" | "offline"): Promise<void> {
    const { presenceTtl } = this.ctx.config.limits;
    const user = conn.user!;
    const presence: Presence = {
      entity: conn.deviceId,
      state,
      expires_at: new Date(Date.now() + presenceTtl * 1000).toISOString(),
      user: {
        id: user.id,
        handle: user.handle,
        display_name: user.display_name,
        avatar_url: user.avatar_url,
      },
    };
    await this.ctx.storage.ephemeral.setPresence(conn.deviceId, presence, presenceTtl);
  }

  // -------------------------------------------------------------------------------------
  // Delivery

  /**
   * Hands one copy of `item` to `member`: live on this node; into the relay queue when it is
   * anywhere else (another node is nudged over the bus to claim it; an offline device gets it on
   * connect); or to federation's durable outbox when it is remote. Ephemeral copies (TYPING,
   * peer candidates) go live only, over the bus when the device is on another node. Promises
   * that must settle before the sender's ACK are pushed to `waits`.
   */
  deliverTo(
    sender: string,
    rawMember: string,
    item: RoutedItem,
    durable: boolean,
    waits: Promise<unknown>[],
  ): DeliveryOutcome {
    const domain = this.federation.remoteDomain(rawMember);
    if (domain !== null) {
      // TYPING is a hint of the moment: never queued, so never federated either.
      if (!durable) return "dropped";
      waits.push(this.federation.queue(sender, rawMember, item));
      return "waiting";
    }
    const member = localDeviceId(rawMember, this.ctx.config.server.domain);
    const local = this.#deliverLocal(member, item, durable, waits);
    if (local !== null) return local;
    return this.#deliverElsewhere(member, item, durable, waits);
  }

  #deliverLocal(
    member: string,
    item: RoutedItem,
    durable: boolean,
    waits: Promise<unknown>[],
  ): "live" | "waiting" | null {
    const conn = this.#local.get(member);
    if (!conn || conn.state !== "open") return null;
    if (!durable) {
      conn.deliver(item, null, false);
      return "live";
    }
    if (conn.canTakeLive()) {
      conn.deliver(item, null);
      return "live";
    }
    // Replaying or window full: keep FIFO order by going through the queue.
    conn.enqueueStarted();
    waits.push(this.#batcher.add(member, item).finally(() => conn.enqueueFinished()));
    return "waiting";
  }

  #deliverElsewhere(
    member: string,
    item: RoutedItem,
    durable: boolean,
    waits: Promise<unknown>[],
  ): Promise<void> | "waiting" {
    if (!durable) return this.#publishEphemeral(member, item);
    // At least once across nodes: the envelope is written to the relay queue first (the
    // sender's ACK waits for that), then the node holding the device is nudged to claim it. A
    // node that dies before delivering loses nothing: the envelope waits for the next session.
    waits.push(this.#enqueueOffline(member, item));
    return "waiting";
  }

  /** A frame that matters only now, for a device on another node: over the bus, no queue. */
  async #publishEphemeral(member: string, item: RoutedItem): Promise<void> {
    const { storage, nodeId, metrics } = this.ctx;
    let route = null;
    try {
      route = await storage.ephemeral.getRoute(member);
    } catch (err) {
      this.ctx.log.debug("route lookup failed; ephemeral frame dropped", { error: err });
      return;
    }
    if (route && route.nodeId !== nodeId) {
      metrics.bus("out");
      await storage.ephemeral.publish(
        nodeChannel(route.nodeId),
        encodeBusPacket(member, item, true),
      ).catch((err) => this.ctx.log.debug("ephemeral frame not published", { error: err }));
      return;
    }
    // It may have connected here while we looked.
    this.#deliverLocal(member, item, false, []);
  }

  /** Writes the envelope durably, then wakes whichever session holds the device. */
  async #enqueueOffline(member: string, item: RoutedItem): Promise<void> {
    await this.#batcher.add(member, item);
    this.wakeHolder(member);
  }

  /** Envelopes for a device were queued (or a closed session put its frames back): wake its holder. */
  wakeHolder(deviceId: string): void {
    const nudge = this.#nudgeHolder(deviceId).finally(() => this.#nudging.delete(nudge));
    this.#nudging.add(nudge);
  }

  /**
   * After an enqueue: the route is read again (the device may have moved while the envelope was
   * written) and its holder claims the new envelope — this node directly, another over the bus.
   * A lost nudge delays the frame until the device's next replay; it never loses it.
   */
  async #nudgeHolder(member: string): Promise<void> {
    const { storage, nodeId, metrics, log } = this.ctx;
    // A session that started here while the envelope was written may have finished its replay.
    this.#local.get(member)?.startReplay();
    try {
      const route = await storage.ephemeral.getRoute(member);
      if (!route || route.nodeId === nodeId) return;
      metrics.bus("out");
      await storage.ephemeral.publish(nodeChannel(route.nodeId), encodeNudge(member));
    } catch (err) {
      log.warn("queued frame's holder not nudged; it is replayed on the next connect", {
        error: err,
        device: member,
      });
    }
  }

  #onBusFrame(bytes: Uint8Array): void {
    const nudged = decodeNudge(bytes);
    if (nudged !== null) {
      this.ctx.metrics.bus("in");
      this.#local.get(nudged)?.startReplay();
      return;
    }
    const packet = decodeBusPacket(bytes);
    if (!packet) {
      this.ctx.log.warn("malformed bus packet dropped", { bytes: bytes.length });
      return;
    }
    this.ctx.metrics.bus("in");
    const waits: Promise<unknown>[] = [];
    const local = this.#deliverLocal(packet.deviceId, packet.item, !packet.ephemeral, waits);
    if (local === null && !packet.ephemeral) {
      // A frame from a node of an older release: keep it for the device.
      waits.push(this.#enqueueOffline(packet.deviceId, packet.item));
    }
    Promise.all(waits).catch((err) => {
      this.ctx.log.error("frame from the bus not stored", { error: err, device: packet.deviceId });
    });
  }

  /**
   * Federation's `deliverLocal`: a frame from a peer for a device of this domain goes to its
   * live connection here, or durably to its relay queue (nudging the node holding it).
   * Resolves once it is handed over or stored; rejects when it could not be stored.
   */
  async deliverFederated(
    deviceId: string,
    frame: Uint8Array,
    meta: { origin: string; sender: string; channel: number },
  ): Promise<void> {
    const item = itemFromEncoded(frame);
    const durable = item.type !== FrameType.Typing;
    const waits: Promise<unknown>[] = [];
    const outcome = this.deliverTo(meta.sender, deviceId, item, durable, waits);
    if (outcome instanceof Promise) await outcome;
    await Promise.all(waits);
    this.ctx.log.debug("federated frame handed over", {
      device: deviceId,
      origin: meta.origin,
      sender: meta.sender,
      channel: meta.channel,
      outcome: typeof outcome === "string" ? outcome : "queued",
    });
  }

  /** Sends a control frame that matters only now (peer candidates): live copies only. */
  sendEphemeral(member: string, type: FrameType, channel: number, value: unknown): void {
    this.#sendLive(member, { type, channel, payload: encodeControlPayload(value) });
  }

  /** Hands `item` to `member` live only; a lookup of where it is is awaited on stop. */
  #sendLive(member: string, item: RoutedItem): void {
    const waits: Promise<unknown>[] = [];
    const outcome = this.deliverTo("", member, item, false, waits);
    for (const w of waits) w.catch(() => {});
    if (!(outcome instanceof Promise)) return;
    const tracked: Promise<void> = outcome.catch(() => {}).finally(() =>
      this.#announcing.delete(tracked)
    );
    this.#announcing.add(tracked);
  }

  // -------------------------------------------------------------------------------------
  // Channel routes

  /** Applies a route change here and on every other node. */
  changeRoutes(change: RouteChange): void {
    this.router.channels.apply(change);
    const message = encoder.encode(JSON.stringify({ origin: this.ctx.nodeId, change }));
    this.ctx.storage.ephemeral.publish(ROUTES_CHANNEL, message).catch((err) => {
      this.ctx.log.warn("route change not shared with other nodes", { error: err });
    });
    // Kept in the route stream too, for nodes that miss the message (server/reconcile.ts).
    this.ctx.storage.ephemeral.appendEvent(ROUTES_CHANNEL, message, ROUTE_STREAM_LENGTH)
      .catch(() => {});
  }

  #onRouteChange(bytes: Uint8Array): void {
    try {
      const { origin, change } = JSON.parse(decoder.decode(bytes));
      if (origin === this.ctx.nodeId) return;
      const parsed = parseRouteChange(change);
      if (parsed) this.router.channels.apply(parsed);
    } catch {
      this.ctx.log.warn("malformed route change dropped");
    }
  }

  #onControl(event: ControlEvent): void {
    const { log } = this.ctx;
    switch (event.kind) {
      case "device-revoked": {
        log.info("device revoked; closing its connections", { device: event.deviceId });
        const conn = this.#local.get(event.deviceId);
        if (conn) {
          conn.fail(fatal(Titles.deviceRevoked, 403, `device ${event.deviceId} was revoked`));
        }
        for (const other of this.#all) {
          if (other !== conn && other.deviceId === event.deviceId) {
            other.fail(fatal(Titles.deviceRevoked, 403, `device ${event.deviceId} was revoked`));
          }
        }
        return;
      }
      case "member-removed":
        log.info("group member removed; routes updated", {
          group_id: event.groupId,
          device: event.deviceId,
        });
        this.router.channels.apply({
          op: "group-remove",
          groupId: event.groupId,
          deviceId: event.deviceId,
        });
        return;
      case "device-approved":
        log.info("device approved", { device: event.deviceId });
        return;
      case "peer-status":
        log.info("federation peer status changed", { domain: event.domain, status: event.status });
        return;
    }
  }

  // -------------------------------------------------------------------------------------
  // Chores

  #sweep(): void {
    const now = Date.now();
    const { handshakeTimeout, keepalive } = this.ctx.config.server;
    for (const conn of this.#all) {
      if (conn.state === "handshake" && now - conn.openedAt > handshakeTimeout * 1000) {
        conn.fail(
          fatal(
            Titles.handshakeTimeout,
            408,
            `handshake not completed within ${handshakeTimeout} s`,
          ),
        );
      } else if (conn.state === "open" && now - conn.lastInbound > keepalive * 1000) {
        conn.log.info("idle connection closed", { idle_seconds: keepalive });
        conn.fail(
          fatal(
            Titles.keepaliveTimeout,
            408,
            `nothing received for ${keepalive} s; send PRESENCE to keep the connection alive`,
          ),
        );
      }
    }
  }

  async #refresh(): Promise<void> {
    const { storage, nodeId, config, metrics } = this.ctx;
    for (const conn of this.#local.values()) {
      if (conn.state !== "open") continue;
      await storage.ephemeral.setRoute(
        conn.deviceId,
        { nodeId, sessionId: conn.sessionId },
        config.limits.presenceTtl,
      );
      await this.publishPresence(conn, conn.presenceState === "offline" ? "offline" : "online");
    }
    metrics.setQueueDepth(await storage.relay.totalDepth());
  }

  async #purge(): Promise<void> {
    // Expired envelopes go, and their senders are told (server/expiry_notices.ts).
    const { config } = this.ctx;
    const { expired: purged, notices } = await expireWithNotices(this.ctx.storage, {
      domain: config.server.domain,
      relayTtl: config.limits.relayTtl,
    });
    if (purged > 0) {
      this.ctx.metrics.expired(purged);
      this.ctx.analytics?.expired(purged);
      this.ctx.log.info("expired envelopes purged", { count: purged, notices });
    }
  }

  /** Runs the purge now (tests and operators). */
  purgeNow(): Promise<void> {
    return this.#purge();
  }

  /** Resolves when no envelope write or nudge started by this node is still running. */
  async idle(): Promise<void> {
    await this.#batcher.idle();
    while (this.#nudging.size > 0) await Promise.allSettled([...this.#nudging]);
    while (this.#announcing.size > 0) await Promise.allSettled([...this.#announcing]);
  }

  /**
   * Graceful stop: refuse new connections, tell clients, requeue what is unacknowledged,
   * publish them offline, stop the chores and leave the bus.
   */
  async stop(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    for (const id of this.#timers) clearInterval(id);
    this.#timers = [];
    this.#reconciler?.stop();
    await this.federation.stop();
    this.ctx.log.info("shutting down: telling connections to reconnect", {
      connections: this.#all.size,
    });
    const closing = [...this.#all].map(async (conn) => {
      await conn.fail(fatal(Titles.serverShutdown, 503, "the server is shutting down; reconnect"));
      conn.abort();
      await conn.closed;
    });
    await Promise.allSettled(closing);
    await this.idle();
    for (const unsubscribe of this.#unsubscribe) {
      await unsubscribe().catch(() => {});
    }
    this.#unsubscribe = [];
  }
}

function clamp(value: number, min: number, max: number): number {
  return Math.min(max, Math.max(min, value));
}
