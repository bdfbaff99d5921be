/**
 * Federation between CommuCat domains (ccp1.md §7): frames for members `device@other.domain`
 * leave as signed events through a durable outbox; events from peers arrive at
 * `POST /federation/events` and are handed to the local device or its relay queue.
 *
 * The relay server calls {@link createFederation} once, routes frames for remote members to
 * `send`, mounts `handleInbound` at `inboundPath` on its HTTP listener, calls `start()` when it
 * serves and `stop()` before it closes storage. See docs/FEDERATION.md.
 *
 * @module
 */
import type { Config } from "../config/mod.ts";
import type { Logger } from "../log.ts";
import type { RelayAck, Storage } from "../../storage/types.ts";
import {
  type FederationEvent,
  federationKeypair,
  signEvent,
  toRfc3339,
} from "../../protocol/federation.ts";
import { bytesToHex } from "../../protocol/hex.ts";
import { problemResponse } from "../../protocol/errors.ts";
import { MAX_U32 } from "../../protocol/varint.ts";
import { FederationRefused, FederationTitles as T } from "./errors.ts";
import { decodeFederatedFrame, MAX_ID_LENGTH } from "./event.ts";
import { type AcceptOffsets, type DeliverLocal, inboundHandler } from "./inbound.ts";
import {
  type DeliveryReceipt,
  MAX_REPORTED_EVENTS,
  offsetFrame,
  RECEIPT_MIN_TTL,
  receiptFrame,
} from "./offsets.ts";
import { OutboxWorker } from "./outbound.ts";
import { INBOUND_PATH, inboundUrl, parseMember, PeerDirectory, remoteDomainOf } from "./peers.ts";
import { MemoryReplayGuard, REPLAY_WINDOW_MS, type ReplayGuard } from "./replay.ts";
import { answerUserQuery, type RemoteDevice, RemoteUsers } from "./users.ts";

export { FederationRefused, FederationTitles } from "./errors.ts";
export { MAX_EVENT_BODY, MAX_FEDERATED_FRAME } from "./event.ts";
export { INBOUND_PATH, inboundUrl, parseMember, remoteDomainOf } from "./peers.ts";
export {
  CLOCK_SKEW_MS,
  MemoryReplayGuard,
  REPLAY_WINDOW_MS,
  type ReplayGuard,
  ReplayGuardFull,
} from "./replay.ts";
export type { AcceptOffsets, DeliverLocal } from "./inbound.ts";
export { REMOTE_USER_TTL_MS, type RemoteDevice, RemoteUserTitles, USERS_PATH } from "./users.ts";
export {
  type DeliveryReceipt,
  MAX_REPORTED_EVENTS,
  offsetFrame,
  parseOffsetReport,
  RECEIPT_KIND,
  receiptFrame,
} from "./offsets.ts";

/** What federation needs from the server. */
export interface FederationContext {
  config: Config;
  storage: Storage;
  log: Logger;
  /** Hands a frame from a peer to a local device: its live connection or its relay queue. */
  deliverLocal: DeliverLocal;
  /** Receipts were queued for a local device (wake the session holding it). */
  receiptsQueued?: (deviceId: string) => void;
  /** HTTP client for outbound POSTs (tests inject one); default the global fetch. */
  fetch?: typeof fetch;
  /** Clock (tests inject one); default `new Date()`. */
  now?: () => Date;
  /**
   * Replay protection for inbound event ids; default the shared `storage.idempotency` table
   * (every node on the database agrees), or an in-memory guard when storage has none.
   */
  replay?: ReplayGuard;
  /** Worker poll interval in ms (default 500). */
  pollIntervalMs?: number;
  /** Outbound POST timeout in ms (default 10 000). */
  timeoutMs?: number;
}

/** One frame for one remote member. */
export interface FederationSendInput {
  /** Channel id the frame travels on (u32). */
  channel: number;
  /** The event's `payload.sequence` (u32); the relay sends 0 (the receiver numbers frames). */
  sequence: number;
  /** The encoded CCP-1 frame (MSG, TYPING, KEY_UPDATE or GROUP_EVENT), ≤ 1 MiB. */
  frame: Uint8Array;
  /** The local sending device: a bare id or `device@ourdomain`. */
  sender: string;
  /** The remote member: `device@remote.domain`. */
  target: string;
}

