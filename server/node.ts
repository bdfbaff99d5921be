/**
 * One relay node: builds the session / routing / delivery parts and wires them together, holds
 * the node's subscriptions (its bus channel, route changes, operator control events) and runs
 * the periodic chores (keepalive and handshake timeouts, presence and route refresh, overdue
 * live copies, relay purge). Only this file and the entry points import it.
 *
 * @module
 */
import { expireWithNotices } from "./expiry_notices.ts";
import { KeyAnnouncer } from "./key_announce.ts";
import type { KeyStatus } from "../protocol/key_catalog.ts";
import type { Frame } from "../protocol/frame.ts";
import type { ControlEvent, RelayAck } from "../storage/types.ts";
import { nodeChannel, type NodeContext, ROUTES_CHANNEL } from "./context.ts";
import { Delivery } from "./delivery/delivery.ts";
import { fatal, Titles } from "./errors.ts";
import { type FederationOptions, FederationRouter } from "./federation.ts";
import { devicesRequest, pairCode, unlinkRequest } from "./requests/devices.ts";
import { keysRequest } from "./requests/keys.ts";
import { rotateKey } from "./requests/rotate_key.ts";
import { Conversations } from "./routing/conversations.ts";
import { PresenceService } from "./routing/presence.ts";
import { Requests } from "./routing/requests.ts";
import { Reconciler, ROUTE_STREAM_LENGTH } from "./reconcile.ts";
import { Router } from "./routing/router.ts";
import { Connection, type SessionHost } from "./session/connection.ts";
import { DeviceCache } from "./session/device_cache.ts";
import type { Transport } from "./transport.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A route change shared between nodes: a group's roster changed. */
interface GroupChange {
  origin: string;
  group: string;
}

export class RelayNode implements SessionHost {
  readonly conversations: Conversations;
  readonly delivery: Delivery;
  readonly presence: PresenceService;
  readonly requests: Requests;
  readonly router: Router;
  readonly federation: FederationRouter;
  readonly #all = new Set<Connection>();
  /** Devices recently admitted here: a hint, never an admission (session/device_cache.ts). */
  readonly devices = new DeviceCache();
  #unsubscribe: (() => Promise<void>)[] = [];
  #timers: ReturnType<typeof setInterval>[] = [];
  #reconciler: Reconciler | null = null;
  #stopping = false;

