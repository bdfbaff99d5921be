/**
 * One client connection: the read loop (incremental decoder, v2 secure stream), the handshake,
 * the outbound queue (bounded, coalesced into one write per flush), the frames in flight that
 * await the client's ACK, and offline replay (ccp1.md §3–§5).
 *
 * @module
 */
import {
  encodeControl,
  errorFrame,
  type Frame,
  FrameDecoder,
  FrameType,
  MAX_FRAME_LEN,
} from "../../protocol/frame.ts";
import { CodecError, ProtocolError } from "../../protocol/errors.ts";
import { SecureStreamReader, SecureStreamWriter } from "../../protocol/secure_stream.ts";
import { NoiseError } from "../../protocol/noise.ts";
import type { UserInfo } from "../../protocol/control.ts";
import { MAX_U32 } from "../../protocol/varint.ts";
import { encodeItemFrame, itemFromFrame } from "../../protocol/relay_item.ts";
import {
  isOpaqueType,
  SENDER_CAPABILITY,
  sharedSenderPrefix,
  stampJson,
} from "../../protocol/sender.ts";
import type { RelayAck, ReplayEnvelope } from "../../storage/types.ts";
import type { NodeContext } from "../context.ts";
import { type HandshakeResult, ServerHandshake } from "./handshake.ts";
import type { DeviceCache } from "./device_cache.ts";
import { fatal, refusalFor, Titles } from "../errors.ts";
import { rateLimited } from "../limits.ts";
import { OutboundBuffer } from "./outbound.ts";
import type { Transport } from "../transport.ts";
import type { Logger } from "../log.ts";
import { routed, type RoutedItem } from "./sender_ack.ts";
import {
  AdmissionTitles,
  HANDSHAKE_BYTE_BUDGET,
  HANDSHAKE_FRAME_LIMIT,
  hostOf,
} from "../admission.ts";

/**
 * What a session asks of the node that holds it: the only coupling between session/ and the
 * rest of the server (the node implements it).
 */
export interface SessionHost {
  readonly ctx: NodeContext;
  /** Routes one post-handshake frame (a promise when the next frame must wait for it). */
  onFrame(conn: Connection, frame: Frame): Promise<void> | void;
  /** The handshake completed: the session becomes the device's route. */
  opened(conn: Connection): Promise<void>;
  /** Devices recently admitted here (a hint for the handshake: server/session/device_cache.ts). */
  readonly devices?: DeviceCache;
  /** The session ended (after its unacknowledged frames went back to the queue). */
  closed(conn: Connection): Promise<void>;
  /** Frames of this device went back to the queue: wake whichever session holds it now. */
  requeued(deviceId: string): void;
  /** The device acknowledged envelopes some of which came from peers (their origins hear of it). */
  reportAcknowledged(deviceId: string, acked: RelayAck[]): void;
  /**
   * What a session that completed its handshake to the server key of `status` is told about the
   * server's keys (ACK on channel 0), or null (server/key_announce.ts).
   */
  keyAnnouncement(status: HandshakeResult["serverKey"]): unknown | null;
}

/** A live copy being made durable (it waited too long for the recipient's ACK). */
class Persisting {
  acked = false;
  constructor(readonly item: RoutedItem) {}
}

/** A replayed frame in flight: the relay_queue envelope it came from. */
class Claimed {
  constructor(readonly envelopeId: string, readonly item: RoutedItem) {}
}

/**
 * A frame handed to this connection that the client has not acknowledged yet: the item itself
 * when it was delivered live (no allocation per frame), or a {@link Claimed} envelope.
 */
type InFlight = RoutedItem | Claimed;

/** One settled promise shared by every connection (the idle chains start from it). */
const SETTLED: Promise<void> = Promise.resolve();
/**
 * The frames in flight of a connection that has none: shared, read-only (a connection takes
 * its own map with the first frame it hands over, so an idle connection holds no map).
 */
const NONE_IN_FLIGHT: ReadonlyMap<number, InFlight> = new Map();

/** A claim of the replay: the first of the sequences it reserved, and its rows. */
interface ReplayClaim {
  firstSequence: number;
  rows: Promise<ReplayEnvelope[]>;
}

/** Largest replay batch (ccp1.md §5). */
export const REPLAY_BATCH = 128;
/** How long a closing connection waits for its last frames to leave. */
const CLOSE_FLUSH_MS = 2000;

export class Connection {
  state: "handshake" | "open" | "closing" | "closed" = "handshake";
  readonly openedAt = Date.now();
  lastInbound = Date.now();
  /** `performance.now()` when the bytes being handled were read (routing latency starts here). */
  receivedAt = 0;
  deviceId = "";
  sessionId = "";
  user: UserInfo | null = null;
  version = 0;
  pattern: "XK" | "IK" | null = null;
  /** The presence state this device's channel peers were last told ("online" on connect). */
  presenceState = "online";
  /** Channels whose other members were told this session's presence (allocated on first use). */
  presenceToldOn: Set<number> | null = null;
  /** The client asked for the sender capability (ccp1.md §4.2). */
  senderCapable = false;

