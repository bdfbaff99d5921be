/**
 * The trust store of end-to-end encryption: which static key this device accepts for each peer
 * device (pinned on first use), which of them the user verified by comparing safety numbers,
 * new keys waiting to be accepted, this device's envelope counters and the replay windows of
 * what it received.
 *
 * Pure and platform-neutral: it serialises to JSON and hands the text to a `persist` callback
 * (client/keystore.ts `openTrustStore` writes it to a file next to the device key).
 *
 * @module
 */
import { blake2s } from "@noble/hashes/blake2.js";
import { assertValidPublicKey, ReplayWindow } from "../protocol/envelope.ts";
import { bytesToHex, hexToBytes, isHex } from "../protocol/hex.ts";
import { concatBytes } from "../protocol/bytes.ts";

/** Most peer devices a store keeps (a refusal beyond, never a silent eviction of a pin). */
export const MAX_PEERS = 10_000;
/** Most conversations this device keeps a send counter for. */
export const MAX_COUNTERS = 100_000;
/**
 * Most replay windows kept (one per sender and conversation). Beyond it the least recently
 * used is dropped: an envelope that old from that sender would then be accepted once more.
 */
export const MAX_WINDOWS = 4096;
/** Key history entries kept per peer. */
export const MAX_HISTORY = 16;

/** One peer device as the store knows it. */
export interface PeerRecord {
  device: string;
  /** The user the key directory said the device belongs to, when known. */
  user?: string;
  /** The accepted static public key (hex). */
  key: string;
  /** When that key was accepted (pinned on first use, or accepted after a change). */
  since: string;
  /** True once the user compared safety numbers for this key and confirmed them. */
  verified: boolean;
  /** A different key seen for the device and not accepted yet (hex), or null. */
  pendingKey: string | null;
  /** Whether the changed key replaced a verified one (the louder warning). */
  pendingWasVerified: boolean;
  /** Earlier accepted keys, newest last. */
  history: { key: string; since: string; until: string; verified: boolean }[];
}

/** What {@link TrustStore.observe} concluded about a key. */
export type Observation =
  | { kind: "pinned"; record: PeerRecord } // first use: pinned now
  | { kind: "same"; record: PeerRecord } // the accepted key
  | { kind: "changed"; record: PeerRecord; fresh: boolean }; // another key: not used until accepted

/** Trust decisions; JSON round-trips through {@link TrustStore.toJSON} / {@link TrustStore.fromJSON}. */
export class TrustStore {
  #peers = new Map<string, PeerRecord>();
  #counters = new Map<string, bigint>();
  #windows = new Map<string, ReplayWindow>();
  #persist: ((text: string) => Promise<void>) | null;
  #saving: Promise<void> = Promise.resolve();
  #now: () => Date;

  constructor(
    options: { persist?: (text: string) => Promise<void>; now?: () => Date } = {},
  ) {
    this.#persist = options.persist ?? null;
    this.#now = options.now ?? (() => new Date());
  }

  /** The record of `device`, or undefined when it was never seen. */
  get(device: string): PeerRecord | undefined {
    const r = this.#peers.get(device);
    return r ? structuredClone(r) : undefined;
  }