/** The federation service of one server. */
export interface Federation {
  /**
   * Signs and durably queues a frame for a remote member, then nudges the worker. Resolves once
   * the event is in the outbox. Throws {@link FederationRefused} (non-fatal ERROR for the
   * sender) when the peer is unknown or blocked (403 "federation peer not allowed"), the target
   * or sender is malformed (400) or the frame is invalid or too large (400/413); storage errors
   * propagate as they are.
   */
  send(input: FederationSendInput): Promise<{ eventId: string }>;
  /**
   * A local device acknowledged queued frames: those that came from peers (`origin` set) are
   * reported to their origins as signed offset events, one per sender and channel (at most
   * MAX_REPORTED_EVENTS ids each), through the outbox. Resolves once they are queued; never
   * rejects (a failure is logged: the frames stay delivered, only their receipt is lost).
   */
  reportAcknowledged(deviceId: string, acked: RelayAck[]): Promise<void>;
  /** The inbound endpoint; never throws, always answers (problems as RFC 9457 JSON). */
  handleInbound(request: Request, remoteAddr?: string): Promise<Response>;
  /**
   * The active devices of a user of a peer domain (signed `GET /federation/users/<name>`,
   * cached 30 s). Throws a non-fatal refusal (users.ts `RemoteUsers.devices`).
   */
  remoteUserDevices(domain: string, name: string): Promise<RemoteDevice[]>;
  /** `GET /federation/users/<name>` from a peer; never throws. */
  handleUserQuery(request: Request): Promise<Response>;
  /** Starts the outbox worker. */
  start(): void;
  /** Stops the worker: no timer or request of it remains when this resolves. */
  stop(): Promise<void>;
  /** Runs one delivery pass now; resolves to the number of entries tried. */
  deliverDue(): Promise<number>;
  /** The path `handleInbound` expects to be mounted at. */
  readonly inboundPath: typeof INBOUND_PATH;
  /** This server's Ed25519 federation public key (what peers configure for us). */
  readonly publicKey: Uint8Array;
}

/**
 * The replay store when none is injected: the database's `idempotency` table when storage has
 * one, so every node behind one federation endpoint refuses an event any of them accepted;
 * otherwise (test doubles) the in-memory guard, which covers one process. Keys are scoped per
 * origin and held for REPLAY_WINDOW_MS on the database's clock.
 */
function defaultReplayGuard(storage: Storage): ReplayGuard {
  const keys = (storage as Partial<Storage>).idempotency;
  if (!keys) return new MemoryReplayGuard();
  const ttlSeconds = Math.ceil(REPLAY_WINDOW_MS / 1000);
  const scope = (origin: string) => `federation:${origin}`;
  return {
    claim: (origin, eventId) => keys.claim(scope(origin), eventId, ttlSeconds),
    release: (origin, eventId) => keys.release(scope(origin), eventId),
  };
}