  /** The handshake in progress; dropped once it completed (its Noise state is not needed). */
  #handshake: ServerHandshake | null;
  /** Before the handshake completed: frames of at most HANDSHAKE_FRAME_LIMIT (admission.ts). */
  #decoder = new FrameDecoder({ maxFrameLength: HANDSHAKE_FRAME_LIMIT });
  /** Octets received while in the handshake (bounded by HANDSHAKE_BYTE_BUDGET). */
  #handshakeBytes = 0;
  /** Releases this connection's place among the unauthenticated ones (admission.ts). */
  #admitted: (() => void) | null = null;
  #secureReader: SecureStreamReader | null = null;
  #secureWriter: SecureStreamWriter | null = null;
  #pendingSecure: HandshakeResult | null = null;

  #outSeq = 0;
  readonly #out = new OutboundBuffer();
  #flushing = false;
  #drainWaiters: (() => void)[] | null = null;

  /**
   * Frames handed over and not acknowledged yet, by sequence. Read-only here: writes go
   * through {@link #inflightMap} (the shared empty map until the first frame is tracked).
   */
  inflight: ReadonlyMap<number, InFlight> & { delete(key: number): boolean; clear(): void } =
    NONE_IN_FLIGHT as Map<number, InFlight>;
  /** Live copies in flight (not yet durable): the overdue sweep runs only while there are some. */
  #liveCount = 0;
  /** Live copies being made durable, by sequence. */
  #persisting: Map<number, Persisting> | null = null;
  #persistChain: Promise<void> = SETTLED;
  #windowWaiters: (() => void)[] | null = null;
  #ackedEnvelopes: { sequence: number; envelopeId: string; item: RoutedItem }[] = [];
  #ackChain: Promise<void> = SETTLED;
  #ackScheduled = false;
  /**
   * The replay of this device's queue: idle; running (live copies go through the queue, to keep
   * FIFO order); or stalled (running, but waiting for the outbound queue to drain).
   */
  #replay: "idle" | "running" | "stalled" = "idle";
  /** Frames for this device that arrived while the replay was stalled. */
  #arrivedWhileStalled = 0;
  /** Whether a claim of this session ever returned envelopes (teardown must release them). */
  #claimedRows = false;
  /** The claim in progress, if any (teardown waits for it before releasing). */
  #claiming: Promise<ReplayEnvelope[]> | null = null;
  /** Something was queued while the replay ran: it claims once more before it stops. */
  #replayDirty = false;
  #pendingEnqueues = 0;
  #enqueueWaiters: (() => void)[] | null = null;
  /** What {@link closed} hands out, made when first asked for (before teardown ended). */
  #closedWaiter: PromiseWithResolvers<void> | null = null;
  #tornDown = false;
  #teardownStarted = false;

  constructor(readonly node: SessionHost, readonly transport: Transport) {
    this.#handshake = new ServerHandshake(node.ctx, transport, node.devices ?? null);
  }

  /**
   * This connection's logger: its remote address and transport, then device and session. Made
   * when something is logged, not kept: a connection logs a few lines in its life, and an idle
   * one holding a logger and its fields costs memory on every connection.
   */
  get log(): Logger {
    const fields: Record<string, unknown> = {
      remote: this.transport.remoteAddr,
      transport: this.transport.kind,
    };
    if (this.deviceId !== "") {
      fields.device = this.deviceId;
      fields.session = this.sessionId;
    }
    return this.node.ctx.log.child(fields);
  }

