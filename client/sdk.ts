/**
 * The CommuCat client SDK: connect a device to a relay server over TCP, TLS, HTTP `/connect`
 * or a WebSocket, authenticate with Noise XK or IK, and exchange CCP-1 frames. This core
 * imports nothing platform-specific and runs unchanged in Deno and in browsers.
 *
 * ```ts
 * const client = await connect({ deviceId, keypair, serverKey, host: "127.0.0.1", port: 9443 });
 * await client.join(7, [deviceId, "peer-device"]);
 * await client.send(7, new TextEncoder().encode("hello"));      // resolves on the server's ACK
 * for await (const m of client.messages()) console.log(m.kind, m.channel, m.text());
 * ```
 *
 * Conventions this SDK relies on (ccp1.md §3–§5):
 * - Outbound sequences start at 1 on every connection (HELLO is 1) and increase by one per
 *   frame; a request's promise settles on the ACK `{ack: seq}` naming its sequence, or on a
 *   non-fatal ERROR whose `sequence` names it. A fatal ERROR fails every pending request.
 * - An inbound frame is acknowledged with ACK `{ack: <its sequence>}` on its channel; the
 *   server deletes a queued envelope only then. `autoAck` does this once the consumer asks
 *   for the next message (so a crash mid-processing leaves the frame to be redelivered).
 *
 * @module
 */

import type { ExpiredFrames, HelloUser, UserInfo } from "../protocol/control.ts";
import {
  type HandshakePattern,
  parsePresence,
  SUPPORTED_PROTOCOL_VERSIONS,
} from "../protocol/control.ts";
import { generateKeypair, type Keypair } from "../protocol/crypto.ts";
import {
  encodeControl,
  encodeFrame,
  type Frame,
  FRAME_TYPE_NAMES,
  FrameType,
} from "../protocol/frame.ts";
import { bytesToHex, hexToBytes, isHex } from "../protocol/hex.ts";
import { ID_RULE, isId } from "../protocol/ids.ts";
import { MAX_U32 } from "../protocol/varint.ts";
import { SENDER_CAPABILITY, splitSender } from "../protocol/sender.ts";
import { writeRotationProof } from "../protocol/rotation.ts";
import { type KeyCatalogBody, verifyKeyCatalog } from "../protocol/key_catalog.ts";
import { CommuCatError, connectionClosed, toCommuCatError } from "./errors.ts";
import { E2E, E2EError, type E2EOptions, type SealedAck, type SealedFields } from "./e2e.ts";
import { FrameReader, FrameWriter } from "./framing.ts";
import { type HandshakeResult, runHandshake } from "./handshake.ts";
import {
  isLoopbackHost,
  openTransport,
  type Transport,
  type TransportKind,
  websocketUrl,
} from "./transport.ts";

export { CommuCatError } from "./errors.ts";
export type { HandshakePattern, HelloUser, Keypair, UserInfo };

/** Backoff for automatic reconnection. */
export interface ReconnectPolicy {
  /** First delay, doubled after each failed attempt (default 250 ms). */
  initialDelayMs?: number;
  /** Longest delay between attempts (default 10 000 ms). */
  maxDelayMs?: number;
  /** Attempts before giving up and closing the client (default unlimited). */
  maxAttempts?: number;
}

/** Everything {@link connect} needs. */
export interface ConnectOptions {
  /** "tcp" (default), "tls", "http" (`POST /connect`) or "ws" (`/connect` as a WebSocket). */
  transport?: TransportKind;
  /** Server host for tcp/tls (default 127.0.0.1). */
  host?: string;
  /** Server port for tcp/tls: the server's `tcp_bind` (default 9443). */
  port?: number;
  /**
   * For http and ws: the `/connect` URL on the server's `bind` listener (ws: a browser page
   * defaults to its own origin's `/connect`).
   */
  url?: string;
  /** PEM certificates to trust (a self-signed server certificate). */
  caCerts?: string[];
  /** TLS server name when `host` is an address that the certificate does not name. */
  serverName?: string;
  /** Noise pattern (default "XK"). */
  pattern?: HandshakePattern;
  /**
   * Protocol versions offered (the server picks the highest common one). Default `[1, 2]`
   * over TLS or to a loopback address, `[2]` otherwise, since v1 has no tunnel encryption.
   */
  versions?: number[];
  /** This device's id. */
  deviceId: string;
  /** This device's static X25519 keypair (see client/keystore.ts). */
  keypair: Keypair;
  /** The server's static public key (32 bytes, or 64 hex characters): printed on start. */
  serverKey: Uint8Array | string;
  /**
   * Further server static keys to try, in order, when the handshake to `serverKey` fails with
   * "Handshake Failed" (a server key rotation; the "serverKey" event hands them out).
   */
  nextServerKeys?: (Uint8Array | string)[];
  /**
   * The server's Ed25519 federation public key (32 bytes or 64 hex; printed on start as
   * "federation public key (Ed25519)"). With it the client follows a rotation of the server's
   * Noise key: it accepts key catalogs signed by this key (announced by the server, or passed
   * to {@link Client.useKeyCatalog}), connects with the new key from then on and emits
   * "serverKey" so it can be persisted. Without it, announced catalogs are ignored.
   */
  federationKey?: Uint8Array | string;
  /** Noise prologue; must match the server's `[crypto] prologue` (default "commucat"). */
  prologue?: string;
  /** Profile sent in HELLO (used when the server provisions the user). */
  user?: HelloUser;
  /** Capabilities sent in HELLO. */
  capabilities?: string[];
  /**
   * A pairing code from another device of `user` (its `pairCode()`): this new device joins that
   * user, active at once. Sent in the first handshake only (docs/PROTOCOL.md §11).
   */
  pairingCode?: string;
  /** Connect + handshake deadline (default 10 000 ms). */
  handshakeTimeoutMs?: number;
  /** How long a request waits for its ACK before rejecting (default 30 000 ms; 0 = forever). */
  ackTimeoutMs?: number;
  /** Acknowledge each inbound frame when the consumer moves past it (default true). */
  autoAck?: boolean;
  /** Reconnect automatically after a dropped connection (default false). */
  reconnect?: boolean | ReconnectPolicy;
  /** Interval of keepalive PRESENCE frames (default 20 000 ms; 0 disables). */
  keepaliveMs?: number;
  /**
   * End-to-end encryption (client/e2e.ts): `true` or options enable `sendSealed` and the sealed
   * fields of received messages, and ask for the server's `sender` capability.
   */
  e2e?: boolean | E2EOptions;
}

/** Frame kinds delivered to {@link Client.messages}. */
export type InboundKind = "MSG" | "TYPING" | "KEY_UPDATE" | "GROUP_EVENT" | "PRESENCE";

