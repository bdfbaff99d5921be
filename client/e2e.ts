/**
 * End-to-end encryption for the SDK: `client.sendSealed(channel, bytes)` seals a message for
 * every other member device of the conversation joined on `channel` (protocol/envelope.ts), and
 * received MSG frames gain `sealed`, `plaintext`, `sender`, `verified` and `e2eError`.
 *
 * Keys come from the server's key directory (server request `keys`) and are pinned on first use
 * in a {@link TrustStore}; a key that differs from the pinned one is never used silently: a
 * "key-changed" event fires, sealing to that device is refused with E2EError("key-changed")
 * and messages proven by the new key are held (not shown) until the application accepts it
 * ({@link E2E.acceptKey}), which hands the held messages back opened.
 *
 * Platform-neutral: no Deno or node APIs here (storage of the trust store is the caller's).
 *
 * @module
 */
import {
  type Conversation,
  conversationKey,
  describeConversation,
  ENVELOPE_MAGIC,
  EnvelopeError,
  type EnvelopeErrorCode,
  openEnvelope,
  type ParsedEnvelope,
  parseEnvelope,
  sealEnvelope,
  USER_PREFIX,
} from "../protocol/envelope.ts";
import {
  type CryptoBackend,
  defaultBackend,
  type DhKey,
  type Keypair,
} from "../protocol/crypto.ts";
import { ProblemError } from "../protocol/errors.ts";
import { importStaticKey } from "../protocol/noise.ts";
import { bytesToHex, hexToBytes, isHex } from "../protocol/hex.ts";
import { type Observation, type PeerRecord, safetyNumber, TrustStore } from "./trust.ts";

/** Why sealing or opening failed (envelope rules, plus the trust decisions of this module). */
export type E2EErrorCode =
  | EnvelopeErrorCode
  | "unknown-key" // the directory has no usable key for a device (unknown, remote, not active)
  | "key-changed" // a device's key differs from the trusted one and was not accepted
  | "not-joined" // sendSealed on a channel this client has not joined
  | "disabled"; // end-to-end encryption is not enabled on this client

/** The typed failure of sealing or opening. Never carries plaintext or key material. */
export class E2EError extends ProblemError {
  readonly code: E2EErrorCode;
  /** The device the failure is about, when there is one. */
  readonly device: string | undefined;
  constructor(code: E2EErrorCode, message: string, options?: { device?: string; cause?: unknown }) {
    super("Encryption Failure", 400, message, { cause: options?.cause });
    this.name = "E2EError";
    this.code = code;
    this.device = options?.device;
  }
}

/** What a received message gains when end-to-end encryption is enabled. */
export interface SealedFields {
  /** True when the payload is a sealed envelope (whether or not it opened). */
  sealed: boolean;
  /** The opened body; null when not sealed or refused (the raw payload is never copied here). */
  plaintext: Uint8Array | null;
  /**
   * The sending device: the server's `sender` stamp, confirmed by the envelope (the key that
   * sealed it is the one trusted for this device).
   */
  sender?: string;
  /** True when the sender's key is one the user verified (safety number compared). */
  verified: boolean;
  /** Why a sealed payload was refused, or null. */
  e2eError: E2EError | null;
  /** The conversation the envelope was sealed for. */
  conversation?: Conversation;
  /** The sender's counter; `gap` > 0 when counters were skipped (messages missing or late). */
  counter?: bigint;
  gap?: number;
}

/** A received frame as this module needs it. */
export interface InboundLike {
  kind: string;
  channel: number;
  payload: Uint8Array;
  sender?: string;
}

/** The parts of a Client that this module uses (client/sdk.ts implements them). */
export interface SealingClient {
  readonly deviceId: string;
  /** This device's user id (from the handshake), when known. */
  readonly userId?: string;
  sendRaw(channel: number, payload: Uint8Array): Promise<Record<string, unknown>>;
  serverRequest(op: string, fields: Record<string, unknown>): Promise<Record<string, unknown>>;
  /**
   * The members (and group) the channel was joined with: device ids and, for a conversation of
   * users, `@<user id>` as the server's JOIN ACK named them.
   */
  conversationOf(channel: number): { members: string[]; groupId?: string } | undefined;
}