  /** Resolves once the connection is fully torn down (unacked frames requeued). */
  get closed(): Promise<void> {
    if (this.#tornDown) return SETTLED;
    return (this.#closedWaiter ??= Promise.withResolvers<void>()).promise;
  }

  /** The in-flight map to add to (this connection's own, made with its first frame). */
  #inflightMap(): Map<number, InFlight> {
    if (this.inflight === NONE_IN_FLIGHT) this.inflight = new Map<number, InFlight>();
    return this.inflight as Map<number, InFlight>;
  }

  /** Reserves `count` consecutive outbound sequences; returns the first. */
  #reserveSequences(count: number): number {
    if (this.#outSeq + count > MAX_U32) this.#outSeq = 0;
    const first = this.#outSeq + 1;
    this.#outSeq += count;
    return first;
  }

  /** The next outbound sequence (u32, never 0). */
  nextSequence(): number {
    this.#outSeq = this.#outSeq >= MAX_U32 ? 1 : this.#outSeq + 1;
    return this.#outSeq;
  }

  // -------------------------------------------------------------------------------------
  // Read loop

  /** Reads and handles frames until the stream ends or fails; then tears down. */
  async run(): Promise<void> {
    const { metrics } = this.node.ctx;
    metrics.handshakeStarted();
    const admitted = this.node.ctx.admission.admit(hostOf(this.transport.remoteAddr));
    if ("refusal" in admitted) {
      metrics.connectionRefused(admitted.reason);
      await this.fail(admitted.refusal);
      await this.#teardown();
      return;
    }
    this.#admitted = admitted.release;
    try {
      while (this.state === "handshake" || this.state === "open") {
        const chunk = await this.transport.read();
        if (chunk === null) break;
        this.lastInbound = Date.now();
        this.receivedAt = performance.now();
        this.#push(chunk);
        let frame: Frame | null;
        while (
          (this.state === "handshake" || this.state === "open") &&
          (frame = this.#decoder.next()) !== null
        ) {
          metrics.frameInCode(frame.type);
          const pending = this.#onFrame(frame);
          if (pending) await pending;
          if (this.#pendingSecure) this.#switchInbound();
        }
      }
    } catch (err) {
      await this.#onLoopError(err);
    } finally {
      await this.#teardown();
    }
  }

  #push(chunk: Uint8Array): void {
    if (this.#secureReader) {
      for (const piece of this.#secureReader.push(chunk)) this.#decoder.push(piece);
      return;
    }
    if (this.state === "handshake") {
      this.#handshakeBytes += chunk.length;
      if (this.#handshakeBytes > HANDSHAKE_BYTE_BUDGET) {
        throw fatal(
          AdmissionTitles.handshakeTooLarge,
          413,
          `more than ${HANDSHAKE_BYTE_BUDGET} octets sent before the handshake completed`,
        );
      }
    }
    this.#decoder.push(chunk);
  }

  /** After the handshake (v2): what is left in the decoder is the start of the secure stream. */
  #switchInbound(): void {
    const result = this.#pendingSecure!;
    this.#pendingSecure = null;
    const rest = this.#decoder.drain();
    this.#decoder = new FrameDecoder();
    this.#secureReader = new SecureStreamReader(result.recv);
    if (rest.length > 0) {
      for (const piece of this.#secureReader.push(rest)) this.#decoder.push(piece);
    }
  }

  async #onLoopError(err: unknown): Promise<void> {
    if (err instanceof ProtocolError) {
      const sequence = err instanceof CodecError ? undefined : this.#currentSequence;
      await this.fail(err, sequence);
      return;
    }
    if (this.#secureReader && isDecryptFailure(err)) {
      await this.fail(fatal(Titles.decryptFailed, 400, "secure stream chunk failed to decrypt"));
      return;
    }
    if (this.state === "closing" || this.state === "closed") return;
    // Transport errors (reset, broken pipe) are ordinary disconnects.
    this.log.debug("connection read ended", { error: err });
  }

  #currentSequence: number | undefined;

  /** This device's frame and byte buckets on this node ([limits] frames/bytes_per_second). */
  #frameTat = 0;
  #byteTat = 0;

  /** True (and a non-fatal 429 sent) when `frame` is over the device's frame or byte rate. */
  #overRate(frame: Frame): boolean {
    const { frames, bytes } = this.node.ctx.limits.rules;
    const now = this.lastInbound;
    const frameNext = Math.max(this.#frameTat, now) + frames.intervalMs;
    const cost = Math.min(frame.payload.length, bytes.burst);
    const byteNext = Math.max(this.#byteTat, now) + cost * bytes.intervalMs;
    const frameWait = frameNext - frames.burst * frames.intervalMs - now;
    const byteWait = byteNext - bytes.burst * bytes.intervalMs - now;
    if (frameWait <= 0 && byteWait <= 0) {
      this.#frameTat = frameNext;
      this.#byteTat = byteNext;
      return false;
    }
    const kind = frameWait > 0 ? "frames" : "bytes";
    const verdict = { retryAfter: Math.max(1, Math.ceil(Math.max(frameWait, byteWait) / 1000)) };
    this.node.ctx.limits.refused(kind, this.deviceId, verdict.retryAfter);
    this.fail(rateLimited(kind, verdict, `device ${this.deviceId} sends too fast`), frame.sequence);
    return true;
  }

  #onFrame(frame: Frame): Promise<void> | void {
    this.#currentSequence = frame.sequence;
    if (this.state === "handshake") return this.#onHandshakeFrame(frame);
    if (frame.type !== FrameType.Ack && this.#overRate(frame)) return;
    return this.node.onFrame(this, frame);
  }

  async #onHandshakeFrame(frame: Frame): Promise<void> {
    const handshake = this.#handshake!;
    let step;
    try {
      step = await handshake.onFrame(frame);
    } catch (err) {
      this.pattern = handshake.pattern;
      const ciphers = handshake.ciphers;
      if (err instanceof ProtocolError && !err.fatal && !ciphers) {
        // A refusal the client may retry on this connection (e.g. a rate-limited HELLO).
        await this.fail(err, frame.sequence);
        return;
      }
      if (ciphers && handshake.version === 2 && !this.#secureWriter) {
        // The client reads the secure stream once Noise completed: refuse inside it.
        await this.drained();
        this.#secureWriter = new SecureStreamWriter(ciphers.send);
      }
      if (err instanceof ProtocolError) {
        this.node.ctx.metrics.handshakeEnded(this.pattern ?? "unknown", err.title);
        this.#handshakeCounted = true;
      }
      throw err;
    }
    this.pattern = handshake.pattern;
    if (step.auth) this.sendControl(FrameType.Auth, 0, step.auth);
    if (step.result) {
      this.#handshake = null; // an idle connection keeps only its cipher states
      await this.#complete(step.result, handshake);
    }
  }

  #handshakeCounted = false;

  /** Handshake done: identity, secure stream, session row, presence/route, replay. */
  async #complete(result: HandshakeResult, handshake: ServerHandshake): Promise<void> {
    const { ctx } = this.node;
    this.deviceId = result.deviceId;
    this.sessionId = result.sessionId;
    this.user = result.user;
    this.version = result.version;
    this.pattern = result.pattern;
    this.senderCapable = result.capabilities.includes(SENDER_CAPABILITY);
    if (result.version === 2) {
      // AUTH must leave in the clear; everything after it is inside the secure stream.
      await this.drained();
      this.#secureWriter = new SecureStreamWriter(result.send);
      this.#pendingSecure = result;
    }
    // Attached first (route and presence in the shared store), then the session row (in the
    // same statement: the admission check, last_seen, the release of claims earlier sessions
    // left behind, and whether anything is queued for the device). In that order, whatever is
    // queued for the device after the row's snapshot is queued by a node that already sees the
    // route, and its nudge reaches this session (#wokenWhileOpening): so when nothing was
    // queued and no nudge came, the first claim is skipped. The completion ACK waits for the
    // session row: a session whose row could not be written is refused (fatal "storage
    // failure") and never gets an ACK, so every session a client was told about is accounted
    // for. The row is written only while the device is active with the proven key (checked
    // under the device row's lock): that, not the handshake's lookup nor the node's device
    // cache, admits the session, so a revocation or key change committed before it is never
    // missed, on any node, whether or not its bus event arrived. Revoked later, the device is
    // already attached here and its revocation event closes the session (#onControl).
    // Attached but not yet "open": nothing is delivered live before the completion ACK (a frame
    // for this device meanwhile goes to its queue and the replay below picks it up).
    ctx.metrics.connectionOpened();
    await this.node.opened(this);
    const recorded = await ctx.storage.sessions.open({
      sessionId: this.sessionId,
      deviceId: this.deviceId,
      pattern: result.pattern,
      protocolVersion: result.version,
      remoteAddr: this.transport.remoteAddr,
      nodeId: ctx.nodeId,
      ttlSeconds: ctx.config.limits.presenceTtl,
    }, result.publicKey).then((r) => r, (err: unknown) => ({ failure: err }));
    if (recorded !== null && "failure" in recorded) {
      const failure = recorded.failure;
      ctx.metrics.handshakeEnded(result.pattern, "storage failure");
      this.#handshakeCounted = true;
      const why = failure instanceof Error ? failure.message : String(failure);
      throw refusalFor(failure, { fatal: true }) ?? fatal(Titles.unavailable, 503, why);
    }
    if (recorded === null) {
      // Not active with this key (any more): resolved again from storage, which names the
      // refusal (revoked, waiting for approval, another key).
      let refusal: unknown = fatal(
        Titles.unavailable,
        503,
        `device ${this.deviceId} changed during the handshake; connect again`,
      );
      try {
        await handshake.recheck();
      } catch (err) {
        refusal = err;
      }
      ctx.metrics.handshakeEnded(
        result.pattern,
        refusal instanceof ProtocolError ? refusal.title : "storage failure",
      );
      this.#handshakeCounted = true;
      throw refusal;
    }
    const stored = recorded.user;
    const user: UserInfo = {
      id: stored.id,
      handle: stored.handle,
      display_name: stored.displayName,
      avatar_url: stored.avatarUrl,
    };
    result.user = user;
    this.user = user;
    if (result.cached) {
      // The stored user (a renamed user shows from this session on).
      this.node.devices?.put(this.deviceId, result.publicKey, user);
    }
    if (this.state !== "handshake") return; // closed meanwhile (replaced, shutdown, timeout)
    // The null ledger (the default) keeps nothing: no record is built for it (a digest per
    // session otherwise).
    if (ctx.ledger.mode !== "null") {
      ctx.ledger.record("session", {
        session_id: this.sessionId,
        device_id: this.deviceId,
        user_id: result.user.id,
        pattern: result.pattern,
        protocol_version: result.version,
        remote_addr: this.transport.remoteAddr,
        node_id: ctx.nodeId,
      }).catch((err) => this.log.warn("ledger record failed", { error: err, kind: "session" }));
    }
    ctx.metrics.handshakeEnded(result.pattern, "ok");
    this.#handshakeCounted = true;
    this.state = "open";
    this.#admitted?.();
    this.#admitted = null;
    // Authenticated: the protocol's frame limit from here on (v2 uses a fresh decoder).
    this.#decoder.maxFrameLength = MAX_FRAME_LEN;
    this.sendControl(FrameType.Ack, 0, {
      handshake: "ok",
      session: this.sessionId,
      user: result.user,
      protocol_version: result.version,
    });
    this.log.info("session established", {
      pattern: result.pattern,
      protocol_version: result.version,
      user: result.user.id,
    });
    // A rotation under way (a next key, or the client used one that is going): the catalog.
    const keys = this.node.keyAnnouncement(result.serverKey);
    if (keys !== null) this.sendControl(FrameType.Ack, 0, keys);
    if (recorded.queued !== false || this.#wokenWhileOpening) this.startReplay();
  }

  /** A nudge arrived before the session was open (its replay starts once it is). */
  #wokenWhileOpening = false;

  // -------------------------------------------------------------------------------------
  // Outbound

  /** Queues an encoded frame; the reader is dropped when its queue exceeds the limits. */
  sendEncoded(bytes: Uint8Array, type: FrameType): void {
    if (this.state === "closed") return;
    this.#out.pushEncoded(bytes);
    this.#queued(type);
  }

  /**
   * Counts a frame just added to the outbound buffer, drops a slow reader whose queue went
   * over the limits, and schedules the flush (one write per flush, not per frame).
   */
  #queued(type: FrameType): void {
    const { metrics, config: { limits } } = this.node.ctx;
    metrics.frameOutCode(type);
    const out = this.#out;
    if (
      (out.frames > limits.outboundQueueFrames || out.length > limits.outboundQueueBytes) &&
      this.state === "open"
    ) {
      this.#dropSlowReader();
      return;
    }
    if (!this.#flushing) {
      this.#flushing = true;
      queueMicrotask(() => this.#flushLoop());
    }
  }

  /** Disconnects a reader that does not keep up; what it did not acknowledge is requeued. */
  #dropSlowReader(fields: Record<string, unknown> = {}): void {
    const out = this.#out;
    this.log.warn("slow reader disconnected", {
      queued_frames: out.frames,
      queued_bytes: out.length,
      ...fields,
    });
    this.node.ctx.metrics.error("Slow Reader");
    out.clear();
    this.abort();
  }

  /** Sends a control frame; returns its sequence. */
  sendControl(type: FrameType, channel: number, value: unknown): number {
    const sequence = this.nextSequence();
    this.sendEncoded(encodeControl(type, channel, sequence, value), type);
    return sequence;
  }

  /**
   * Sends `ACK {"ack": acked}` (the answer to a routed frame, once per frame): encoded in
   * place, byte-identical to {@link sendControl} with `{ack: acked}`. Returns its sequence.
   */
  sendAck(channel: number, acked: number): number {
    const sequence = this.nextSequence();
    if (this.state === "closed") return sequence;
    this.#out.pushAck(channel, sequence, acked);
    this.#queued(FrameType.Ack);
    return sequence;
  }

  /**
   * Hands a routed frame to the client under a fresh sequence, with the sender stamped when the
   * client asked for it (ccp1.md §4.2). Tracked frames stay in flight until the client ACKs that
   * sequence (and go back to the queue if it drops first, or when it waits too long, §5).
   */
  deliver(
    item: RoutedItem,
    envelopeId: string | null,
    tracked = true,
    sequence = this.nextSequence(),
  ): number {
    if (tracked) {
      if (envelopeId === null) {
        this.#inflightMap().set(sequence, item);
        this.#liveCount++;
      } else {
        this.#inflightMap().set(sequence, new Claimed(envelopeId, item));
      }
    }
    if (this.state === "closed") return sequence;
    if (this.senderCapable && item.sender !== "") {
      if (isOpaqueType(item.type)) {
        item.stamp ??= sharedSenderPrefix(item.sender);
        this.#out.pushFrame(item.type, item.channel, sequence, item.payload, item.stamp);
      } else {
        item.stamp ??= stampJson(item.payload, item.sender);
        this.#out.pushFrame(item.type, item.channel, sequence, item.stamp);
      }
    } else {
      this.#out.pushFrame(item.type, item.channel, sequence, item.payload);
    }
    this.#queued(item.type);
    return sequence;
  }

  /** Live copies in flight that are not durable yet. */
  get liveInFlight(): number {
    return this.#liveCount;
  }

  /**
   * Makes durable every live copy that waited for the client's ACK since before `cutoff`
   * (`Date.now()` ms): it is written to the relay queue as already sent to this session under
   * its sequence, so the client's later ACK deletes it and a crash of this node loses nothing;
   * the sender's ACK is released once it is written (ccp1.md §5).
   */
  persistOverdue(cutoff: number): void {
    if (this.#liveCount === 0 || this.state === "closed") return;
    const overdue: [number, RoutedItem][] = [];
    for (const [sequence, entry] of this.inflight) {
      if (entry instanceof Claimed) continue;
      if (entry.at > cutoff) break; // live copies are in flight in the order they were sent
      overdue.push([sequence, entry]);
    }
    if (overdue.length === 0) return;
    for (const [sequence, item] of overdue) {
      this.inflight.delete(sequence);
      this.#liveCount--;
      (this.#persisting ??= new Map()).set(sequence, new Persisting(item));
    }
    this.#persistChain = this.#persistChain.then(() => this.#persist(overdue));
  }

  async #persist(overdue: [number, RoutedItem][]): Promise<void> {
    const { storage, config, metrics } = this.node.ctx;
    let ids: string[];
    try {
      ids = await storage.relay.enqueue(
        overdue.map(([sequence, item]) => ({
          deviceId: this.deviceId,
          channelId: item.channel,
          payload: encodeItemFrame(item),
          sender: item.sender || null,
          claim: { sessionId: this.sessionId, sequence },
        })),
        config.limits.relayTtl,
      );
    } catch (err) {
      // Still live and still unacknowledged: back in flight, tried again at the next sweep.
      this.log.warn("overdue live frames not made durable; retrying", {
        error: err,
        count: overdue.length,
      });
      for (const [sequence, item] of overdue) {
        const p = this.#persisting?.get(sequence);
        this.#persisting?.delete(sequence);
        if (p?.acked) {
          item.ack?.settle();
        } else {
          this.#inflightMap().set(sequence, item);
          this.#liveCount++;
        }
      }
      return;
    }
    metrics.enqueued(ids.length);
    this.#claimedRows = true;
    const ackedMeanwhile: number[] = [];
    for (const [i, [sequence, item]] of overdue.entries()) {
      const p = this.#persisting?.get(sequence);
      this.#persisting?.delete(sequence);
      if (p?.acked) ackedMeanwhile.push(sequence);
      else this.#inflightMap().set(sequence, new Claimed(ids[i], item));
      item.ack?.settle();
    }
    if (ackedMeanwhile.length > 0) {
      // The client acknowledged while the copies were written: delete them now.
      await storage.relay.ack(this.deviceId, this.sessionId, ackedMeanwhile, {
        returnPayloads: false,
      }).catch((err) => this.log.warn("relay ack failed", { error: err }));
    }
  }

  /** True while queued envelopes are being replayed (live copies go through the queue). */
  get replaying(): boolean {
    return this.#replay !== "idle";
  }

  /** True when a live copy may go straight out (not replaying, window not full). */
  canTakeLive(): boolean {
    return this.state === "open" && this.#replay === "idle" &&
      this.inflight.size < this.node.ctx.config.limits.maxInflight;
  }

  async #flushLoop(): Promise<void> {
    const out = this.#out;
    try {
      while (out.length > 0) {
        // Everything queued since the last write leaves in one write (one seal under v2).
        const plain = out.take();
        if (this.#secureWriter) {
          const sealed = this.#secureWriter.seal(plain);
          out.recycle(plain);
          await this.transport.write(sealed);
        } else {
          await this.transport.write(plain);
          // A stream transport may still queue the array: only a socket's is reused.
          if (this.transport.writtenBytesReusable) out.recycle(plain);
        }
      }
    } catch (err) {
      this.log.debug("write failed", { error: err });
      out.clear();
      this.abort();
    } finally {
      this.#flushing = false;
      const waiters = this.#drainWaiters;
      if (waiters !== null) {
        this.#drainWaiters = null;
        for (const w of waiters) w();
      }
    }
  }

  /** Resolves when everything queued so far has been written. */
  drained(): Promise<void> {
    if (!this.#flushing && this.#out.length === 0) return Promise.resolve();
    return new Promise((resolve) => (this.#drainWaiters ??= []).push(resolve));
  }

  /** Sends an ERROR for `err`; when fatal, flushes and closes. */
  async fail(err: ProtocolError, sequence?: number): Promise<void> {
    if (this.state === "closed" || this.state === "closing") return;
    const { metrics } = this.node.ctx;
    metrics.error(err.title);
    if (!this.#handshakeCounted && this.state === "handshake" && err.fatal) {
      metrics.handshakeEnded(this.pattern ?? "unknown", err.title);
      this.#handshakeCounted = true;
    }
    const problem = err.toProblem(sequence);
    // A shutdown notice goes to every connection at once; the node logs one line for all of them.
    const level = err.title === Titles.serverShutdown ? "debug" : err.fatal ? "warn" : "info";
    this.log[level]("error sent", {
      title: err.title,
      status: err.status,
      fatal: err.fatal,
      detail: err.detail,
      sequence,
    });
    try {
      this.sendEncoded(errorFrame(problem, 0, this.nextSequence()), FrameType.Error);
    } catch {
      // An unencodable problem is a bug; the connection still closes below when fatal.
    }
    if (!err.fatal) return;
    if (this.state === "open" || this.state === "handshake") this.state = "closing";
    await settleWithin(this.drained(), CLOSE_FLUSH_MS);
    this.transport.close();
  }

  /** Closes the transport at once (slow reader, write failure, shutdown). */
  abort(): void {
    if (this.state === "open" || this.state === "handshake") this.state = "closing";
    this.transport.close();
    this.#wakeWindow();
  }

  // -------------------------------------------------------------------------------------
  // Acknowledgements and replay

  /** The client acknowledged frames it received under these sequences. */
  acknowledge(sequences: number[]): void {
    const maxInflight = this.node.ctx.config.limits.maxInflight;
    const wasFull = this.inflight.size >= maxInflight;
    for (const sequence of sequences) {
      const entry = this.inflight.get(sequence);
      if (!entry) {
        // Being made durable right now: deleted once written. Otherwise unknown or already
        // acknowledged: acks are idempotent.
        const p = this.#persisting?.get(sequence);
        if (p && !p.acked) p.acked = true;
        continue;
      }
      this.inflight.delete(sequence);
      if (entry instanceof Claimed) {
        this.#ackedEnvelopes.push({ sequence, envelopeId: entry.envelopeId, item: entry.item });
      } else {
        this.#liveCount--;
        entry.ack?.settle();
      }
    }
    if (this.#ackedEnvelopes.length > 0 && !this.#ackScheduled) {
      this.#ackScheduled = true;
      this.#ackChain = this.#ackChain.then(() => this.#flushAcks());
    }
    if (wasFull && this.inflight.size < maxInflight) {
      this.#wakeWindow();
      // Live frames that found the window full went to the queue: pick them up.
      this.startReplay();
    }
  }

  async #flushAcks(): Promise<void> {
    this.#ackScheduled = false;
    const acked = this.#ackedEnvelopes;
    this.#ackedEnvelopes = [];
    if (acked.length === 0) return;
    const { storage, metrics } = this.node.ctx;
    try {
      const deleted = await storage.relay.ack(
        this.deviceId,
        this.sessionId,
        acked.map((a) => a.sequence),
        // By envelope id: the session's other claims (up to max_inflight) are not read.
        { returnPayloads: false, envelopeIds: acked.map((a) => a.envelopeId) },
      );
      // The same statement advanced inbox_offset per channel (storage/repos/relay.ts ack).
      metrics.acknowledged(deleted.length);
      this.node.ctx.analytics?.acknowledged(deleted);
      // Frames from peers: their origins hear of the ACK (inbox_offset across domains).
      if (deleted.some((d) => d.origin !== undefined)) {
        this.node.reportAcknowledged(this.deviceId, deleted);
      }
    } catch (err) {
      // The envelopes stay claimed and go back to the queue when this session ends.
      this.log.warn("relay ack failed", { error: err, count: acked.length });
    }
  }

  #wakeWindow(): void {
    const waiters = this.#windowWaiters;
    if (waiters === null) return;
    this.#windowWaiters = null;
    for (const w of waiters) w();
  }

  #windowOpened(): Promise<void> {
    return new Promise((resolve) => (this.#windowWaiters ??= []).push(resolve));
  }

  /** Counts an enqueue for this device in progress (the replay loop waits for it). */
  enqueueStarted(): void {
    this.#pendingEnqueues++;
    // A replay waiting for the outbound queue to drain while frames for this device keep
    // arriving (they go to the relay queue meanwhile): once more of them piled up than the
    // outbound queue may hold, the reader is not reading — the same verdict as a full queue.
    if (
      this.#replay === "stalled" &&
      ++this.#arrivedWhileStalled > this.node.ctx.config.limits.outboundQueueFrames &&
      this.state === "open"
    ) {
      this.#dropSlowReader({ arrived_while_stalled: this.#arrivedWhileStalled });
    }
  }

  enqueueFinished(): void {
    this.#pendingEnqueues--;
    this.#replayDirty = true;
    if (this.#pendingEnqueues === 0) {
      const waiters = this.#enqueueWaiters;
      this.#enqueueWaiters = null;
      for (const w of waiters ?? []) w();
    }
    this.startReplay();
  }

  #enqueuesSettled(): Promise<void> {
    if (this.#pendingEnqueues === 0) return Promise.resolve();
    return new Promise((resolve) => (this.#enqueueWaiters ??= []).push(resolve));
  }

  /** Starts (or re-arms) the replay of this device's queue. */
  startReplay(): void {
    if (this.state !== "open") {
      if (this.state === "handshake") this.#wokenWhileOpening = true;
      return;
    }
    if (this.#replay !== "idle") {
      this.#replayDirty = true;
      return;
    }
    this.#replay = "running";
    this.#replayLoop().catch((err) => {
      this.log.warn("replay failed", { error: err });
    }).finally(() => {
      this.#replay = "idle";
    });
  }

  /**
   * Claims up to `limit` envelopes under a fresh block of sequences (the claim records them, so
   * no markSent round trip); the claim in progress is `#claiming` (teardown waits for it).
   */
  #claim(limit: number): ReplayClaim {
    const firstSequence = this.#reserveSequences(limit);
    const rows = this.node.ctx.storage.relay.claimForReplay(
      this.deviceId,
      this.sessionId,
      limit,
      firstSequence,
    ).then((rows) => {
      if (rows.length > 0) this.#claimedRows = true;
      return rows;
    });
    this.#claiming = rows;
    return { firstSequence, rows };
  }

  async #replayLoop(): Promise<void> {
    const { metrics, config } = this.node.ctx;
    const maxInflight = config.limits.maxInflight;
    while (this.state === "open") {
      const room = maxInflight - this.inflight.size;
      if (room <= 0) {
        await this.#windowOpened();
        continue;
      }
      await this.#enqueuesSettled();
      this.#replayDirty = false;
      const claim = this.#claim(Math.min(REPLAY_BATCH, room));
      const batch: ReplayEnvelope[] = await claim.rows;
      this.#claiming = null;
      if (this.state !== "open") break;
      if (batch.length === 0) {
        if (this.#replayDirty || this.#pendingEnqueues > 0) continue;
        break;
      }
      const firstSequence = claim.firstSequence;
      let sent = 0;
      for (const [i, envelope] of batch.entries()) {
        // A replay is the server's own burst, not a slow reader: let the outbound queue drain
        // before it nears the slow-reader limits (unsent claims are released at teardown).
        if (this.#outboundHalfFull()) {
          this.#replay = "stalled";
          await this.drained();
          this.#replay = "running";
          this.#arrivedWhileStalled = 0;
          if (this.state !== "open") break;
        }
        let item: RoutedItem;
        try {
          item = routed(itemFromFrame(envelope.payload, envelope.sender));
        } catch (err) {
          this.log.error("unreadable relay envelope skipped", {
            envelope: envelope.envelopeId,
            error: err,
          });
          continue;
        }
        this.deliver(item, envelope.envelopeId, true, firstSequence + i);
        sent++;
      }
      metrics.replayed(sent);
    }
  }

  /** True when the outbound queue holds half of `outbound_queue_frames` or `_bytes`. */
  #outboundHalfFull(): boolean {
    const { limits } = this.node.ctx.config;
    return this.#out.frames * 2 >= limits.outboundQueueFrames ||
      this.#out.length * 2 >= limits.outboundQueueBytes;
  }

  // -------------------------------------------------------------------------------------
  // Teardown

  async #teardown(): Promise<void> {
    if (this.#teardownStarted) return await this.closed;
    this.#teardownStarted = true;
    const wasOpen = this.state === "open" || (this.state === "closing" && this.deviceId !== "");
    const { metrics } = this.node.ctx;
    if (!this.#handshakeCounted) {
      metrics.handshakeEnded(this.pattern ?? "unknown", "abandoned");
      this.#handshakeCounted = true;
    }
    this.#admitted?.();
    this.#admitted = null;
    this.state = "closed";
    this.transport.close();
    this.#wakeWindow();
    try {
      if (wasOpen && this.sessionId) {
        metrics.connectionClosed();
        const requeued = await this.#requeueUnacked();
        await this.node.closed(this);
        // The device may already hold a newer session whose replay found nothing: wake it.
        if (requeued) this.node.requeued(this.deviceId);
        this.log.info("connection closed");
      }
    } catch (err) {
      this.log.warn("teardown failed", { error: err });
    } finally {
      this.#tornDown = true;
      this.#closedWaiter?.resolve();
      this.#closedWaiter = null;
    }
  }

  /**
   * Frames handed over but not acknowledged go back to the queue (at-least-once). True when
   * anything went back.
   */
  async #requeueUnacked(): Promise<boolean> {
    const { storage, config, metrics } = this.node.ctx;
    await this.#ackChain;
    await this.#persistChain;
    const live: RoutedItem[] = [];
    let claimed = 0;
    for (const entry of this.inflight.values()) {
      if (entry instanceof Claimed) claimed++;
      else live.push(entry);
    }
    this.inflight.clear();
    this.#liveCount = 0;
    if (live.length > 0) {
      await storage.relay.enqueue(
        live.map((item) => ({
          deviceId: this.deviceId,
          channelId: item.channel,
          payload: encodeItemFrame(item),
          sender: item.sender || null,
        })),
        config.limits.relayTtl,
      );
      metrics.enqueued(live.length);
      // Durable now: the senders waiting for these copies get their ACKs.
      for (const item of live) item.ack?.settle();
    }
    // Release this session's claims: a replay may have claimed more than it sent. A session
    // whose claims all came back empty holds none (the common short session: no round trip).
    if (this.#claiming) await this.#claiming.catch(() => {});
    const released = this.#claimedRows
      ? await storage.relay.requeue({ sessionId: this.sessionId })
      : 0;
    if (live.length > 0 || released > 0 || claimed > 0) {
      this.log.info("unacknowledged frames requeued", { live: live.length, released });
      return true;
    }
    return false;
  }
}

/** Waits for `promise`, but at most `ms` (the timer is always cleared). */
async function settleWithin(promise: Promise<void>, ms: number): Promise<void> {
  let id: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([promise, new Promise<void>((resolve) => (id = setTimeout(resolve, ms)))]);
  } finally {
    clearTimeout(id);
  }
}

function isDecryptFailure(err: unknown): boolean {
  return err instanceof NoiseError;
}