/** Creates the federation service for one server process. */
export function createFederation(ctx: FederationContext): Federation {
  const domain = ctx.config.server.domain.toLowerCase();
  const log = ctx.log.child({ component: "federation" });
  const now = ctx.now ?? (() => new Date());
  const keys = federationKeypair(ctx.config.crypto.federationSeed);
  const peers = new PeerDirectory(ctx.config.federation.peers, ctx.storage.peers, log);
  const worker = new OutboxWorker({
    outbox: ctx.storage.outbox,
    peers,
    secretKey: keys.secretKey,
    log,
    fetch: ctx.fetch ?? fetch,
    now,
    pollIntervalMs: ctx.pollIntervalMs,
    timeoutMs: ctx.timeoutMs,
  });
  const usersOptions = {
    domain,
    peers,
    storage: ctx.storage,
    secretKey: keys.secretKey,
    log,
    now,
    maxDevices: () => ctx.config.limits.maxDevicesPerUser,
    fetch: ctx.fetch,
  };
  const remoteUsers = new RemoteUsers(usersOptions);
  const remoteOffsets = (ctx.storage as Partial<Storage>).remoteOffsets;
  const handleInbound = inboundHandler({
    domain,
    peers,
    peerRepo: ctx.storage.peers,
    replay: ctx.replay ?? defaultReplayGuard(ctx.storage),
    deliverLocal: ctx.deliverLocal,
    // Storage doubles without the repository refuse offset reports as invalid frames.
    acceptOffsets: remoteOffsets ? acceptOffsets : undefined,
    log,
    now,
  });

  /** `device@ourdomain` for a local sender given bare or qualified. */
  function qualifiedSender(sender: string): string {
    const address = parseMember(sender);
    if (!address || address.device.length > MAX_ID_LENGTH || address.device.includes("@")) {
      throw new FederationRefused(
        T.invalidSender,
        400,
        `sender ${JSON.stringify(sender)} is not a device id`,
      );
    }
    if (address.domain !== null && address.domain !== domain) {
      throw new FederationRefused(
        T.invalidSender,
        400,
        `sender ${JSON.stringify(sender)} is not a device of ${domain}`,
      );
    }
    return `${address.device}@${domain}`;
  }

  async function send(input: FederationSendInput): Promise<{ eventId: string }> {
    const target = String(input.target);
    const peerDomain = remoteDomainOf(target, domain);
    if (peerDomain === null || target.length > MAX_ID_LENGTH) {
      throw new FederationRefused(
        T.invalidTarget,
        400,
        `${JSON.stringify(target)} is not a remote member (expected device@other.domain)`,
      );
    }
    for (const field of ["channel", "sequence"] as const) {
      const v = input[field];
      if (!Number.isInteger(v) || v < 0 || v > MAX_U32) {
        throw new FederationRefused(T.invalidFrame, 400, `${field} ${v} is not a u32`);
      }
    }
    const sender = qualifiedSender(input.sender);
    if (!(input.frame instanceof Uint8Array)) {
      throw new FederationRefused(T.invalidFrame, 400, "frame must be bytes");
    }
    const decoded = decodeFederatedFrame(input.frame);
    if (!("type" in decoded)) {
      const tooLarge = decoded.status === 413;
      throw new FederationRefused(
        tooLarge ? T.frameTooLarge : T.invalidFrame,
        decoded.status,
        decoded.detail,
      );
    }

    const eventId = await queueEvent(peerDomain, {
      channel: input.channel,
      sequence: input.sequence,
      frame: input.frame,
      sender,
      target,
    });
    return { eventId };
  }

  /** Signs one event for `peerDomain` and stores it in the outbox; returns its id. */
  async function queueEvent(
    peerDomain: string,
    p: { channel: number; sequence: number; frame: Uint8Array; sender: string; target: string },
    kind: "frame" | "offsets" = "frame",
  ): Promise<string> {
    const { sender, target } = p;
    const peer = await peers.forOutbound(peerDomain).catch((err) => {
      if (err instanceof FederationRefused) {
        log.warn(T.peerNotAllowed, { direction: "outbound", peer: peerDomain, sender, target });
      }
      throw err;
    });
    const event: FederationEvent = {
      event_id: crypto.randomUUID(),
      origin: domain,
      scope: peer.domain,
      created_at: toRfc3339(now()),
      payload: {
        channel: p.channel,
        sequence: p.sequence,
        payload: bytesToHex(p.frame),
        sender,
        target,
      },
    };
    const signature = bytesToHex(signEvent(event, keys.secretKey));
    await ctx.storage.outbox.enqueue({
      eventId: event.event_id,
      peerDomain: peer.domain,
      endpoint: inboundUrl(peer.endpoint),
      body: { event, signature },
    });
    log.info(kind === "frame" ? "federation event queued" : "federation offsets queued", {
      event_id: event.event_id,
      peer: peer.domain,
      sender,
      target,
      channel: p.channel,
      bytes: p.frame.length,
    });
    worker.nudge();
    return event.event_id;
  }

  async function reportAcknowledged(deviceId: string, acked: RelayAck[]): Promise<void> {
    // One report per (remote sender, channel): the origin checks each id against both.
    const groups = new Map<
      string,
      { origin: string; sender: string; channel: number; ids: string[] }
    >();
    for (const row of acked) {
      if (!row.origin) continue;
      const origin = remoteDomainOf(row.origin.sender, domain);
      if (origin === null) continue;
      const key = `${row.origin.sender}\n${row.channelId}`;
      let g = groups.get(key);
      if (!g) {
        groups.set(key, g = { origin, sender: row.origin.sender, channel: row.channelId, ids: [] });
      }
      g.ids.push(row.origin.eventId);
    }
    if (groups.size === 0) return;
    const ackedAt = now();
    const local = `${deviceId}@${domain}`;
    for (const g of groups.values()) {
      for (let i = 0; i < g.ids.length; i += MAX_REPORTED_EVENTS) {
        const ids = [...new Set(g.ids.slice(i, i + MAX_REPORTED_EVENTS))];
        try {
          await queueEvent(g.origin, {
            channel: g.channel,
            sequence: 0,
            frame: offsetFrame(g.channel, ids, ackedAt),
            sender: local,
            target: g.sender,
          }, "offsets");
        } catch (err) {
          log.warn("federation offsets not queued", {
            peer: g.origin,
            device: deviceId,
            events: ids.length,
            error: err,
          });
        }
      }
    }
  }

  /** An offset report from a peer that passed every event check (inbound.ts). */
  async function acceptOffsets(report: Parameters<AcceptOffsets>[0]) {
    const result = await remoteOffsets!.record({
      peerDomain: report.origin,
      recipient: report.sender,
      sender: `${report.target}@${domain}`,
      channel: report.channel,
      eventIds: report.eventIds,
      ackedAt: report.ackedAt,
    }, (fresh) => {
      const at = new Date(Math.min(report.ackedAt.getTime(), now().getTime())).toISOString();
      const entries: DeliveryReceipt[] = fresh.map((f) => ({
        id: f.eventId,
        channel: report.channel,
        recipient: report.sender,
        acked_at: at,
      }));
      return {
        items: [{ deviceId: report.target, channelId: 0, payload: receiptFrame(entries) }],
        ttlSeconds: Math.max(ctx.config.limits?.relayTtl ?? 0, RECEIPT_MIN_TTL),
      };
    });
    if (result.ok && result.queued > 0) ctx.receiptsQueued?.(report.target);
    return result;
  }

  return {
    send,
    reportAcknowledged,
    handleInbound,
    remoteUserDevices: (d, name) => remoteUsers.devices(d, name),
    handleUserQuery: async (request) => {
      try {
        return await answerUserQuery(usersOptions, request);
      } catch (err) {
        log.error("federation user query not answered", { error: err });
        return problemResponse(503, "Service Unavailable", "the user directory is unavailable");
      }
    },
    start: () => worker.start(),
    stop: () => worker.stop(),
    deliverDue: () => worker.deliverDue(),
    inboundPath: INBOUND_PATH,
    publicKey: keys.publicKey,
  };
}