  /** Every known peer device id. */
  devices(): string[] {
    return [...this.#peers.keys()];
  }

  /** The known devices of `user` (as the key directory named their user). */
  devicesOfUser(user: string): string[] {
    return [...this.#peers.values()].filter((r) => r.user === user).map((r) => r.device);
  }

  /**
   * Compares `key` with what is trusted for `device`: pins it when the device is new, reports
   * "same" for the accepted key, and records a different key as pending ("changed"; `fresh`
   * when this is the first time that key was seen). Throws EnvelopeError("bad-key") for a key
   * that is not a valid X25519 point, and RangeError when the store is full.
   */
  observe(device: string, key: Uint8Array, user?: string): Observation {
    const hex = bytesToHex(key);
    const r = this.#peers.get(device);
    if (r && user !== undefined && r.user === undefined) r.user = user;
    if (!r) {
      assertValidPublicKey(key, `key of ${device}`);
      if (this.#peers.size >= MAX_PEERS) {
        throw new RangeError(`trust store holds ${MAX_PEERS} devices already`);
      }
      const record: PeerRecord = {
        device,
        ...(user === undefined ? {} : { user }),
        key: hex,
        since: this.#now().toISOString(),
        verified: false,
        pendingKey: null,
        pendingWasVerified: false,
        history: [],
      };
      this.#peers.set(device, record);
      return { kind: "pinned", record: structuredClone(record) };
    }
    if (r.key === hex) return { kind: "same", record: structuredClone(r) };
    assertValidPublicKey(key, `key of ${device}`);
    const fresh = r.pendingKey !== hex;
    r.pendingKey = hex;
    r.pendingWasVerified = r.verified;
    return { kind: "changed", record: structuredClone(r), fresh };
  }

  /**
   * Accepts the pending key of `device` (the user's `/trust`): it becomes the trusted key, not
   * verified. Returns the record; throws when nothing is pending.
   */
  accept(device: string): PeerRecord {
    const r = this.#peers.get(device);
    if (!r || r.pendingKey === null) {
      throw new RangeError(`no new key of ${device} waits to be accepted`);
    }
    const now = this.#now().toISOString();
    r.history.push({ key: r.key, since: r.since, until: now, verified: r.verified });
    if (r.history.length > MAX_HISTORY) r.history.splice(0, r.history.length - MAX_HISTORY);
    r.key = r.pendingKey;
    r.since = now;
    r.verified = false;
    r.pendingKey = null;
    r.pendingWasVerified = false;
    return structuredClone(r);
  }

  /** Marks the accepted key of `device` as verified (or not). Throws for an unknown device. */
  setVerified(device: string, verified: boolean): PeerRecord {
    const r = this.#peers.get(device);
    if (!r) throw new RangeError(`no key of ${device} is known`);
    r.verified = verified;
    return structuredClone(r);
  }

  /** The accepted key of `device`, or null. */
  trustedKey(device: string): Uint8Array | null {
    const r = this.#peers.get(device);
    return r ? hexToBytes(r.key, 32) : null;
  }

  /**
   * Takes this device's next envelope counter in a conversation. The first one is the current
   * time in milliseconds × 1024, then each message adds 1: a device that lost its store (and
   * so its counters) still continues above what its peers accepted, instead of being refused
   * as a replay.
   */
  nextCounter(conversation: string): bigint {
    const stored = this.#counters.get(conversation);
    const floor = BigInt(this.#now().getTime()) << 10n;
    const next = stored === undefined ? floor : stored + 1n;
    if (!this.#counters.has(conversation) && this.#counters.size >= MAX_COUNTERS) {
      throw new RangeError(`trust store keeps counters for ${MAX_COUNTERS} conversations already`);
    }
    this.#counters.set(conversation, next);
    return next;
  }

  /**
   * The replay window for `sender`'s key `key` (hex) in a conversation (created empty; the
   * most recently used are kept). A new key starts a new window.
   */
  window(sender: string, key: string, conversation: string): ReplayWindow {
    const id = `${sender}\n${key}\n${conversation}`;
    let w = this.#windows.get(id);
    if (w) {
      this.#windows.delete(id);
    } else {
      w = new ReplayWindow();
      if (this.#windows.size >= MAX_WINDOWS) {
        this.#windows.delete(this.#windows.keys().next().value!);
      }
    }
    this.#windows.set(id, w);
    return w;
  }

  /** Writes the store through `persist` (one write at a time, in call order). */
  save(): Promise<void> {
    const persist = this.#persist;
    if (!persist) return Promise.resolve();
    const text = this.toJSON();
    const next = this.#saving.then(() => persist(text));
    this.#saving = next.catch(() => {});
    return next;
  }

  /** The store as JSON text. */
  toJSON(): string {
    return JSON.stringify({
      version: 1,
      peers: [...this.#peers.values()],
      counters: Object.fromEntries([...this.#counters].map(([k, v]) => [k, v.toString()])),
      windows: [...this.#windows].map(([k, w]) => [k, w.highest.toString(), w.bitmap.toString(16)]),
    });
  }

  /** A store from {@link toJSON}'s text. Throws a TypeError naming the bad part. */
  static fromJSON(
    text: string,
    options: { persist?: (text: string) => Promise<void>; now?: () => Date } = {},
  ): TrustStore {
    const data = JSON.parse(text);
    if (typeof data !== "object" || data === null || data.version !== 1) {
      throw new TypeError("trust store: not a version 1 trust store");
    }
    const store = new TrustStore(options);
    for (const p of data.peers ?? []) {
      if (
        typeof p?.device !== "string" || !isHex(p.key, 32) ||
        (p.pendingKey !== null && !isHex(p.pendingKey, 32))
      ) {
        throw new TypeError("trust store: a peer entry is damaged");
      }
      store.#peers.set(p.device, {
        device: p.device,
        ...(typeof p.user === "string" ? { user: p.user } : {}),
        key: p.key.toLowerCase(),
        since: String(p.since ?? ""),
        verified: p.verified === true,
        pendingKey: p.pendingKey === null ? null : p.pendingKey.toLowerCase(),
        pendingWasVerified: p.pendingWasVerified === true,
        history: Array.isArray(p.history) ? p.history.slice(-MAX_HISTORY) : [],
      });
    }
    for (const [k, v] of Object.entries(data.counters ?? {})) {
      if (typeof v !== "string" || !/^\d+$/.test(v)) {
        throw new TypeError("trust store: a counter is damaged");
      }
      store.#counters.set(k, BigInt(v));
    }
    for (const entry of data.windows ?? []) {
      if (
        !Array.isArray(entry) || typeof entry[0] !== "string" || !/^\d+$/.test(entry[1]) ||
        !/^[0-9a-f]+$/.test(entry[2])
      ) {
        throw new TypeError("trust store: a replay window is damaged");
      }
      store.#windows.set(entry[0], new ReplayWindow(BigInt(entry[1]), BigInt(`0x${entry[2]}`)));
    }
    return store;
  }
}

// ---------------------------------------------------------------------------------------------
// safety numbers

const SAFETY_LABEL = new TextEncoder().encode("commucat-safety-number-v1\0");
const SAFETY_ITERATIONS = 1024;

/** 30 digits for one device: iterated BLAKE2s over its key and id, 6 groups of 5 digits. */
function partyDigits(deviceId: string, key: Uint8Array): string {
  const id = new TextEncoder().encode(deviceId);
  let h = blake2s(concatBytes(SAFETY_LABEL, key, id));
  for (let i = 1; i < SAFETY_ITERATIONS; i++) h = blake2s(concatBytes(h, key));
  let digits = "";
  for (let g = 0; g < 6; g++) {
    let v = 0;
    for (let b = 0; b < 5; b++) v = v * 256 + h[g * 5 + b];
    digits += String(v % 100000).padStart(5, "0");
  }
  return digits;
}

/**
 * The safety number of two devices: 60 digits in 12 groups of 5, the same on both sides
 * (each device's 30 digits, the lower first). Derived from both static public keys and both
 * device ids; a changed key on either side changes it. Compare it out of band.
 */
export function safetyNumber(
  a: { deviceId: string; key: Uint8Array },
  b: { deviceId: string; key: Uint8Array },
): string {
  const parts = [partyDigits(a.deviceId, a.key), partyDigits(b.deviceId, b.key)].sort();
  return (parts[0] + parts[1]).match(/\d{5}/g)!.join(" ");
}