/** One device from the key directory. */
export interface DirectoryEntry {
  device: string;
  /** The device's user id. */
  user?: string;
  /** The device of the same user that paired it, when one did. */
  pairedBy?: string | null;
  status: string;
  key: Uint8Array;
  keyChangePending: boolean;
  events: { kind: string; at: string; key: string }[];
}

/** Events of {@link E2E.on}. */
export interface E2EEvents {
  /** A device's key differs from the trusted one; sealing to it stops until accepted. */
  "key-changed": {
    device: string;
    oldKey: Uint8Array;
    newKey: Uint8Array;
    /** The old key was verified: warn louder. */
    wasVerified: boolean;
  };
  /** A device's key was pinned on first use. */
  "key-pinned": { device: string; key: Uint8Array };
  /**
   * A user this device knows (a peer, or its own user) has a device not seen before: a key
   * change of that user. The device's key is pinned and sealed to from now on; show it, so a
   * device the user did not add is noticed.
   */
  "device-added": {
    user: string;
    /** The user's handle, when a user lookup named it. */
    handle?: string;
    device: string;
    key: Uint8Array;
    /** The device of that user that paired it, when the directory says. */
    pairedBy: string | null;
    /** True for a new device of this device's own user. */
    own: boolean;
  };
}

/** Options of end-to-end encryption. */
export interface E2EOptions {
  /** Pins, counters and replay windows (default: a new store kept in memory only). */
  trust?: TrustStore;
  /** How long a directory answer is reused before asking again (default 30 000 ms). */
  directoryTtlMs?: number;
  /** Most messages held per device while its new key waits to be accepted (default 64). */
  maxHeldPerDevice?: number;
  backend?: CryptoBackend;
}

/** What sendSealed resolves with: the server's ACK plus what was sealed. */
export interface SealedAck {
  ack: number;
  [key: string]: unknown;
  counter: bigint;
  recipients: string[];
  /**
   * Member devices left out: revoked (or, in a group, pending, unknown or of another domain —
   * federated keys are not looked up yet).
   */
  skipped: string[];
  conversation: Conversation;
}

const MAGIC = new Uint8Array(ENVELOPE_MAGIC);

function isEnvelope(payload: Uint8Array): boolean {
  return payload.length >= MAGIC.length && MAGIC.every((b, i) => payload[i] === b);
}

/** The refusal for a device without a usable key: unknown, of another domain, or not active. */
function unusable(device: string, entry: DirectoryEntry | null): E2EError {
  const why = entry
    ? `${device} is ${entry.status}, not active`
    : device.includes("@")
    ? `no key for ${device}: keys of other domains are not looked up yet`
    : `the key directory does not know ${device}`;
  return new E2EError("unknown-key", why, { device });
}

/** The engine behind `client.sendSealed` and the sealed fields of received messages. */
export class E2E {
  readonly trust: TrustStore;
  readonly #client: SealingClient;
  #keypair: Keypair;
  #key: DhKey;
  readonly #backend: CryptoBackend;
  readonly #ttl: number;
  readonly #maxHeld: number;
  #directory = new Map<string, { entry: DirectoryEntry; at: number }>();
  #held = new Map<string, { message: InboundLike }[]>();
  /** User id → handle, from user lookups (for "device-added"). */
  #handles = new Map<string, string>();
  #listeners = new Map<keyof E2EEvents, Set<(v: never) => void>>();

  constructor(client: SealingClient, keypair: Keypair, options: E2EOptions = {}) {
    this.#client = client;
    this.#keypair = keypair;
    this.#backend = options.backend ?? defaultBackend;
    this.#key = importStaticKey(keypair, this.#backend);
    this.trust = options.trust ?? new TrustStore();
    this.#ttl = options.directoryTtlMs ?? 30_000;
    this.#maxHeld = options.maxHeldPerDevice ?? 64;
  }

  /** Seals and opens with `keypair` from now on (after the device rotated its key). */
  useKey(keypair: Keypair): void {
    this.#keypair = keypair;
    this.#key = importStaticKey(keypair, this.#backend);
  }