/**
 * One frame delivered by the server. With end-to-end encryption enabled, MSG frames also carry
 * the sealed fields (`sealed`, `plaintext`, `sender`, `verified`, `e2eError`, …).
 */
export interface InboundMessage extends Partial<SealedFields> {
  /** Frame type code. */
  type: FrameType;
  /** Frame type name, e.g. "MSG". */
  kind: InboundKind;
  channel: number;
  /** The server's sequence for this frame on this connection (what {@link ack} takes). */
  sequence: number;
  /** Payload bytes (client ciphertext for MSG / KEY_UPDATE, JSON text otherwise). */
  payload: Uint8Array;
  /** Parsed JSON for control kinds. */
  json?: unknown;
  /** PRESENCE: the channel member it is about (from `json.peer`). */
  peer?: string;
  /**
   * PRESENCE: that member's state — "online" when it connects or joins the channel, "offline"
   * when its connection ends, or whatever state it set (e.g. "away").
   */
  state?: string;
  /** PRESENCE on a `relay: false` channel: the address the server sees that member at. */
  candidate?: string;
  /** When the client received it. */
  receivedAt: Date;
  /** True when it arrived on an earlier connection than the current one. */
  readonly stale: boolean;
  /** The payload as UTF-8 text. */
  text(): string;
  /** Acknowledges this frame to the server (idempotent; a no-op once stale). */
  ack(): void;
}

/** The server's ACK payload for a request. */
export interface AckResult {
  ack: number;
  group_id?: string;
  device?: string;
  /**
   * Copies of a frame sent to members of other domains: one per remote member, with the id a
   * delivery receipt names once that member's device acknowledged the copy (see "receipt").
   */
  remote?: RemoteCopy[];
  [key: string]: unknown;
}

/** A copy of a sent frame on its way to a member of another domain. */
export interface RemoteCopy {
  /** The remote member, `device@domain`. */
  recipient: string;
  /** The copy's id (the federation event id); a receipt names it. */
  id: string;
}

/**
 * A delivery receipt: the recipient's device (on another domain) acknowledged a copy of a frame
 * this device sent (docs/PROTOCOL.md "Delivery receipts").
 */
export interface DeliveryReceipt {
  /** The copy's id, as the send's ACK named it in `remote`. */
  id: string;
  channel: number;
  /** The remote device that acknowledged it, `device@domain`. */
  recipient: string;
  /** When its server says it was acknowledged. */
  ackedAt: Date;
}

/** JOIN options. */
export interface JoinOptions {
  /** Relay through the server (default true); false asks for P2P candidates. */
  relay?: boolean;
  /** Join a group's channel: the roster comes from the group's members. */
  groupId?: string;
}

/** GROUP_CREATE fields. */
export interface CreateGroupOptions {
  groupId?: string;
  members: string[];
  roles?: Record<string, "admin" | "member">;
  relay?: boolean;
}

/** Client lifecycle events. */
export interface ClientEvents {
  /** A non-fatal ERROR not tied to a pending request, or a failed re-join. */
  error: CommuCatError;
  /** The connection dropped; an automatic reconnect follows when enabled. */
  disconnected: CommuCatError;
  /** A reconnect attempt is scheduled after `delayMs`. */
  reconnecting: { attempt: number; delayMs: number };
  /** A new connection completed its handshake. */
  connected: { session: string; protocolVersion: number };
  /** The client is closed for good; `error` says why when it was not `close()`. */
  closed: CommuCatError | null;
  /**
   * Frames this device sent expired unread after the server's relay_ttl (an expiry notice:
   * one entry per channel and recipient; `moreFrames` counts frames the notice did not list).
   */
  expired: { entries: ExpiredFrames[]; moreFrames: number };
  /**
   * Copies this device sent to members of other domains were acknowledged by their recipients
   * (one event per receipt frame; match `id` against the `remote` ids of a send's ACK, or use
   * {@link Client.delivered}).
   */
  receipt: { delivered: DeliveryReceipt[] };
  /**
   * The client accepted a signed key catalog (or a fallback key's handshake) that changes the
   * server key it connects with: persist `serverKey` and `nextServerKeys` where the server key
   * is kept and pass them to {@link connect} next time. The last one is held for the first
   * listener when it came before any.
   */
  serverKey: ServerKeyUpdate;
}

/** The server keys a client connects with, after a rotation it followed. */
export interface ServerKeyUpdate {
  /** The key to connect with (hex): the catalog's current key. */
  serverKey: string;
  /** Keys to try when that one fails (hex): the catalog's next key, if any. */
  nextServerKeys: string[];
  /** The catalog's domain and time (absent when a fallback key's handshake taught it). */
  domain?: string;
  issuedAt?: Date;
}

/** One entry of an expiry notice (docs/PROTOCOL.md "Expiry notices"). */
export type { ExpiredFrames };

const INBOUND_KINDS: ReadonlyMap<number, InboundKind> = new Map([
  [FrameType.Msg, "MSG"],
  [FrameType.Typing, "TYPING"],
  [FrameType.KeyUpdate, "KEY_UPDATE"],
  [FrameType.GroupEvent, "GROUP_EVENT"],
  [FrameType.Presence, "PRESENCE"],
]);

/** True when the server accepts `state` in PRESENCE (see parsePresence). */
function isPresenceState(state: string): boolean {
  try {
    parsePresence({ state });
    return true;
  } catch {
    return false;
  }
}

/** Statuses of fatal errors a retry cannot fix (auth refused, version mismatch). */
const FINAL_STATUSES = new Set([401, 403, 426]);

const utf8 = new TextDecoder();

type Timer = ReturnType<typeof setTimeout>;

interface Pending {
  resolve(value: AckResult): void;
  reject(error: CommuCatError): void;
  timer: Timer | undefined;
}

/** One live connection: transport, frame I/O, sequences and the requests waiting on it. */
interface Link {
  generation: number;
  transport: Transport;
  reader: FrameReader;
  writer: FrameWriter;
  handshake: HandshakeResult;
  nextSequence: number;
  pending: Map<number, Pending>;
  /** Inbound sequences delivered but not yet acknowledged → their channel. */
  unacked: Map<number, number>;
  keepalive: Timer | undefined;
  down: boolean;
}

/** Normalised connect options. */
type Settings =
  & Required<
    Pick<
      ConnectOptions,
      | "pattern"
      | "prologue"
      | "capabilities"
      | "handshakeTimeoutMs"
      | "ackTimeoutMs"
      | "autoAck"
      | "keepaliveMs"
    >
  >
  & {
    options: ConnectOptions;
    versions: number[];
    serverKey: Uint8Array;
    nextServerKeys: Uint8Array[];
    federationKey: Uint8Array | null;
    reconnect: Required<ReconnectPolicy> | null;
  };

