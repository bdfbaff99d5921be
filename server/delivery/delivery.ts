/**
 * Delivery of one copy of a frame to one device, wherever it is: its live session on this node,
 * the relay queue (then the node holding it is nudged over the bus to claim it; an offline device
 * gets it on connect), or federation's durable outbox when it is remote (ccp1.md §5, §7). The
 * registry of the sessions this node holds lives here too.
 *
 * @module
 */
import { concatBytes } from "../../protocol/bytes.ts";
import { encodeControlPayload, FrameType } from "../../protocol/frame.ts";
import {
  decodeRelayItem,
  encodeItemFrame,
  encodeRelayItem,
  itemFromFrame,
} from "../../protocol/relay_item.ts";
import { nodeChannel, type NodeContext } from "../context.ts";
import { type FederationRouter, localDeviceId } from "../federation.ts";
import type { Connection } from "../session/connection.ts";
import { routed, type RoutedItem } from "../session/sender_ack.ts";

/** How a copy was handed over right away, or the lookup still running. */
export type DeliveryOutcome = "live" | "waiting" | "dropped" | Promise<void>;

const FLAG_EPHEMERAL = 1;
/** A nudge: "the relay queue of this device has something new", no frame attached. */
const FLAG_NUDGE = 2;
const encoder = new TextEncoder();
const strict = new TextDecoder("utf-8", { fatal: true });

/** flags(1) ‖ device length(2, BE) ‖ device id: how every bus packet starts. */
function busHeader(flags: number, deviceId: string): Uint8Array {
  const id = encoder.encode(deviceId);
  return concatBytes(Uint8Array.of(flags, id.length >> 8, id.length & 0xff), id);
}

/** Bus packet: flags(1) ‖ device length(2, BE) ‖ device id ‖ relay item (sender ‖ frame). */
export function encodeBusPacket(
  deviceId: string,
  item: RoutedItem,
  ephemeral: boolean,
): Uint8Array {
  return concatBytes(busHeader(ephemeral ? FLAG_EPHEMERAL : 0, deviceId), encodeRelayItem(item));
}

/**
 * Bus nudge: flags(1) = NUDGE ‖ device length(2, BE) ‖ device id. The frame itself is already in
 * the relay queue; the node holding the device claims it from there.
 */
export function encodeNudge(deviceId: string): Uint8Array {
  return busHeader(FLAG_NUDGE, deviceId);
}

