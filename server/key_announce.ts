/**
 * Announcing the server key catalog to connected clients (docs/PROTOCOL.md "Server key
 * catalog"): an ACK on channel 0 without an `ack` sequence, `{"key_catalog": <signed catalog>}`,
 * sent
 * - right after the handshake, when a rotation is under way for that client: the catalog lists a
 *   next key, or the client's handshake was made for a key other than the current one;
 * - to every open session of the node when the catalog changes while it runs (the previous key
 *   leaves its grace window at `noise_previous_not_after`), and on {@link KeyAnnouncer.announce}.
 *
 * The catalog is signed once per key set (not per connection). Nothing is queued: a client that
 * is offline gets the catalog on its next connection, when it still matters.
 *
 * @module
 */
import type { KeyCatalog, KeyStatus } from "../protocol/key_catalog.ts";
import { FrameType } from "../protocol/frame.ts";
import type { NodeContext } from "./context.ts";
import { acceptedKeys, keyCatalog } from "./noise_keys.ts";
import type { Connection } from "./session/connection.ts";

/** The field of the announcement. */
export const ANNOUNCE_FIELD = "key_catalog";
/** Longest a timer may wait (setTimeout's limit, about 24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class KeyAnnouncer {
  #cached: { keySet: string; catalog: KeyCatalog } | null = null;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #announced = "";

  constructor(
    private readonly ctx: NodeContext,
    private readonly sessions: () => Iterable<Connection>,
  ) {}

  /** The key set as a comparable string (keys, statuses, grace ends). */
  #keySet(now: Date): string {
    return acceptedKeys(this.ctx.config, now)
      .map((k) => `${k.status}:${k.publicKey.join(",")}:${k.notAfter?.getTime() ?? ""}`)
      .join(";");
  }

  /** The signed catalog now (re-signed only when the key set changed). */
  catalog(now = new Date()): KeyCatalog {
    const keySet = this.#keySet(now);
    if (this.#cached?.keySet !== keySet) {
      this.#cached = { keySet, catalog: keyCatalog(this.ctx.config, now) };
    }
    return this.#cached.catalog;
  }

  /** The announcement for a session that completed its handshake to the key of `status`. */
  forSession(status: KeyStatus, now = new Date()): { key_catalog: KeyCatalog } | null {
    const catalog = this.catalog(now);
    const rotating = status !== "current" || catalog.body.keys.some((k) => k.status === "next");
    return rotating ? { [ANNOUNCE_FIELD]: catalog } : null;
  }

  /** Sends the catalog to every open session of this node; returns how many were told. */
  announce(now = new Date()): number {
    const value = { [ANNOUNCE_FIELD]: this.catalog(now) };
    let told = 0;
    for (const conn of this.sessions()) {
      if (conn.state !== "open") continue;
      conn.sendControl(FrameType.Ack, 0, value);
      told++;
    }
    this.#announced = this.#cached!.keySet;
    this.ctx.log.info("key catalog announced", {
      sessions: told,
      keys: this.#cached!.catalog.body.keys.length,
    });
    return told;
  }

  /** Watches for the catalog's next change (a grace window ending) and announces it. */
  start(): void {
    this.#announced = this.#keySet(new Date());
    this.#schedule();
  }

  #schedule(): void {
    clearTimeout(this.#timer);
    const now = Date.now();
    const ends = acceptedKeys(this.ctx.config, new Date(now))
      .map((k) => k.notAfter?.getTime())
      .filter((t): t is number => t !== undefined && t > now);
    if (ends.length === 0) return;
    const wait = Math.min(Math.min(...ends) - now + 1, MAX_TIMER_MS);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      const keySet = this.#keySet(new Date());
      if (keySet !== this.#announced) this.announce();
      this.#schedule();
    }, wait);
  }

  stop(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}