  /** Subscribes to an event; returns the unsubscribe function. */
  on<E extends keyof E2EEvents>(event: E, listener: (value: E2EEvents[E]) => void): () => void {
    let set = this.#listeners.get(event);
    if (!set) this.#listeners.set(event, set = new Set());
    set.add(listener as (v: never) => void);
    return () => set.delete(listener as (v: never) => void);
  }

  #emit<E extends keyof E2EEvents>(event: E, value: E2EEvents[E]): void {
    for (const l of this.#listeners.get(event) ?? []) {
      try {
        (l as (v: E2EEvents[E]) => void)(value);
      } catch (error) {
        console.error(`commucat e2e: "${event}" listener threw:`, error);
      }
    }
  }

  // -------------------------------------------------------------------------------------
  // Directory

  /**
   * Looks devices up in the server's key directory (cached for `directoryTtlMs`; `fresh`
   * asks again). A device the directory does not know, or of another domain, maps to null.
   */
  async lookup(devices: string[], fresh = false): Promise<Map<string, DirectoryEntry | null>> {
    const now = Date.now();
    const out = new Map<string, DirectoryEntry | null>();
    const missing: string[] = [];
    for (const d of new Set(devices)) {
      const c = this.#directory.get(d);
      if (!fresh && c && now - c.at < this.#ttl) out.set(d, c.entry);
      else missing.push(d);
    }
    for (let i = 0; i < missing.length; i += 64) {
      const batch = missing.slice(i, i + 64);
      const answer = await this.#client.serverRequest("keys", { devices: batch });
      for (const d of batch) out.set(d, null); // unknown now; not cached (it may register)
      this.#absorb(answer, out, now);
    }
    return out;
  }

  /** Drops the cached directory entry of `device`: the next use asks the server again. */
  forget(device: string): void {
    this.#directory.delete(device);
  }

  /** The members of group `groupId` with their directory entries (always asks the server). */
  async lookupGroup(groupId: string): Promise<Map<string, DirectoryEntry | null>> {
    const answer = await this.#client.serverRequest("keys", { group: groupId });
    const out = new Map<string, DirectoryEntry | null>();
    this.#absorb(answer, out, Date.now());
    // Members without a key here: of another domain, or gone.
    for (const list of [answer.remote, answer.not_found]) {
      if (!Array.isArray(list)) continue;
      for (const d of list) if (typeof d === "string" && !out.has(d)) out.set(d, null);
    }
    return out;
  }

  /**
   * The active devices of users (`@<user id>` or `@handle`) with their directory entries, and
   * each user's device list (always asks the server).
   */
  async lookupUsers(
    users: string[],
    devices: string[] = [],
  ): Promise<{ entries: Map<string, DirectoryEntry | null>; users: Map<string, string[]> }> {
    const answer = await this.#client.serverRequest("keys", { users, devices });
    const entries = new Map<string, DirectoryEntry | null>();
    for (const d of devices) entries.set(d, null);
    this.#absorb(answer, entries, Date.now());
    const byUser = new Map<string, string[]>();
    for (const raw of Array.isArray(answer.users) ? answer.users : []) {
      const u = raw as Record<string, unknown>;
      if (typeof u.user !== "string" || !Array.isArray(u.devices)) continue;
      byUser.set(u.user, u.devices.filter((d): d is string => typeof d === "string"));
      if (typeof u.handle === "string") this.#handles.set(u.user, u.handle);
    }
    return { entries, users: byUser };
  }

  #absorb(answer: Record<string, unknown>, out: Map<string, DirectoryEntry | null>, now: number) {
    const list = Array.isArray(answer.devices) ? answer.devices : [];
    for (const raw of list) {
      const d = raw as Record<string, unknown>;
      if (typeof d.device !== "string" || !isHex(d.public_key, 32)) continue;
      const entry: DirectoryEntry = {
        device: d.device,
        ...(typeof d.user === "string" ? { user: d.user } : {}),
        pairedBy: typeof d.paired_by === "string" ? d.paired_by : null,
        status: typeof d.status === "string" ? d.status : "unknown",
        key: hexToBytes(d.public_key as string, 32),
        keyChangePending: d.key_change_pending === true,
        events: Array.isArray(d.events)
          ? d.events.map((e: Record<string, unknown>) => ({
            kind: String(e.kind),
            at: String(e.at),
            key: String(e.public_key ?? ""),
          }))
          : [],
      };
      out.set(entry.device, entry);
      this.#directory.set(entry.device, { entry, at: now });
    }
  }

  // -------------------------------------------------------------------------------------
  // Trust

  #observe(device: string, key: Uint8Array, entry?: DirectoryEntry | null): Observation {
    const before = this.trust.get(device);
    const user = entry?.user;
    // A user is known when one of its devices was pinned before (or it is this device's own).
    // A new device of a user whose devices were pinned before; of this device's own user, one
    // registered after this device (its older siblings are not news to it).
    const own = user !== undefined && user === this.#client.userId;
    const since = (e: DirectoryEntry | null | undefined) =>
      (e?.events.find((x) => x.kind === "registered") ?? e?.events[0])?.at;
    const mine = since(this.#directory.get(this.#client.deviceId)?.entry);
    const knownUser = user !== undefined &&
      (own
        ? mine !== undefined && (since(entry) ?? "") > mine
        : this.trust.devicesOfUser(user).length > 0);
    const seen = this.trust.observe(device, key, user);
    if (seen.kind === "pinned") {
      this.#emit("key-pinned", { device, key: new Uint8Array(key) });
      if (knownUser) {
        const handle = this.#handles.get(user!);
        this.#emit("device-added", {
          user: user!,
          ...(handle === undefined ? {} : { handle }),
          device,
          key: new Uint8Array(key),
          pairedBy: entry?.pairedBy ?? null,
          own,
        });
      }
    } else if (seen.kind === "changed" && seen.fresh) {
      this.#emit("key-changed", {
        device,
        oldKey: hexToBytes(before!.key, 32),
        newKey: new Uint8Array(key),
        wasVerified: before!.verified,
      });
    }
    return seen;
  }

  /**
   * Accepts the new key of `device` (the user compared or decided to trust it): sealing to it
   * resumes and the messages held because of the change are returned, opened.
   */
  async acceptKey(device: string): Promise<(InboundLike & SealedFields)[]> {
    this.trust.accept(device);
    await this.trust.save();
    const held = this.#held.get(device) ?? [];
    this.#held.delete(device);
    const out: (InboundLike & SealedFields)[] = [];
    for (const h of held) out.push({ ...h.message, ...(await this.open(h.message)) });
    return out;
  }

  /** Marks the trusted key of `device` verified (after comparing safety numbers) or not. */
  async setVerified(device: string, verified = true): Promise<PeerRecord> {
    const r = this.trust.setVerified(device, verified);
    await this.trust.save();
    return r;
  }

  /**
   * The safety number of this device and `device` (its trusted key; looked up and pinned on
   * first use). Both sides compute the same digits.
   */
  async safetyNumber(device: string): Promise<string> {
    let key = this.trust.trustedKey(device);
    if (!key) {
      await this.#trustedKeyFor(device);
      key = this.trust.trustedKey(device);
    }
    if (!key) throw new E2EError("unknown-key", `no key is known for ${device}`, { device });
    return safetyNumber(
      { deviceId: this.#client.deviceId, key: this.#keypair.publicKey },
      { deviceId: device, key },
    );
  }

  /** Messages held for `device` while its new key waits to be accepted. */
  heldCount(device: string): number {
    return this.#held.get(device)?.length ?? 0;
  }

  /**
   * The key to seal to / expect from `device`: pinned on first use from the directory. Throws
   * E2EError "unknown-key" or "key-changed".
   */
  async #trustedKeyFor(device: string, fresh = false): Promise<Uint8Array> {
    // This device's own entry too: whether a sibling is newer than it (see "device-added").
    const entry = (await this.lookup([device, this.#client.deviceId], fresh)).get(device) ?? null;
    if (entry?.status !== "active") throw unusable(device, entry);
    const key = this.#checkedKey(device, entry, "accept the new key before sealing to it");
    await this.trust.save();
    return key;
  }

  // -------------------------------------------------------------------------------------
  // Sealing

  /**
   * Seals `body` for every other member device of the conversation joined on `channel` and
   * sends it as one MSG: the listed devices, every active device of each member user
   * (`@<user id>`), this device's own other devices among them (sync copies). Throws E2EError:
   * "not-joined", "unknown-key" (a member without a usable key), "key-changed" (a member's key
   * changed and was not accepted), "too-large". Nothing is sent when it throws.
   */
  async sendSealed(channel: number, body: Uint8Array | string): Promise<SealedAck> {
    const bytes = typeof body === "string" ? new TextEncoder().encode(body) : body;
    const binding = this.#client.conversationOf(channel);
    if (!binding) {
      throw new E2EError("not-joined", `channel ${channel} is not joined: join it first`);
    }
    const me = this.#client.deviceId;
    let conversation: Conversation;
    const recipients: { deviceId: string; publicKey: Uint8Array }[] = [];
    const skipped: string[] = [];
    const add = (device: string, entry: DirectoryEntry) =>
      recipients.push({
        deviceId: device,
        publicKey: this.#checkedKey(device, entry, "nothing was sent: accept the new key first"),
      });
    if (binding.groupId !== undefined) {
      conversation = { kind: "group", groupId: binding.groupId };
      const roster = await this.lookupGroup(binding.groupId);
      for (const [device, entry] of roster) {
        if (device === me) continue;
        if (entry?.status !== "active") skipped.push(device);
        else add(device, entry);
      }
    } else {
      conversation = { kind: "members", members: [...new Set([...binding.members, me])] };
      const members = [...new Set(binding.members)];
      const users = members.filter((m) => m.startsWith(USER_PREFIX));
      const others = members.filter((m) => !m.startsWith(USER_PREFIX) && m !== me);
      let entries: Map<string, DirectoryEntry | null>;
      const userDevices: string[] = [];
      if (users.length > 0) {
        // A conversation of users: the JOIN made this device a member as its user, so the
        // envelope names the user, not the device (the server's member set).
        const own = this.#client.userId;
        if (own !== undefined && users.includes(USER_PREFIX + own)) {
          conversation = { kind: "members", members };
        }
        const found = await this.lookupUsers(users, others);
        entries = found.entries;
        for (const list of found.users.values()) userDevices.push(...list);
      } else {
        entries = await this.lookup(others);
      }
      for (const device of others) {
        const entry = entries.get(device) ?? null;
        if (entry && entry.status !== "active" && entry.status !== "pending") {
          skipped.push(device);
          continue;
        }
        if (entry?.status !== "active") throw unusable(device, entry);
        add(device, entry);
      }
      for (const device of new Set(userDevices)) {
        if (device === me || others.includes(device)) continue;
        const entry = entries.get(device) ?? null;
        if (entry?.status !== "active") skipped.push(device);
        else add(device, entry);
      }
    }
    await this.trust.save();
    if (recipients.length === 0) {
      throw new E2EError(
        "unknown-key",
        `nobody to seal for in ${describeConversation(conversation)}`,
      );
    }
    const counter = this.trust.nextCounter(conversationKey(conversation));
    await this.trust.save(); // never reuse a counter, even after a crash
    let envelope: Uint8Array;
    try {
      envelope = sealEnvelope({
        sender: me,
        senderKey: this.#key,
        conversation,
        counter,
        recipients,
        body: bytes,
        backend: this.#backend,
      });
    } catch (err) {
      if (err instanceof EnvelopeError) throw new E2EError(err.code, err.message, { cause: err });
      throw err;
    }
    const ack = await this.#client.sendRaw(channel, envelope);
    return {
      ...ack,
      ack: ack.ack as number,
      counter,
      recipients: recipients.map((r) => r.deviceId),
      skipped,
      conversation,
    };
  }

  /**
   * The trusted key for a directory entry: pins new devices (announcing a new device of a known
   * user), refuses changed keys with E2EError "key-changed" (`advice` ends its message).
   */
  #checkedKey(device: string, entry: DirectoryEntry, advice: string): Uint8Array {
    let seen: Observation;
    try {
      seen = this.#observe(device, entry.key, entry);
    } catch (err) {
      if (err instanceof EnvelopeError) {
        throw new E2EError(err.code, err.message, { device, cause: err });
      }
      throw err;
    }
    if (seen.kind === "changed") {
      const verified = seen.record.pendingWasVerified ? " (it was verified)" : "";
      throw new E2EError("key-changed", `the key of ${device} changed${verified}; ${advice}`, {
        device,
      });
    }
    return entry.key;
  }

  // -------------------------------------------------------------------------------------
  // Opening

  /**
   * The sealed fields of a received frame. Never throws for bad input: a refusal is
   * `e2eError` with `plaintext: null`. A payload that is not an envelope is `sealed: false`.
   */
  async open(message: InboundLike): Promise<SealedFields> {
    const base: SealedFields = {
      sealed: false,
      plaintext: null,
      verified: false,
      e2eError: null,
    };
    if (message.sender !== undefined) base.sender = message.sender;
    if (message.kind !== "MSG" || !isEnvelope(message.payload)) return base;
    base.sealed = true;
    try {
      return await this.#open(message, base);
    } catch (err) {
      base.e2eError = err instanceof E2EError
        ? err
        : err instanceof EnvelopeError
        ? new E2EError(err.code, err.message, { cause: err })
        : new E2EError("malformed", `envelope could not be opened: ${(err as Error)?.message}`, {
          cause: err,
        });
      return base;
    }
  }

  async #open(message: InboundLike, base: SealedFields): Promise<SealedFields> {
    const env: ParsedEnvelope = parseEnvelope(message.payload);
    const sender = env.sender;
    const binding = this.#client.conversationOf(message.channel);
    const local: Conversation | undefined = binding === undefined
      ? undefined
      : binding.groupId !== undefined
      ? { kind: "group", groupId: binding.groupId }
      : binding.members.some((m) => m.startsWith(USER_PREFIX))
      ? { kind: "members", members: binding.members }
      : { kind: "members", members: [...new Set([...binding.members, this.#client.deviceId])] };
    base.conversation = env.conversation;
    // A member set of users: the sender is a member through its user (the directory's).
    const ofUsers = env.conversation.kind === "members" &&
      env.conversation.members.some((m) => m.startsWith(USER_PREFIX));
    const senderUser = ofUsers
      ? this.trust.get(sender)?.user ?? (await this.lookup([sender])).get(sender)?.user
      : undefined;
    const opened = openEnvelope(env, {
      recipient: this.#client.deviceId,
      recipientKey: this.#key,
      serverSender: message.sender,
      conversation: local,
      recipientUser: this.#client.userId,
      senderUser,
      backend: this.#backend,
    });
    base.counter = env.counter;
    let pinned = this.trust.get(sender);
    if (!pinned) {
      await this.#trustedKeyFor(sender);
      pinned = this.trust.get(sender)!;
    }
    const proven = bytesToHex(opened.senderKey);
    if (proven !== pinned.key) {
      // Either the device's key changed (the directory says so) or someone else sealed it.
      if (pinned.pendingKey !== proven) {
        const entry = (await this.lookup([sender], true)).get(sender) ?? null;
        if (!entry || bytesToHex(entry.key) !== proven) {
          opened.plaintext.fill(0);
          throw new E2EError(
            "tampered",
            `envelope was not sealed with a key of ${sender} (forged sender)`,
            { device: sender },
          );
        }
        this.#observe(sender, entry.key, entry);
        await this.trust.save();
      }
      opened.plaintext.fill(0);
      this.#hold(sender, message);
      throw new E2EError(
        "key-changed",
        `${sender} sealed this with a new key; it is held until the key is accepted`,
        { device: sender },
      );
    }
    const window = this.trust.window(sender, proven, conversationKey(env.conversation));
    base.gap = window.check(env.counter);
    window.accept(env.counter);
    await this.trust.save();
    base.sender = sender;
    base.plaintext = opened.plaintext;
    base.verified = pinned.verified;
    return base;
  }

  #hold(device: string, message: InboundLike): void {
    let list = this.#held.get(device);
    if (!list) this.#held.set(device, list = []);
    if (list.length >= this.#maxHeld) list.shift();
    list.push({
      message: {
        kind: message.kind,
        channel: message.channel,
        payload: message.payload.slice(),
        sender: message.sender,
      },
    });
  }
}