/** The device a nudge names; null when `bytes` is not a well-formed nudge. */
export function decodeNudge(bytes: Uint8Array): string | null {
  if (bytes.length < 3 || (bytes[0] & FLAG_NUDGE) === 0) return null;
  const length = (bytes[1] << 8) | bytes[2];
  if (length === 0 || bytes.length !== 3 + length) return null;
  try {
    return strict.decode(bytes.subarray(3));
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
  if (length === 0 || bytes.length < 3 + length) return null;
  try {
    return {
      ephemeral: (bytes[0] & FLAG_EPHEMERAL) !== 0,
      deviceId: strict.decode(bytes.subarray(3, 3 + length)),
      item: routed(decodeRelayItem(bytes.subarray(3 + length))),
    };
  } catch {
    return null;
  }
}

/** Writes relay envelopes in batches: frames arriving while a batch is written share the next. */
class EnqueueBatcher {
  #pending: {
    deviceId: string;
    item: RoutedItem;
    nudge: boolean;
    done: PromiseWithResolvers<void>;
  }[] = [];
  #running = false;
  #idle: PromiseWithResolvers<void> | null = null;

  /** `written` is told once per batch and device of the entries added with `nudge`. */
  constructor(
    private readonly ctx: NodeContext,
    private readonly written: (deviceId: string) => void,
  ) {}

  /** Writes one envelope; with `nudge`, its device's holder is woken once the batch is written. */
  add(deviceId: string, item: RoutedItem, nudge = false): Promise<void> {
    const done = Promise.withResolvers<void>();
    this.#pending.push({ deviceId, item, nudge, done });
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
          batch.map(({ deviceId, item }) => ({
            deviceId,
            channelId: item.channel,
            payload: encodeItemFrame(item),
            sender: item.sender || null,
            originEvent: item.originEvent ?? null,
          })),
          config.limits.relayTtl,
        );
        metrics.enqueued(batch.length);
        // One wake-up per device and batch (not one route lookup per envelope).
        const nudged = new Set<string>();
        for (const entry of batch) if (entry.nudge) nudged.add(entry.deviceId);
        for (const deviceId of nudged) this.written(deviceId);
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

/** One member of a conversation, resolved once: its peer domain, or its id on this domain. */
export interface Target {
  /** The member as the conversation lists it. */
  readonly member: string;
  /** The member's domain when it is remote, else null. */
  readonly remote: string | null;
  /** The local device id (the member without this domain's suffix) when it is local. */
  readonly local: string;
}

export class Delivery {
  readonly #local = new Map<string, Connection>();
  /** Each conversation's members resolved once (member sets never change once built). */
  readonly #targets = new WeakMap<{ readonly members: ReadonlySet<string> }, readonly Target[]>();
  readonly #batcher: EnqueueBatcher;
  /** Nudges being published after a durable enqueue (awaited on stop). */
  readonly #nudging = new Set<Promise<void>>();
  /** Live-only frames still looking up where a device is (awaited on stop). */
  readonly #announcing = new Set<Promise<void>>();

  constructor(private readonly ctx: NodeContext, private readonly federation: FederationRouter) {
    this.#batcher = new EnqueueBatcher(ctx, (deviceId) => this.wakeHolder(deviceId));
  }

  /** Makes `conn` the device's session here; returns the one it replaces, if any. */
  register(conn: Connection): Connection | undefined {
    const previous = this.#local.get(conn.deviceId);
    this.#local.set(conn.deviceId, conn);
    return previous === conn ? undefined : previous;
  }

  /** Drops `conn` as its device's session; false when a newer session holds the device. */
  unregister(conn: Connection): boolean {
    if (this.#local.get(conn.deviceId) !== conn) return false;
    this.#local.delete(conn.deviceId);
    return true;
  }

  /** The open session of a device on this node, if any. */
  localConnection(deviceId: string): Connection | undefined {
    const conn = this.#local.get(deviceId);
    return conn?.state === "open" ? conn : undefined;
  }

  /** The sessions this node holds (one per device). */
  sessions(): IterableIterator<Connection> {
    return this.#local.values();
  }

  /**
   * Hands one copy of `item` to `rawMember`: live on this node; into the relay queue when it is
   * anywhere else (the node holding it is nudged to claim it); or to federation's durable outbox
   * when it is remote. Ephemeral copies (TYPING, presence, peer candidates) go live only, over the
   * bus when the device is on another node. Promises that must settle before the sender's ACK
   * are pushed to `waits`; a live durable copy holds `item.ack` until its recipient ACKs it.
   */
  deliverTo(
    rawMember: string,
    item: RoutedItem,
    durable: boolean,
    waits: Promise<unknown>[],
  ): DeliveryOutcome {
    return this.deliverToTarget(this.#target(rawMember), item, durable, waits);
  }

  /**
   * The members of `conversation` resolved (remote domain or local id), computed once per
   * conversation object: the fan-out of every frame uses them instead of parsing each member.
   */
  targetsOf(conversation: { readonly members: ReadonlySet<string> }): readonly Target[] {
    let targets = this.#targets.get(conversation);
    if (targets === undefined) {
      targets = [...conversation.members].map((m) => this.#target(m));
      this.#targets.set(conversation, targets);
    }
    return targets;
  }

  #target(member: string): Target {
    const remote = this.federation.remoteDomain(member);
    return {
      member,
      remote,
      local: remote === null ? localDeviceId(member, this.ctx.config.server.domain) : member,
    };
  }

  /** {@link deliverTo} for a member already resolved ({@link targetsOf}). */
  deliverToTarget(
    target: Target,
    item: RoutedItem,
    durable: boolean,
    waits: Promise<unknown>[],
  ): DeliveryOutcome {
    if (target.remote !== null) {
      // TYPING is a hint of the moment: never queued, so never federated either.
      if (!durable) return "dropped";
      const ack = item.ack;
      const rawMember = target.member;
      const queued = this.federation.queue(item.sender, rawMember, item);
      waits.push(ack === null ? queued : queued.then((id) => ack.remote(rawMember, id)));
      return "waiting";
    }
    const member = target.local;
    const local = this.#deliverLocal(member, item, durable, waits);
    if (local !== null) return local;
    if (!durable) return this.#publishEphemeral(member, item);
    // At least once across nodes: the envelope is written to the relay queue first (the
    // sender's ACK waits for that), then the node holding the device is nudged to claim it.
    waits.push(this.#enqueueOffline(member, item));
    return "waiting";
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
      item.ack?.hold();
      conn.deliver(item, null);
      return "live";
    }
    // Replaying or window full: keep FIFO order by going through the queue.
    conn.enqueueStarted();
    waits.push(this.#batcher.add(member, item).finally(() => conn.enqueueFinished()));
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
    await this.#batcher.add(member, item, true);
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
    const here = this.#local.get(member);
    if (here) {
      // A session that started here while the envelope was written may have finished its replay.
      here.startReplay();
      return;
    }
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

  /** A packet on this node's bus channel: a nudge, or a live-only frame for a device here. */
  onBusPacket(bytes: Uint8Array): void {
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
      waits.push(this.#enqueueOffline(packet.deviceId, packet.item));
    }
    Promise.all(waits).catch((err) => {
      this.ctx.log.error("frame from the bus not stored", { error: err, device: packet.deviceId });
    });
  }

  /**
   * Federation's `deliverLocal`: a frame from a peer for a device of this domain goes to its
   * live connection here, or durably to its relay queue. Resolves once it is stored or held by
   * the recipient (the peer's delivery is acknowledged only then); rejects when it could not be
   * stored.
   */
  async deliverFederated(
    deviceId: string,
    frame: Uint8Array,
    meta: { origin: string; sender: string; channel: number; eventId?: string },
  ): Promise<void> {
    const sender = meta.sender.includes("@") ? meta.sender : `${meta.sender}@${meta.origin}`;
    const item = routed(itemFromFrame(frame, sender));
    // Kept with the envelope: the recipient's ACK is reported back to the origin by this id.
    if (meta.eventId !== undefined) item.originEvent = meta.eventId;
    // Federated copies are made durable before the peer is answered: the peer's outbox is the
    // sender's only copy, and a live connection here may die with this node. TYPING stays live.
    if (item.type === FrameType.Typing) {
      const outcome = this.deliverTo(deviceId, item, false, []);
      if (outcome instanceof Promise) await outcome;
    } else {
      await this.#enqueueOffline(localDeviceId(deviceId, this.ctx.config.server.domain), item);
    }
    this.ctx.log.debug("federated frame handed over", {
      device: deviceId,
      origin: meta.origin,
      sender,
      channel: meta.channel,
    });
  }

  /** Sends a frame that matters only now (presence, peer candidates) to `member`, live only. */
  sendLive(member: string, type: FrameType, channel: number, value: unknown, sender = ""): void {
    const item = routed({ type, channel, payload: encodeControlPayload(value), sender });
    const waits: Promise<unknown>[] = [];
    const outcome = this.deliverTo(member, item, false, waits);
    for (const w of waits) w.catch(() => {});
    if (!(outcome instanceof Promise)) return;
    const tracked: Promise<void> = outcome.catch(() => {}).finally(() =>
      this.#announcing.delete(tracked)
    );
    this.#announcing.add(tracked);
  }

  /** Writes copies durably for a device (a closing session's unacknowledged live copies). */
  enqueue(deviceId: string, item: RoutedItem): Promise<void> {
    return this.#batcher.add(deviceId, item);
  }

  /** Resolves when no envelope write or nudge started here is still running. */
  async idle(): Promise<void> {
    await this.#batcher.idle();
    while (this.#nudging.size > 0) await Promise.allSettled([...this.#nudging]);
    while (this.#announcing.size > 0) await Promise.allSettled([...this.#announcing]);
  }
}