/** Connects, runs the handshake, and returns a ready {@link Client}. */
export async function connect(options: ConnectOptions): Promise<Client> {
  const client = new Client(normalise(options));
  await client.reconnect();
  return client;
}

/** A connected device. Create one with {@link connect}. */
export class Client {
  #settings: Settings;
  #link: Link | null = null;
  #generation = 0;
  #inbox: InboundMessage[] = [];
  #waiters: ((m: InboundMessage | null) => void)[] = [];
  /** autoAck: per open iterator, acknowledges the message it handed out last. */
  #settlers = new Set<() => void>();
  #joined = new Map<number, { members: string[]; relay: boolean; groupId?: string }>();
  #listeners = new Map<keyof ClientEvents, Set<(value: never) => void>>();
  #closed = false;
  #closeError: CommuCatError | null = null;
  /** The state last set with {@link presence}: keepalives repeat it, a reconnect restores it. */
  #presenceState = "online";
  #connecting: Promise<void> | null = null;
  #retryTimer: Timer | undefined;
  #retryWake: (() => void) | null = null;
  /** Sent until a handshake succeeds (then the device is registered). */
  #pairingCode: string | undefined;
  #closedResolve!: (error: CommuCatError | null) => void;
  /** Settles when the client is closed for good: null after `close()`, else the reason. */
  readonly closed: Promise<CommuCatError | null>;

  /** End-to-end encryption, when enabled (ConnectOptions.e2e). */
  readonly e2e: E2E | null;