  constructor(readonly ctx: NodeContext, options: { federation?: FederationOptions } = {}) {
    this.federation = new FederationRouter(
      ctx,
      (deviceId, frame, meta) => this.delivery.deliverFederated(deviceId, frame, meta),
      options.federation,
      (deviceId) => this.delivery.wakeHolder(deviceId),
    );
    this.delivery = new Delivery(ctx, this.federation);
    this.keys = new KeyAnnouncer(ctx, () => this.delivery.sessions());
    this.conversations = new Conversations(
      ctx,
      undefined,
      (domain, name) => this.federation.remoteUserDevices(domain, name),
    );
    this.presence = new PresenceService(ctx, this.conversations, this.delivery);
    this.requests = new Requests(ctx, (d, name) => this.federation.remoteUserDevices(d, name))
      .register("rotate_key", rotateKey)
      .register("keys", keysRequest)
      .register("pair_code", pairCode)
      .register("devices", devicesRequest)
      .register("unlink", unlinkRequest);
    this.router = new Router(
      ctx,
      this.conversations,
      this.delivery,
      this.presence,
      this.requests,
      { groupChanged: (groupId) => this.#groupChanged(groupId) },
    );
  }

  /** Subscribes to the bus and control events and starts the periodic chores. */
  async start(): Promise<void> {
    const { storage, nodeId, config } = this.ctx;
    const eph = storage.ephemeral;
    this.#unsubscribe.push(
      await eph.subscribe(nodeChannel(nodeId), (bytes) => this.delivery.onBusPacket(bytes)),
      await eph.subscribe(ROUTES_CHANNEL, (bytes) => this.#onRouteChange(bytes)),
      await eph.subscribeControl((event) => this.#onControl(event)),
    );
    const sweepMs = clamp(
      (Math.min(config.server.handshakeTimeout, config.server.keepalive) * 1000) / 4,
      50,
      5000,
    );
    this.#every(sweepMs, () => this.#sweep());
    this.#every(clamp(config.limits.liveAckTimeoutMs / 2, 20, 5000), () => this.#persistOverdue());
    this.#every(Math.max(1, config.limits.presenceTtl / 3) * 1000, () => this.#refresh());
    this.#every(Math.min(60, Math.max(1, config.limits.relayTtl)) * 1000, () => this.#purge());
    // The bus's second chance (server/reconcile.ts): lost nudges, revocations, route changes.
    this.#reconciler = new Reconciler(this.ctx, {
      sessions: () =>
        [...this.delivery.sessions()].filter((c) => c.state === "open").map((c) => ({
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
      restoreRoutes: (deviceId) => this.conversations.restore(deviceId),
    });
    await this.#reconciler.start();
    this.federation.start();
    this.keys.start();
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

  /** Number of connections (any state) this node holds. */
  get connectionCount(): number {
    return this.#all.size;
  }

  /** The open connection of a device on this node, if any. */
  localConnection(deviceId: string): Connection | undefined {
    return this.delivery.localConnection(deviceId);
  }

  // -------------------------------------------------------------------------------------
  // SessionHost

  onFrame(conn: Connection, frame: Frame): Promise<void> | void {
    return this.router.handle(conn, frame);
  }

  /** A connection finished its handshake: it becomes the device's route. */
  async opened(conn: Connection): Promise<void> {
    const previous = this.delivery.register(conn);
    // A session taking over from a live one in the same state changes nothing for the peers.
    const unchanged = previous !== undefined && previous.state === "open" &&
      previous.presenceState === conn.presenceState;
    if (previous) {
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
    // Claims left by sessions that ended without releasing them (a crashed node) are released
    // by the session row's statement (sessions.record with `opening`, session/connection.ts).
    const routes = this.conversations.attach(conn.deviceId);
    try {
      // Route and presence in one command.
      await storage.ephemeral.attachSession(
        conn.deviceId,
        { nodeId, sessionId: conn.sessionId },
        this.presence.record(conn, "online"),
        config.limits.presenceTtl,
      );
    } catch (err) {
      conn.log.warn("route or presence not stored", { error: err });
    }
    await routes;
    this.presence.announce(conn, { notify: !unchanged });
  }

  /** A connection ended: drop its route and publish the device offline. */
  async closed(conn: Connection): Promise<void> {
    if (!this.delivery.unregister(conn)) return;
    // What the device had bound here serves its offline announcement (no second read).
    const bound = this.conversations.detach(conn.deviceId);
    try {
      await this.ctx.storage.ephemeral.detachSession(
        conn.deviceId,
        conn.sessionId,
        this.presence.record(conn, "offline"),
        this.ctx.config.limits.presenceTtl,
      );
    } catch (err) {
      conn.log.warn("route or presence not cleared", { error: err });
    }
    // Peers told "offline" already (the client said so) are not told again.
    if (conn.presenceState !== "offline") {
      conn.presenceState = "offline";
      this.presence.announce(conn, { bound });
    }
  }

  requeued(deviceId: string): void {
    this.delivery.wakeHolder(deviceId);
  }

  /** Offset reports being queued for peers (awaited by idle and stop). */
  readonly #reporting = new Set<Promise<void>>();

  /** The server key catalog, announced to sessions during a rotation (server/key_announce.ts). */
  readonly keys: KeyAnnouncer;

  keyAnnouncement(status: KeyStatus): unknown | null {
    return this.keys.forSession(status);
  }

  reportAcknowledged(deviceId: string, acked: RelayAck[]): void {
    const report: Promise<void> = this.federation.reportAcknowledged(deviceId, acked)
      .finally(() => this.#reporting.delete(report));
    this.#reporting.add(report);
  }

  // -------------------------------------------------------------------------------------
  // Routes shared between nodes

  /** A group's roster changed here: drop its cached conversation here and on every node. */
  #groupChanged(groupId: string): void {
    this.conversations.invalidateGroup(groupId);
    const change: GroupChange = { origin: this.ctx.nodeId, group: groupId };
    const message = encoder.encode(JSON.stringify(change));
    const eph = this.ctx.storage.ephemeral;
    eph.publish(ROUTES_CHANNEL, message).catch((err) => {
      this.ctx.log.warn("group change not shared with other nodes", { error: err });
    });
    // Kept in the route stream too, for nodes that miss the message (server/reconcile.ts).
    eph.appendEvent(ROUTES_CHANNEL, message, ROUTE_STREAM_LENGTH).catch(() => {});
  }

  #onRouteChange(bytes: Uint8Array): void {
    try {
      const { origin, group } = JSON.parse(decoder.decode(bytes)) as GroupChange;
      if (origin === this.ctx.nodeId) return;
      if (typeof group === "string") this.conversations.invalidateGroup(group);
    } catch {
      this.ctx.log.warn("malformed route change dropped");
    }
  }

  /** A device was added to or revoked from its user: conversations addressing it re-expand. */
  #deviceOfUserChanged(deviceId: string): void {
    this.ctx.storage.devices.get(deviceId).then((device) => {
      if (device) this.conversations.invalidateUser(device.userId);
    }).catch((err) => {
      this.ctx.log.warn("user conversations not refreshed; they expire on their own", {
        error: err,
        device: deviceId,
      });
    });
  }

  #onControl(event: ControlEvent): void {
    const { log } = this.ctx;
    switch (event.kind) {
      case "device-revoked": {
        log.info("device revoked; closing its connections", { device: event.deviceId });
        this.devices.forget(event.deviceId);
        for (const conn of this.#all) {
          if (conn.deviceId === event.deviceId) {
            conn.fail(fatal(Titles.deviceRevoked, 403, `device ${event.deviceId} was revoked`));
          }
        }
        this.#deviceOfUserChanged(event.deviceId);
        return;
      }
      case "member-removed":
        log.info("group member removed; routes updated", {
          group_id: event.groupId,
          device: event.deviceId,
        });
        this.conversations.invalidateGroup(event.groupId);
        return;
      case "device-key-changed":
        // A session of the old key must not even be attached before its admission refuses it.
        this.devices.forget(event.deviceId);
        return;
      case "device-approved":
        log.info("device approved", { device: event.deviceId });
        this.devices.forget(event.deviceId);
        this.#deviceOfUserChanged(event.deviceId);
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

  /** Live copies that waited too long for their recipient's ACK go to the relay queue (§5). */
  #persistOverdue(): void {
    const cutoff = Date.now() - this.ctx.config.limits.liveAckTimeoutMs;
    for (const conn of this.delivery.sessions()) {
      if (conn.liveInFlight > 0) conn.persistOverdue(cutoff);
    }
  }

  async #refresh(): Promise<void> {
    const { storage, nodeId, config, metrics } = this.ctx;
    for (const conn of this.delivery.sessions()) {
      if (conn.state !== "open") continue;
      await storage.ephemeral.setRoute(
        conn.deviceId,
        { nodeId, sessionId: conn.sessionId },
        config.limits.presenceTtl,
      );
      await this.presence.publish(conn, conn.presenceState === "offline" ? "offline" : "online");
      await this.conversations.refresh(conn.deviceId);
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

  /** Resolves when no envelope write, nudge or announcement started here is still running. */
  async idle(): Promise<void> {
    await this.presence.idle();
    await this.delivery.idle();
    while (this.#reporting.size > 0) await Promise.allSettled([...this.#reporting]);
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
    this.keys.stop();
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
