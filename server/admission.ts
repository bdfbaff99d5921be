/**
 * Admission of new client connections (docs/OPERATIONS.md "Bounded memory"): caps on
 * connections still in their handshake, per client address and in total, and a per-node memory
 * budget above which new connections are refused with a clear error while established ones carry
 * on. Before its handshake completes a connection may send only HELLO and AUTH, each frame at most
 * {@link HANDSHAKE_FRAME_LIMIT} octets and {@link HANDSHAKE_BYTE_BUDGET} octets in all.
 *
 * @module
 */
import { MAX_CONTROL_JSON_LEN } from "../protocol/frame.ts";
import { ProtocolError } from "../protocol/errors.ts";
import type { Config } from "./config/mod.ts";

/** Largest frame body accepted before the handshake completed: a control payload plus header. */
export const HANDSHAKE_FRAME_LIMIT = MAX_CONTROL_JSON_LEN + 32;
/** Octets a connection may send before its handshake completed (HELLO, AUTH and slack). */
export const HANDSHAKE_BYTE_BUDGET = 2 * HANDSHAKE_FRAME_LIMIT + 4096;
/** How often the resident set size is read again (it is read on admission, not by a timer). */
const RSS_EVERY_MS = 1000;

/** Titles of admission refusals. */
export const AdmissionTitles = {
  tooMany: "Too Many Connections",
  overloaded: "Server Overloaded",
  handshakeTooLarge: "Handshake Too Large",
} as const;

/** The host part of `host:port` (IPv6 without brackets): what per-address limits key on. */
export function hostOf(remoteAddr: string): string {
  const v6 = /^\[([^\]]+)\](?::\d+)?$/.exec(remoteAddr);
  if (v6) return v6[1].toLowerCase();
  const colon = remoteAddr.lastIndexOf(":");
  return colon > 0 && remoteAddr.indexOf(":") === colon ? remoteAddr.slice(0, colon) : remoteAddr;
}

/** Counts a node's unauthenticated connections and watches its memory. */
export class Admission {
  readonly #perAddress = new Map<string, number>();
  #total = 0;
  #rss = 0;
  #rssAt = 0;

  constructor(
    private readonly limits: Config["limits"],
    private readonly readRss: () => number = () => Deno.memoryUsage().rss,
  ) {}

  /** Connections in their handshake right now (all addresses). */
  get unauthenticated(): number {
    return this.#total;
  }

  /** The last resident set size read (bytes). */
  get rss(): number {
    return this.#rss;
  }

  /**
   * Admits a new connection from `host` into the handshake, or returns the fatal ERROR that
   * refuses it. An admitted connection must call the returned release once (handshake done or
   * connection closed).
   */
  admit(host: string): { release: () => void } | { refusal: ProtocolError; reason: string } {
    const now = Date.now();
    if (now - this.#rssAt >= RSS_EVERY_MS) {
      this.#rssAt = now;
      try {
        this.#rss = this.readRss();
      } catch {
        // Not readable here: the budget cannot be checked, the caps still hold.
      }
    }
    if (this.#rss > this.limits.memoryBudget) {
      return {
        reason: "memory",
        refusal: refuse(
          AdmissionTitles.overloaded,
          503,
          `this node uses ${mib(this.#rss)} MiB, above its memory budget of ` +
            `${mib(this.limits.memoryBudget)} MiB ([limits] memory_budget): new connections ` +
            "are refused until it falls; try again later or another node",
        ),
      };
    }
    if (this.#total >= this.limits.unauthenticatedTotal) {
      return {
        reason: "unauthenticated_total",
        refusal: refuse(
          AdmissionTitles.tooMany,
          503,
          `this node already holds ${this.#total} connections in their handshake ` +
            "([limits] unauthenticated_total); try again later",
        ),
      };
    }
    const count = this.#perAddress.get(host) ?? 0;
    if (count >= this.limits.unauthenticatedPerAddress) {
      return {
        reason: "unauthenticated_per_address",
        refusal: refuse(
          AdmissionTitles.tooMany,
          429,
          `${count} connections from ${host} are already in their handshake ` +
            "([limits] unauthenticated_per_address); finish those first",
        ),
      };
    }
    this.#perAddress.set(host, count + 1);
    this.#total++;
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.#total--;
        const left = (this.#perAddress.get(host) ?? 1) - 1;
        if (left <= 0) this.#perAddress.delete(host);
        else this.#perAddress.set(host, left);
      },
    };
  }
}

/** A fatal refusal that tells the client when to try again. */
function refuse(title: string, status: number, detail: string): ProtocolError {
  return new ProtocolError(title, status, detail, { fatal: true, retryAfter: 1 });
}

function mib(bytes: number): number {
  return Math.round(bytes / (1024 * 1024));
}