  /** Use {@link connect}. */
  constructor(settings: Settings) {
    this.#settings = settings;
    this.#pairingCode = settings.options.pairingCode;
    this.closed = new Promise((resolve) => (this.#closedResolve = resolve));
    const e2e = settings.options.e2e;
    // deno-lint-ignore no-this-alias
    const self = this;
    this.e2e = e2e
      ? new E2E(
        {
          deviceId: settings.options.deviceId,
          get userId() {
            return self.user?.id;
          },
          sendRaw: (channel, payload) => this.send(channel, payload),
          serverRequest: (op, fields) => this.serverRequest(op, fields),
          conversationOf: (channel) => this.conversationOf(channel),
        },
        settings.options.keypair,
        e2e === true ? {} : e2e,
      )
      : null;
  }

  /** This device's id. */
  get deviceId(): string {
    return this.#settings.options.deviceId;
  }

  /** True while a handshaken connection is up. */
  get connected(): boolean {
    return this.#link !== null && !this.#link.down;
  }

  /** The current session id (of the last successful handshake). */
  get session(): string | undefined {
    return this.#lastHandshake?.session;
  }

  /** The negotiated protocol version of the current connection (1 or 2). */
  get protocolVersion(): number | undefined {
    return this.#lastHandshake?.protocolVersion;
  }

  /** The user this device belongs to, as the server described it. */
  get user(): UserInfo | undefined {
    return this.#lastHandshake?.user;
  }

  /** Capabilities the server granted in AUTH on the current connection (e.g. "sender"). */
  get capabilities(): string[] {
    return [...(this.#lastHandshake?.capabilities ?? [])];
  }

  /** The server's domain from the authenticated handshake. */
  get domain(): string | undefined {
    return this.#lastHandshake?.domain;
  }

  #lastHandshake: HandshakeResult | undefined;

  /** The server key the next connection starts with (hex). */
  get serverKey(): string {
    return bytesToHex(this.#settings.serverKey);
  }

  /** Keys tried after `serverKey` fails (hex). */
  get nextServerKeys(): string[] {
    return this.#settings.nextServerKeys.map(bytesToHex);
  }

  /** issued_at of the last key catalog accepted (an older one is refused). */
  #catalogIssuedAt = 0;
  /** The last "serverKey" update when nobody listened yet. */
  #heldServerKey: ServerKeyUpdate | null = null;

  /**
   * Accepts a signed server key catalog (docs/PROTOCOL.md "Server key catalog": announced by
   * the server, or fetched from `GET /.well-known/commucat`): it must be signed by the
   * `federationKey` given to connect, name this server's domain, and be no older than the last
   * one accepted. The catalog's current key becomes the key of the next connection and its next
   * key the fallback; "serverKey" is emitted when that changes. Throws a CommuCatError
   * ("Invalid Key Catalog", 400) and changes nothing otherwise.
   */
  useKeyCatalog(catalog: unknown): ServerKeyUpdate {
    const invalid = (detail: string) =>
      new CommuCatError("Invalid Key Catalog", 400, detail, { fatal: false });
    const trusted = this.#settings.federationKey;
    if (trusted === null) {
      throw invalid("no federationKey was given to connect: a catalog cannot be checked");
    }
    let body: KeyCatalogBody;
    try {
      body = verifyKeyCatalog(catalog, trusted);
    } catch (err) {
      throw invalid((err as Error).message);
    }
    const domain = this.domain;
    if (domain !== undefined && body.domain.toLowerCase() !== domain.toLowerCase()) {
      throw invalid(`the catalog is for ${body.domain}, not for ${domain}`);
    }
    const issued = Date.parse(body.issued_at);
    if (issued < this.#catalogIssuedAt) {
      throw invalid(`the catalog was issued at ${body.issued_at}, before the one in use`);
    }
    this.#catalogIssuedAt = issued;
    const current = body.keys.find((k) => k.status === "current")!.public_key;
    const next = body.keys.filter((k) => k.status === "next").map((k) => k.public_key);
    const update: ServerKeyUpdate = {
      serverKey: current,
      nextServerKeys: next,
      domain: body.domain,
      issuedAt: new Date(issued),
    };
    const changed = current !== this.serverKey ||
      next.join(",") !== this.nextServerKeys.join(",");
    if (changed) {
      this.#settings.serverKey = hexToBytes(current, 32);
      this.#settings.nextServerKeys = next.map((k) => hexToBytes(k, 32));
      this.#emitServerKey(update);
    }
    return update;
  }

  #emitServerKey(update: ServerKeyUpdate): void {
    if ((this.#listeners.get("serverKey")?.size ?? 0) > 0) this.#emit("serverKey", update);
    else this.#heldServerKey = update;
  }

  /** Subscribes to a lifecycle event; returns a function that unsubscribes. */
  on<E extends keyof ClientEvents>(
    event: E,
    listener: (value: ClientEvents[E]) => void,
  ): () => void {
    let set = this.#listeners.get(event);
    if (!set) this.#listeners.set(event, set = new Set());
    set.add(listener as (value: never) => void);
    if (event === "serverKey" && this.#heldServerKey !== null) {
      const held = this.#heldServerKey;
      this.#heldServerKey = null;
      queueMicrotask(() => this.#emit("serverKey", held));
    }
    if (event === "receipt" && this.#heldReceipts.length > 0) {
      const held = this.#heldReceipts.splice(0);
      queueMicrotask(() => {
        for (const receipt of held) this.#emit("receipt", receipt);
      });
    }
    if (event === "expired" && this.#heldNotices.length > 0) {
      // Notices that arrived before anyone listened (a replay right after connect).
      const held = this.#heldNotices.splice(0);
      queueMicrotask(() => {
        for (const notice of held) this.#emit("expired", notice);
      });
    }
    return () => set.delete(listener as (value: never) => void);
  }

  /** Expiry notices received while nobody listened for "expired" (at most 64 kept). */
  #heldNotices: ClientEvents["expired"][] = [];
  /** Receipt frames received while nobody listened for "receipt" (at most 64 kept). */
  #heldReceipts: ClientEvents["receipt"][] = [];
  /** Receipts received lately, by copy id, for {@link delivered} (at most RECENT_RECEIPTS). */
  #receipts = new Map<string, DeliveryReceipt>();
  /** {@link delivered} calls waiting for a receipt, by copy id. */
  #receiptWaiters = new Map<string, Set<(r: DeliveryReceipt | null) => void>>();

  /**
   * Resolves with the receipt of the remote copy `id` (from `ack.remote`), when its recipient's
   * device acknowledges it; at once when that receipt was received already (the last
   * 4096 are remembered). Rejects after `timeoutMs` (default: waits until the client closes,
   * then rejects). Receipts come only for members of other domains whose servers report
   * acknowledgements (CommuCat servers do).
   */
  delivered(id: string, options: { timeoutMs?: number } = {}): Promise<DeliveryReceipt> {
    const known = this.#receipts.get(id);
    if (known) return Promise.resolve(known);
    if (this.#closed) return Promise.reject(connectionClosed("the client is closed"));
    return new Promise((resolve, reject) => {
      let timer: Timer | undefined;
      const done = (r: DeliveryReceipt | null) => {
        clearTimeout(timer);
        const set = this.#receiptWaiters.get(id);
        set?.delete(done);
        if (set?.size === 0) this.#receiptWaiters.delete(id);
        if (r) resolve(r);
        else reject(connectionClosed(`the client closed before copy ${id} was acknowledged`));
      };
      let set = this.#receiptWaiters.get(id);
      if (!set) this.#receiptWaiters.set(id, set = new Set());
      set.add(done);
      if (options.timeoutMs !== undefined) {
        timer = setTimeout(() => {
          const waiting = this.#receiptWaiters.get(id);
          waiting?.delete(done);
          if (waiting?.size === 0) this.#receiptWaiters.delete(id);
          reject(
            new CommuCatError(
              "Receipt Timeout",
              504,
              `no receipt for copy ${id} within ${options.timeoutMs} ms`,
              { fatal: false },
            ),
          );
        }, options.timeoutMs);
      }
    });
  }

  #onReceipts(entries: DeliveryReceipt[]): void {
    for (const r of entries) {
      this.#receipts.delete(r.id);
      this.#receipts.set(r.id, r);
      if (this.#receipts.size > RECENT_RECEIPTS) {
        this.#receipts.delete(this.#receipts.keys().next().value!);
      }
      for (const waiter of [...(this.#receiptWaiters.get(r.id) ?? [])]) waiter(r);
    }
    const value = { delivered: entries };
    if ((this.#listeners.get("receipt")?.size ?? 0) > 0) this.#emit("receipt", value);
    else if (this.#heldReceipts.length < 64) this.#heldReceipts.push(value);
  }

  #emit<E extends keyof ClientEvents>(event: E, value: ClientEvents[E]): void {
    for (const listener of this.#listeners.get(event) ?? []) {
      try {
        (listener as (v: ClientEvents[E]) => void)(value);
      } catch (error) {
        console.error(`commucat client: "${event}" listener threw:`, error);
      }
    }
  }

  // -------------------------------------------------------------------------------------
  // Requests

  /**
   * JOIN `channel` with `members` (device ids; include your own). Resolves with the ACK.
   * The channel is remembered and joined again after a reconnect.
   */
  async join(channel: number, members: string[], options: JoinOptions = {}): Promise<AckResult> {
    const relay = options.relay ?? true;
    const body: Record<string, unknown> = { members, relay };
    if (options.groupId !== undefined) body.group_id = options.groupId;
    const ack = await this.#request(FrameType.Join, channel, body);
    // A conversation of users: the server names its member set (`@<user id>`, device ids),
    // which sealed envelopes are bound to (docs/PROTOCOL.md §11).
    const named = Array.isArray(ack.members) &&
        ack.members.every((m: unknown) => typeof m === "string")
      ? ack.members as string[]
      : [...members];
    this.#joined.set(channel, { members: named, relay, groupId: options.groupId });
    return ack;
  }

  /** LEAVE `channel`. */
  leave(channel: number, reason?: string): Promise<AckResult> {
    this.#joined.delete(channel);
    return this.#request(FrameType.Leave, channel, reason === undefined ? {} : { reason });
  }

  /** Sends a MSG (opaque bytes, or a string sent as UTF-8). Resolves once the server ACKs. */
  send(channel: number, payload: Uint8Array | string): Promise<AckResult> {
    return this.#requestOpaque(FrameType.Msg, channel, payload);
  }

  /**
   * Seals `body` for every other member device of the conversation joined on `channel` and
   * sends it (see client/e2e.ts). Needs `e2e` in the connect options; rejects with a typed
   * E2EError ("not-joined", "unknown-key", "key-changed", …) before sending anything.
   */
  sendSealed(channel: number, body: Uint8Array | string): Promise<SealedAck> {
    if (!this.e2e) {
      return Promise.reject(
        new E2EError("disabled", "end-to-end encryption is not enabled (connect with e2e)"),
      );
    }
    return this.e2e.sendSealed(channel, body);
  }

  /**
   * A server request (KEY_UPDATE on channel 0 with `{"op": op, ...fields}`): resolves with the
   * server's ACK fields, rejects with its non-fatal ERROR.
   */
  serverRequest(op: string, fields: Record<string, unknown> = {}): Promise<AckResult> {
    return this.#requestOpaque(FrameType.KeyUpdate, 0, JSON.stringify({ ...fields, op }));
  }

  /**
   * Rotates this device's static key (ccp1.md §4.4): proves `keypair` (a fresh one by default)
   * to the server from this authenticated session with the `rotate_key` request, then uses it
   * for sealing and for every later handshake. Store the returned key pair before the client
   * reconnects (client/keystore.ts `replaceIdentityKey`); the queue stays with the device.
   */
  async rotateKey(keypair: Keypair = generateKeypair()): Promise<Keypair> {
    const session = this.session;
    if (!this.connected || session === undefined) {
      throw connectionClosed("rotating the key needs a connected session");
    }
    const proof = writeRotationProof(keypair, this.#settings.serverKey, session);
    await this.serverRequest("rotate_key", {
      client_static: bytesToHex(keypair.publicKey),
      proof: bytesToHex(proof),
    });
    this.#settings.options.keypair = keypair;
    this.e2e?.useKey(keypair);
    return keypair;
  }

  /**
   * Asks for a one-time pairing code for a new device of this user (`pair_code`, docs/PROTOCOL.md
   * §11): `{code: "7KQ2-M9XD", expires_at, expires_in, max_attempts, …}`.
   */
  pairCode(): Promise<AckResult> {
    return this.serverRequest("pair_code");
  }

  /** This user's devices (`devices`): `{devices: [{device, status, fingerprint, …}], …}`. */
  devices(): Promise<AckResult> {
    return this.serverRequest("devices");
  }

  /** Revokes another device of this user (`unlink`); it is cut off on every node. */
  unlink(deviceId: string): Promise<AckResult> {
    return this.serverRequest("unlink", { device: deviceId });
  }

  /** The members (and group) this client joined `channel` with, or undefined. */
  conversationOf(channel: number): { members: string[]; groupId?: string } | undefined {
    const j = this.#joined.get(channel);
    if (!j) return undefined;
    return j.groupId === undefined
      ? { members: [...j.members] }
      : { members: [...j.members], groupId: j.groupId };
  }

  /** Sends a KEY_UPDATE (opaque bytes) to the channel's other members. */
  keyUpdate(channel: number, payload: Uint8Array | string): Promise<AckResult> {
    return this.#requestOpaque(FrameType.KeyUpdate, channel, payload);
  }

  /** Sends a TYPING hint (any JSON object; default `{typing: true}`). */
  typing(channel: number, hint: Record<string, unknown> = { typing: true }): Promise<AckResult> {
    return this.#request(FrameType.Typing, channel, hint);
  }

  /** Sends a GROUP_EVENT (any JSON object) to the channel's other members. */
  groupEvent(channel: number, event: Record<string, unknown>): Promise<AckResult> {
    return this.#request(FrameType.GroupEvent, channel, event);
  }

  /**
   * Sends PRESENCE `{state}` (e.g. "online", "away", "offline") on `channel` (default 0).
   * The server refreshes the device's presence record and sends no ACK, so this resolves
   * once the frame is written; a refusal arrives as an "error" event.
   */
  async presence(
    state: string,
    options: { channel?: number; candidate?: string } = {},
  ): Promise<void> {
    const link = this.#link;
    if (this.#closed || link === null || link.down) {
      throw connectionClosed("not connected: PRESENCE was not sent");
    }
    const body: Record<string, unknown> = { state };
    if (options.candidate !== undefined) body.candidate = options.candidate;
    this.#write(link, (seq) => encodeControl(FrameType.Presence, options.channel ?? 0, seq, body));
    // Remembered only when valid: a keepalive must not repeat a state the server refuses.
    if (isPresenceState(state)) this.#presenceState = state;
    await link.writer.flushed();
  }

  /** GROUP_CREATE: this device becomes the owner. Resolves with `{ack, group_id}`. */
  createGroup(options: CreateGroupOptions): Promise<AckResult> {
    const body: Record<string, unknown> = {
      members: options.members,
      roles: options.roles ?? {},
      relay: options.relay ?? true,
    };
    if (options.groupId !== undefined) body.group_id = options.groupId;
    return this.#request(FrameType.GroupCreate, 0, body);
  }

  /** GROUP_INVITE (owners and admins; see PROTOCOL.md "Group roles"). Resolves with `{ack, group_id, device, role}`. */
  invite(groupId: string, device: string, role: "member" | "admin" = "member"): Promise<AckResult> {
    return this.#request(FrameType.GroupInvite, 0, { group_id: groupId, device, role });
  }

  /**
   * Acknowledges the inbound frame delivered under `sequence` on the current connection,
   * so the server can forget its queued copy. Unknown or already acknowledged sequences are
   * ignored. (With `autoAck`, the iterator does this for you.)
   */
  ack(sequence: number): void {
    const link = this.#link;
    if (link) this.#ackOn(link, sequence);
  }

  #ackOn(link: Link, sequence: number): void {
    if (link.down || link !== this.#link) return;
    const channel = link.unacked.get(sequence);
    if (channel === undefined) return;
    link.unacked.delete(sequence);
    this.#write(link, (seq) => encodeControl(FrameType.Ack, channel, seq, { ack: sequence }));
  }

  #requestOpaque(type: FrameType, channel: number, payload: Uint8Array | string) {
    const bytes = typeof payload === "string" ? new TextEncoder().encode(payload) : payload;
    return this.#send(type, (sequence) => encodeFrame({ type, channel, sequence, payload: bytes }));
  }

  #request(type: FrameType, channel: number, body: unknown): Promise<AckResult> {
    return this.#send(type, (sequence) => encodeControl(type, channel, sequence, body));
  }

  /** Encodes with the next sequence, queues the write, and waits for the matching ACK. */
  #send(type: FrameType, encode: (sequence: number) => Uint8Array): Promise<AckResult> {
    const link = this.#link;
    if (this.#closed) return Promise.reject(connectionClosed("the client is closed"));
    if (link === null || link.down) {
      return Promise.reject(
        connectionClosed(`not connected: ${FRAME_TYPE_NAMES[type]} was not sent`),
      );
    }
    return new Promise<AckResult>((resolve, reject) => {
      let sequence: number;
      try {
        sequence = this.#write(link, encode);
      } catch (error) {
        reject(toCommuCatError(error));
        return;
      }
      const timeout = this.#settings.ackTimeoutMs;
      const pending: Pending = { resolve, reject, timer: undefined };
      if (timeout > 0) {
        pending.timer = setTimeout(() => {
          link.pending.delete(sequence);
          reject(
            new CommuCatError(
              "Ack Timeout",
              504,
              `no ACK for ${FRAME_TYPE_NAMES[type]} sequence ${sequence} within ${timeout} ms`,
              { fatal: false, sequence },
            ),
          );
        }, timeout);
      }
      link.pending.set(sequence, pending);
    });
  }

  /** Takes the next outbound sequence, encodes and queues the frame; returns the sequence. */
  #write(link: Link, encode: (sequence: number) => Uint8Array): number {
    const sequence = link.nextSequence;
    if (sequence > MAX_U32) {
      // Sequences are u32 per connection: start a fresh connection rather than wrap.
      this.#linkDown(link, connectionClosed("outbound sequences exhausted on this connection"));
      throw connectionClosed("outbound sequences exhausted; reconnect");
    }
    const bytes = encode(sequence);
    link.nextSequence = sequence + 1;
    link.writer.enqueue(bytes);
    return sequence;
  }

  // -------------------------------------------------------------------------------------
  // Receiving

  /**
   * Inbound MSG / TYPING / KEY_UPDATE / GROUP_EVENT / PRESENCE frames, in arrival order,
   * across reconnects (the server's replayed queue arrives here too). Ends when the client
   * closes. Several iterators share one queue.
   */
  messages(): AsyncIterableIterator<InboundMessage> {
    let last: InboundMessage | null = null;
    const settle = () => {
      if (last !== null && this.#settings.autoAck) last.ack();
      last = null;
    };
    this.#settlers.add(settle);
    const iterator: AsyncIterableIterator<InboundMessage> = {
      next: async () => {
        settle();
        const message = await this.#take();
        if (message === null) {
          this.#settlers.delete(settle);
          return { done: true, value: undefined };
        }
        if (this.e2e && message.kind === "MSG") {
          Object.assign(message, await this.e2e.open(message));
        }
        // A peer that (re)connects may bring a new key: look it up again before sealing to it.
        if (this.e2e && message.peer !== undefined && message.state === "online") {
          this.e2e.forget(message.peer);
        }
        last = message;
        return { done: false, value: message };
      },
      return: () => {
        settle();
        this.#settlers.delete(settle);
        return Promise.resolve({ done: true, value: undefined });
      },
      [Symbol.asyncIterator]: () => iterator,
    };
    return iterator;
  }

  #take(): Promise<InboundMessage | null> {
    const message = this.#inbox.shift();
    if (message !== undefined) return Promise.resolve(message);
    if (this.#closed) return Promise.resolve(null);
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  #deliver(message: InboundMessage): void {
    const waiter = this.#waiters.shift();
    if (waiter) waiter(message);
    else this.#inbox.push(message);
  }

  #dispatch(link: Link, frame: Frame): void {
    switch (frame.type) {
      case FrameType.Ack: {
        const json = frame.json as Record<string, unknown> | null;
        if (json !== null && typeof json === "object" && "key_catalog" in json) {
          // The server's key catalog, announced during a rotation (live only, never queued).
          if (this.#settings.federationKey === null) return;
          try {
            this.useKeyCatalog(json.key_catalog);
          } catch (error) {
            this.#emit("error", toCommuCatError(error));
          }
          return;
        }
        if (json?.receipt === "delivered" && Array.isArray(json.delivered)) {
          // A delivery receipt, queued for this device: acknowledged like a relayed frame.
          link.unacked.set(frame.sequence, frame.channel);
          this.#ackOn(link, frame.sequence);
          const entries = parseReceipts(json.delivered);
          if (entries.length > 0) this.#onReceipts(entries);
          return;
        }
        const seq = json && typeof json === "object" ? json.ack : undefined;
        if (typeof seq !== "number") return; // e.g. a repeated handshake ACK: nothing waits.
        const pending = link.pending.get(seq);
        if (!pending) return; // keepalive PRESENCE, or a request that already timed out
        link.pending.delete(seq);
        clearTimeout(pending.timer);
        pending.resolve(json as AckResult);
        return;
      }
      case FrameType.Error: {
        const notice = frame.json as Record<string, unknown> | null;
        if (notice?.title === "Frames Expired" && Array.isArray(notice.expired)) {
          // An expiry notice, queued for this device: acknowledged like a relayed frame.
          link.unacked.set(frame.sequence, frame.channel);
          this.#ackOn(link, frame.sequence);
          const value = {
            entries: notice.expired as ExpiredFrames[],
            moreFrames: typeof notice.more_frames === "number" ? notice.more_frames : 0,
          };
          if ((this.#listeners.get("expired")?.size ?? 0) > 0) this.#emit("expired", value);
          else if (this.#heldNotices.length < 64) this.#heldNotices.push(value);
          return;
        }
        const error = CommuCatError.fromProblem(frame.json);
        if (error.fatal) {
          this.#linkDown(link, error);
          return;
        }
        const pending = error.sequence === undefined ? undefined : link.pending.get(error.sequence);
        if (pending) {
          link.pending.delete(error.sequence!);
          clearTimeout(pending.timer);
          pending.reject(error);
        } else {
          this.#emit("error", error);
        }
        return;
      }
      default: {
        const kind = INBOUND_KINDS.get(frame.type);
        if (kind === undefined) {
          this.#emit(
            "error",
            new CommuCatError(
              "Unexpected Frame",
              400,
              `server sent ${FRAME_TYPE_NAMES[frame.type]} after the handshake; ignored`,
              { fatal: false },
            ),
          );
          return;
        }
        link.unacked.set(frame.sequence, frame.channel);
        this.#deliver(this.#inbound(link, frame, kind));
      }
    }
  }

  #inbound(link: Link, frame: Frame, kind: InboundKind): InboundMessage {
    // The server's stamp names the sender (ccp1.md §4.2): split off before the application sees
    // the payload; a JSON frame carries it as `sender`.
    let sender: string | undefined;
    let body = frame.payload;
    if (link.handshake.capabilities.includes(SENDER_CAPABILITY)) {
      if (kind === "MSG" || kind === "KEY_UPDATE") {
        try {
          ({ sender, payload: body } = splitSender(frame.payload));
        } catch (err) {
          this.#emit(
            "error",
            new CommuCatError("Invalid Sender Stamp", 400, (err as Error).message, {
              fatal: false,
            }),
          );
        }
      } else if (typeof (frame.json as { sender?: unknown } | null)?.sender === "string") {
        sender = (frame.json as { sender: string }).sender;
      }
    }
    // Copy: the payload may be a view into a large read buffer shared with other frames.
    const payload = body.slice();
    const isCurrent = () => this.#link === link;
    const message: InboundMessage = {
      type: frame.type,
      kind,
      channel: frame.channel,
      sequence: frame.sequence,
      payload,
      json: frame.json,
      receivedAt: new Date(),
      get stale() {
        return link.down || !isCurrent();
      },
      text: () => utf8.decode(payload),
      ack: () => this.#ackOn(link, frame.sequence),
    };
    if (sender !== undefined) message.sender = sender;
    if (kind === "PRESENCE" && typeof frame.json === "object" && frame.json !== null) {
      const p = frame.json as Record<string, unknown>;
      if (typeof p.peer === "string") message.peer = p.peer;
      if (typeof p.state === "string") message.state = p.state;
      if (typeof p.candidate === "string") message.candidate = p.candidate;
    }
    return message;
  }

  // -------------------------------------------------------------------------------------
  // Connection lifecycle

  /**
   * Opens a fresh connection (closing the current one, if any), runs the handshake and
   * joins again the channels joined before. Rejects with a CommuCatError when the server
   * refuses (e.g. 403 "Device Pending Approval") or cannot be reached.
   */
  reconnect(): Promise<void> {
    if (this.#closed) return Promise.reject(connectionClosed("the client is closed"));
    this.#connecting ??= this.#open().finally(() => (this.#connecting = null));
    return this.#connecting;
  }

  async #open(): Promise<void> {
    const old = this.#link;
    if (old) this.#linkDown(old, connectionClosed("replaced by a new connection"), false);
    const s = this.#settings;
    const o = s.options;
    const deadline = s.handshakeTimeoutMs;
    let transport: Transport | null = null;
    let timer: Timer | undefined;
    let timedOut = false;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        timedOut = true;
        transport?.close();
        reject(
          new CommuCatError(
            "Handshake Timeout",
            408,
            `no completed handshake within ${deadline} ms`,
          ),
        );
      }, deadline);
    });
    try {
      const attempt = (async () => {
        // The pinned key first, then the fallbacks (a rotation that happened while away).
        const keys = [s.serverKey, ...s.nextServerKeys];
        for (let i = 0;; i++) {
          transport = await openTransport({
            transport: o.transport ?? "tcp",
            host: o.host,
            port: o.port,
            url: o.url,
            caCerts: o.caCerts,
            serverName: o.serverName,
          });
          if (timedOut) transport.close();
          const reader = new FrameReader(transport);
          try {
            const handshake = await runHandshake(transport, reader, {
              pattern: s.pattern,
              deviceId: o.deviceId,
              keypair: o.keypair,
              serverStatic: keys[i],
              prologue: s.prologue,
              versions: s.versions,
              user: o.user,
              capabilities: s.capabilities,
              pairingCode: this.#pairingCode,
            });
            return { transport, reader, handshake, key: keys[i], fallback: i > 0 };
          } catch (error) {
            const refused = toCommuCatError(error);
            if (i + 1 >= keys.length || timedOut || refused.title !== "Handshake Failed") {
              throw error;
            }
            (transport as Transport).close();
          }
        }
      })();
      attempt.catch(() => {}); // the race below reports it
      const opened = await Promise.race([attempt, timeout]);
      if (this.#closed) throw connectionClosed("the client was closed during the handshake");
      this.#pairingCode = undefined;
      if (opened.fallback) {
        // A fallback key answered: it is the server's key now.
        s.serverKey = opened.key;
        s.nextServerKeys = s.nextServerKeys.filter((k) => bytesToHex(k) !== bytesToHex(opened.key));
        this.#emitServerKey({
          serverKey: bytesToHex(opened.key),
          nextServerKeys: s.nextServerKeys.map(bytesToHex),
        });
      }
      this.#start(opened.transport, opened.reader, opened.handshake);
    } catch (error) {
      (transport as Transport | null)?.close();
      throw toCommuCatError(error, "Connect Failed");
    } finally {
      clearTimeout(timer);
    }
  }

  #start(transport: Transport, reader: FrameReader, handshake: HandshakeResult): void {
    const link: Link = {
      generation: ++this.#generation,
      transport,
      reader,
      writer: null as unknown as FrameWriter,
      handshake,
      nextSequence: handshake.nextSequence,
      pending: new Map(),
      unacked: new Map(),
      keepalive: undefined,
      down: false,
    };
    link.writer = new FrameWriter(
      transport,
      handshake.protocolVersion >= 2 ? handshake.send : null,
      (error) => this.#linkDown(link, toCommuCatError(error, "Connection Lost")),
    );
    this.#link = link;
    this.#lastHandshake = handshake;
    const every = this.#settings.keepaliveMs;
    if (every > 0) {
      link.keepalive = setInterval(() => {
        // Fire and forget: a PRESENCE refresh keeps the connection and presence alive (the
        // state set last, so a keepalive never turns "away" back into "online").
        if (!link.down) this.#writePresence(link);
      }, every);
    }
    // The server starts every session "online": restore a state set earlier.
    if (this.#presenceState !== "online") this.#writePresence(link);
    this.#pump(link);
    this.#emit("connected", {
      session: handshake.session,
      protocolVersion: handshake.protocolVersion,
    });
    for (const [channel, join] of this.#joined) {
      const body: Record<string, unknown> = { members: join.members, relay: join.relay };
      if (join.groupId !== undefined) body.group_id = join.groupId;
      this.#request(FrameType.Join, channel, body).catch((error) =>
        this.#emit("error", toCommuCatError(error))
      );
    }
  }

  #writePresence(link: Link): void {
    const state = this.#presenceState;
    this.#write(link, (seq) => encodeControl(FrameType.Presence, 0, seq, { state }));
  }

  async #pump(link: Link): Promise<void> {
    let reason: CommuCatError;
    try {
      for (;;) {
        const frame = await link.reader.next();
        if (link.down) return;
        if (frame === null) {
          reason = connectionClosed("the server closed the connection");
          break;
        }
        this.#dispatch(link, frame);
        if (link.down) return;
      }
    } catch (error) {
      reason = toCommuCatError(error, "Connection Lost");
    }
    this.#linkDown(link, reason);
  }

  /** Tears a link down once: fails its requests, and reconnects or closes the client. */
  #linkDown(link: Link, reason: CommuCatError, recover = true): void {
    if (link.down) return;
    link.down = true;
    clearInterval(link.keepalive);
    link.transport.close();
    for (const pending of link.pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(reason);
    }
    link.pending.clear();
    link.unacked.clear();
    if (this.#link === link) this.#link = null;
    if (!recover || this.#closed) return;
    this.#emit("disconnected", reason);
    const final = reason.source === "server" && FINAL_STATUSES.has(reason.status);
    if (this.#settings.reconnect && !final) {
      this.#autoReconnect(reason);
    } else {
      this.#finish(reason);
    }
  }

  async #autoReconnect(reason: CommuCatError): Promise<void> {
    const policy = this.#settings.reconnect!;
    let delay = Math.max(policy.initialDelayMs, (reason.retryAfter ?? 0) * 1000);
    let last = reason;
    for (let attempt = 1; attempt <= policy.maxAttempts && !this.#closed; attempt++) {
      // Jitter keeps a crowd of clients from reconnecting in lockstep after a restart.
      const wait = Math.round(delay * (0.75 + Math.random() * 0.5));
      this.#emit("reconnecting", { attempt, delayMs: wait });
      await new Promise<void>((resolve) => {
        this.#retryWake = resolve;
        this.#retryTimer = setTimeout(resolve, wait);
      });
      this.#retryWake = null;
      if (this.#closed || this.connected) return;
      try {
        await this.reconnect();
        return;
      } catch (error) {
        last = toCommuCatError(error);
        if (last.source === "server" && FINAL_STATUSES.has(last.status)) break;
      }
      delay = Math.min(delay * 2, policy.maxDelayMs);
      // A refusal that says when to come back (429/503 retry_after) is not retried sooner.
      if (last.retryAfter !== undefined) delay = Math.max(delay, last.retryAfter * 1000);
    }
    if (!this.#closed && !this.connected) this.#finish(last);
  }

  #finish(error: CommuCatError | null): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closeError = error;
    clearTimeout(this.#retryTimer);
    this.#retryWake?.();
    for (const waiter of this.#waiters.splice(0)) waiter(null);
    for (const set of [...this.#receiptWaiters.values()]) for (const w of [...set]) w(null);
    this.#emit("closed", error);
    this.#closedResolve(error);
  }

  /** Why the client closed, when it was not {@link close}. */
  get closeError(): CommuCatError | null {
    return this.#closeError;
  }

  /**
   * Flushes queued frames and closes the connection; pending requests reject and the
   * message iterator ends once it has returned what was already received.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    const link = this.#link;
    // The consumer holds the messages handed out last: with autoAck they count as processed.
    for (const settle of this.#settlers) settle();
    this.#finish(null);
    if (link) {
      // Give queued frames (e.g. final ACKs) a bounded chance to reach the socket.
      let timer: Timer | undefined;
      await Promise.race([
        link.writer.flushed(),
        new Promise((resolve) => (timer = setTimeout(resolve, 1000))),
      ]);
      clearTimeout(timer);
      this.#linkDown(link, connectionClosed("the client closed the connection"), false);
    }
    await this.#connecting?.catch(() => {});
  }
}

/** Receipts remembered for {@link Client.delivered}. */
const RECENT_RECEIPTS = 4096;

/** The well-formed entries of a receipt frame (others are skipped). */
function parseReceipts(list: unknown[]): DeliveryReceipt[] {
  const out: DeliveryReceipt[] = [];
  for (const e of list) {
    if (typeof e !== "object" || e === null) continue;
    const r = e as Record<string, unknown>;
    const at = typeof r.acked_at === "string" ? new Date(r.acked_at) : null;
    if (
      typeof r.id !== "string" || typeof r.recipient !== "string" ||
      typeof r.channel !== "number" || at === null || Number.isNaN(at.getTime())
    ) continue;
    out.push({ id: r.id, channel: r.channel, recipient: r.recipient, ackedAt: at });
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Options

function normalise(options: ConnectOptions): Settings {
  if (typeof options !== "object" || options === null) {
    throw new TypeError("connect: options must be an object");
  }
  if (!isId(options.deviceId)) {
    throw new TypeError(
      `connect: deviceId ${JSON.stringify(options.deviceId)} must be ${ID_RULE}`,
    );
  }
  const kp = options.keypair;
  if (
    !kp || !(kp.privateKey instanceof Uint8Array) || kp.privateKey.length !== 32 ||
    !(kp.publicKey instanceof Uint8Array) || kp.publicKey.length !== 32
  ) {
    throw new TypeError("connect: keypair must hold a 32-byte privateKey and publicKey");
  }
  const serverKey = parseServerKey(options.serverKey);
  const nextServerKeys = (options.nextServerKeys ?? []).map(parseServerKey);
  let federationKey: Uint8Array | null = null;
  if (options.federationKey !== undefined) {
    const f = options.federationKey;
    if (f instanceof Uint8Array && f.length === 32) federationKey = f;
    else if (typeof f === "string" && isHex(f.trim(), 32)) federationKey = hexToBytes(f.trim(), 32);
    else {
      throw new TypeError(
        "connect: federationKey must be the server's Ed25519 federation key (32 bytes or 64 hex)",
      );
    }
  }
  const pattern = options.pattern ?? "XK";
  if (pattern !== "XK" && pattern !== "IK") {
    throw new TypeError(`connect: pattern must be "XK" or "IK", got ${JSON.stringify(pattern)}`);
  }
  const kind = options.transport ?? "tcp";
  let tls = kind === "tls" ||
    (kind === "http" && (options.url ?? "").toLowerCase().startsWith("https:"));
  let host = options.host ?? "127.0.0.1";
  if (kind === "http" && options.url) {
    try {
      host = new URL(options.url).hostname;
    } catch {
      throw new TypeError(`connect: url ${JSON.stringify(options.url)} is not a valid URL`);
    }
  }
  if (kind === "ws") {
    const url = websocketUrl(options);
    tls = url.protocol === "wss:";
    host = url.hostname;
  }
  const versions = options.versions ?? (tls || isLoopbackHost(host) ? [1, 2] : [2]);
  if (
    !Array.isArray(versions) || versions.length === 0 ||
    versions.some((v) => !SUPPORTED_PROTOCOL_VERSIONS.includes(v))
  ) {
    throw new TypeError(
      `connect: versions must be a non-empty list drawn from ${
        JSON.stringify(SUPPORTED_PROTOCOL_VERSIONS)
      }, got ${JSON.stringify(versions)}`,
    );
  }
  const r = options.reconnect;
  const reconnect = r
    ? {
      initialDelayMs: (r === true ? undefined : r.initialDelayMs) ?? 250,
      maxDelayMs: (r === true ? undefined : r.maxDelayMs) ?? 10_000,
      maxAttempts: (r === true ? undefined : r.maxAttempts) ?? Infinity,
    }
    : null;
  return {
    options,
    pattern,
    versions: [...versions],
    serverKey,
    nextServerKeys,
    federationKey,
    prologue: options.prologue ?? "commucat",
    // The server's sender stamp is asked for always (ccp1.md §4.2): `sender` on every message.
    capabilities: [...new Set([...(options.capabilities ?? []), SENDER_CAPABILITY])],
    handshakeTimeoutMs: positive("handshakeTimeoutMs", options.handshakeTimeoutMs, 10_000),
    ackTimeoutMs: positive("ackTimeoutMs", options.ackTimeoutMs, 30_000, true),
    autoAck: options.autoAck ?? true,
    keepaliveMs: positive("keepaliveMs", options.keepaliveMs, 20_000, true),
    reconnect,
  };
}

/** The server key as 32 bytes, from bytes or hex; throws TypeError naming the problem. */
export function parseServerKey(key: Uint8Array | string): Uint8Array {
  if (key instanceof Uint8Array) {
    if (key.length !== 32) {
      throw new TypeError(`connect: serverKey must be 32 bytes, got ${key.length}`);
    }
    return key;
  }
  const text = typeof key === "string" ? key.trim() : "";
  if (!isHex(text, 32)) {
    throw new TypeError(
      "connect: serverKey must be the server's X25519 public key as 64 hex characters " +
        "(printed by the server on start as 'noise static public key')",
    );
  }
  return hexToBytes(text, 32);
}

function positive(name: string, value: number | undefined, fallback: number, zeroOk = false) {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value < 0 || (!zeroOk && value === 0)) {
    throw new TypeError(
      `connect: ${name} must be a ${zeroOk ? "non-negative" : "positive"} number`,
    );
  }
  return value;
}
