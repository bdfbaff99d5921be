/**
 * The devices this node recently admitted with their key: lets the common reconnect (a known,
 * active device presenting its registered key) skip the device lookup before the session is
 * attached. It is a hint and never an admission: every session is admitted only by the session
 * row's statement (`sessions.open`), which checks under the device row's lock that the device is
 * active with the proven key. A stale entry (a device revoked or rotated elsewhere, its bus event
 * lost while Redis was down) therefore admits nothing: the statement refuses and the handshake
 * resolves the device again without the cache to name the refusal. Entries are dropped on the
 * operator events (device revoked or approved, on every node through the bus), when the
 * statement refuses, and after {@link DEVICE_CACHE_TTL_MS} in any case.
 *
 * @module
 */
import type { UserInfo } from "../../protocol/control.ts";
import { bytesEqual } from "../../protocol/crypto.ts";

/** How long an entry is used after the device was last resolved from storage. */
export const DEVICE_CACHE_TTL_MS = 30_000;
/** Most entries kept (the oldest is dropped first). */
export const DEVICE_CACHE_MAX = 10_000;

interface Entry {
  key: Uint8Array;
  user: UserInfo;
  until: number;
}

export class DeviceCache {
  readonly #entries = new Map<string, Entry>();

  constructor(
    readonly ttlMs: number = DEVICE_CACHE_TTL_MS,
    readonly max: number = DEVICE_CACHE_MAX,
  ) {}

  /** The user of `deviceId` when it was last seen active with `key` (and not too long ago). */
  get(deviceId: string, key: Uint8Array): UserInfo | null {
    const entry = this.#entries.get(deviceId);
    if (entry === undefined) return null;
    if (entry.until <= Date.now() || !bytesEqual(entry.key, key)) {
      this.#entries.delete(deviceId);
      return null;
    }
    return entry.user;
  }

  /** `deviceId` was just found active with `key` in storage. */
  put(deviceId: string, key: Uint8Array, user: UserInfo): void {
    this.#entries.delete(deviceId);
    if (this.#entries.size >= this.max) {
      const oldest = this.#entries.keys().next();
      if (!oldest.done) this.#entries.delete(oldest.value);
    }
    this.#entries.set(deviceId, { key: key.slice(), user, until: Date.now() + this.ttlMs });
  }

  /** Forgets `deviceId` (its status, key or user may have changed). */
  forget(deviceId: string): void {
    this.#entries.delete(deviceId);
  }

  /** Forgets every device. */
  clear(): void {
    this.#entries.clear();
  }

  get size(): number {
    return this.#entries.size;
  }
}
