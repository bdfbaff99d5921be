/**
 * Rate limits (docs/OPERATIONS.md "Limits"): leaky buckets per client address, device or
 * sender→recipient pair, configured by `[limits]`. Shared limits live in the ephemeral store
 * (Redis: one bucket for all nodes; the in-memory store when embedded); when Redis fails, a
 * shared limit falls back to this node's own bucket so a Redis outage neither opens the gates
 * nor refuses everyone. Per-frame limits are local to the node holding the device's connection
 * (a Redis round trip per frame would cost more than the frame).
 *
 * Every refusal is a non-fatal 429 with `retry_after` (whole seconds), counted in
 * `commucat_rate_limited_total{kind}`; the node keeps a short list of who was limited recently.
 *
 * @module
 */
import { ProtocolError } from "../protocol/errors.ts";
import {
  gcra,
  LIMITED_STREAM,
  LIMITED_STREAM_LENGTH,
  type LimitedNote,
} from "../storage/ephemeral/shared.ts";
import type { EphemeralStore, RateRule } from "../storage/types.ts";
import type { Config } from "./config/mod.ts";

/** What a limit counts. */
export type LimitKind =
  /** Handshakes started, per client address. */
  | "handshake"
  /** New users and devices registered, per client address. */
  | "registration"
  /** Frames received, per device (local). */
  | "frames"
  /** Bytes received, per device (local). */
  | "bytes"
  /** Messages from one device to one recipient (key `sender>recipient`). */
  | "message"
  /** JOINs, per device. */
  | "join"
  /** Wrong console tokens, per client address. */
  | "sign_in"
  /** Pairing codes asked for, per user (`user:<id>`) and per client address (`addr:<host>`). */
  | "pairing_code"
  /** Handshakes presenting a pairing code, per client address. */
  | "pairing_attempt";

/** Allowed, or refused with the whole seconds (≥ 1) to wait. */
export type LimitVerdict = { ok: true } | { ok: false; retryAfter: number };

/** Title of every rate-limit refusal. */
export const RATE_LIMITED = "Rate Limited";

const ALLOWED: LimitVerdict = { ok: true };
/** Local buckets kept at most; the oldest are dropped first past it. */
const MAX_LOCAL_BUCKETS = 100_000;
/** Recent refusals kept for the dashboard, and how often one key is recorded. */
const MAX_RECENT = 64;
const RECORD_EVERY_MS = 5_000;

/** What the limiter reports to (metrics, the log, the limited stream). */
export interface LimitHooks {
  /** This node's id: refusals are noted in the limited stream under it (the console's list). */
  nodeId?: string;
  /** Called on every refusal. */
  limited?(kind: LimitKind): void;
  /** Called once when Redis failed and a shared limit fell back to the local bucket. */
  warn?(message: string, fields: Record<string, unknown>): void;
}

/** One refusal, as the dashboard lists them. */
export interface LimitedEntry {
  kind: LimitKind;
  key: string;
  /** Refusals of this key since it was first listed. */
  count: number;
  /** When the last one happened (ms since the epoch). */
  at: number;
  retryAfter: number;
}

/** The bucket of each kind, from `[limits]`. */
export function limitRules(limits: Config["limits"]): Record<LimitKind, RateRule> {
  const per = (count: number, periodMs: number): RateRule => ({
    burst: count,
    intervalMs: periodMs / count,
  });
  return {
    handshake: per(limits.handshakesPerMinute, 60_000),
    registration: per(limits.registrationsPerHour, 3_600_000),
    frames: per(limits.framesPerSecond, 1000),
    bytes: per(limits.bytesPerSecond, 1000),
    message: { burst: limits.messagesBurst, intervalMs: 60_000 / limits.messagesPerMinute },
    join: per(limits.joinsPerMinute, 60_000),
    sign_in: per(limits.signInFailuresPerHour, 3_600_000),
    pairing_code: per(limits.pairingCodesPerHour, 3_600_000),
    pairing_attempt: per(limits.pairingAttemptsPerHour, 3_600_000),
  };
}

/** Whole seconds, at least 1, for a wait in milliseconds. */
function seconds(ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000));
}

/** The rate limits of one node. */
export class Limits {
  readonly rules: Record<LimitKind, RateRule>;
  readonly #local = new Map<string, number>();
  readonly #recent = new Map<string, LimitedEntry>();
  #sharedDown = false;

  constructor(
    private readonly store: EphemeralStore,
    limits: Config["limits"],
    private readonly hooks: LimitHooks = {},
  ) {
    this.rules = limitRules(limits);
  }

  /**
   * Takes `cost` from the shared bucket of (`kind`, `key`). When the ephemeral store fails,
   * this node's own bucket decides instead (a warning is logged once per outage).
   */
  async consume(kind: LimitKind, key: string, cost = 1): Promise<LimitVerdict> {
    const rule = this.rules[kind];
    let verdict: LimitVerdict;
    try {
      // The rule is part of the name: a changed limit starts fresh buckets, and deployments
      // (or tests) with different limits on one Redis never share one.
      const name = `${kind}:${rule.burst}/${rule.intervalMs}:${key}`;
      const answer = await this.store.consumeRate(name, rule, cost);
      if (this.#sharedDown) {
        this.#sharedDown = false;
        this.hooks.warn?.("rate limits shared again", {});
      }
      verdict = answer.allowed ? ALLOWED : { ok: false, retryAfter: seconds(answer.retryAfterMs) };
    } catch (err) {
      if (!this.#sharedDown) {
        this.#sharedDown = true;
        this.hooks.warn?.("rate limits fall back to this node's buckets", { error: err });
      }
      return this.consumeLocal(kind, key, cost);
    }
    if (!verdict.ok) this.refused(kind, key, verdict.retryAfter);
    return verdict;
  }

  /** Whether one unit would be allowed now (takes nothing). */
  check(kind: LimitKind, key: string): Promise<LimitVerdict> {
    return this.consume(kind, key, 0);
  }

  /** Takes `cost` from this node's bucket of (`kind`, `key`): synchronous, for per-frame use. */
  consumeLocal(kind: LimitKind, key: string, cost = 1): LimitVerdict {
    const rule = this.rules[kind];
    const name = `${kind}:${key}`;
    const now = Date.now();
    const units = Math.min(cost, rule.burst);
    const stored = this.#local.get(name);
    const step = gcra(stored === undefined ? null : stored, now, rule, units);
    if (!step.verdict.allowed) {
      const retryAfter = seconds(step.verdict.retryAfterMs);
      this.refused(kind, key, retryAfter);
      return { ok: false, retryAfter };
    }
    if (step.tat !== null) {
      this.#local.delete(name); // re-insert: Map order is least recently used first
      this.#local.set(name, step.tat);
      if (this.#local.size > MAX_LOCAL_BUCKETS) this.#sweep(now);
    }
    return ALLOWED;
  }

  /** Drops full (expired) buckets; past the bound, the least recently used. */
  #sweep(now: number): void {
    for (const [name, tat] of this.#local) if (tat <= now) this.#local.delete(name);
    while (this.#local.size > MAX_LOCAL_BUCKETS * 0.9) {
      this.#local.delete(this.#local.keys().next().value!);
    }
  }

  /** Records a refusal decided elsewhere (e.g. a connection's own frame buckets). */
  refused(kind: LimitKind, key: string, retryAfter: number): void {
    this.hooks.limited?.(kind);
    const name = `${kind}:${key}`;
    const now = Date.now();
    let entry = this.#recent.get(name);
    if (entry !== undefined) {
      entry.count++;
      entry.retryAfter = retryAfter;
      if (now - entry.at < RECORD_EVERY_MS) return;
      entry.at = now;
      this.#recent.delete(name);
      this.#recent.set(name, entry);
    } else {
      entry = { kind, key, count: 1, at: now, retryAfter };
      this.#recent.set(name, entry);
      if (this.#recent.size > MAX_RECENT) this.#recent.delete(this.#recent.keys().next().value!);
    }
    // At most one note per key every RECORD_EVERY_MS: a flood costs no Redis write per refusal.
    if (this.hooks.nodeId !== undefined) {
      const note: LimitedNote = { ...entry, node: this.hooks.nodeId };
      this.store.appendEvent(
        LIMITED_STREAM,
        new TextEncoder().encode(JSON.stringify(note)),
        LIMITED_STREAM_LENGTH,
      ).catch(() => {});
    }
  }

  /** Who was limited recently, most recent first. */
  recent(): LimitedEntry[] {
    return [...this.#recent.values()].reverse().map((e) => ({ ...e }));
  }
}

/** The non-fatal 429 ERROR for a refusal; `what` says what was limited. */
export function rateLimited(
  kind: LimitKind,
  verdict: { retryAfter: number },
  what: string,
  options: { fatal?: boolean } = {},
): ProtocolError {
  return new ProtocolError(
    RATE_LIMITED,
    429,
    `${what}: try again in ${verdict.retryAfter} s ([limits] ${CONFIG_KEY[kind]})`,
    { fatal: options.fatal ?? false, retryAfter: verdict.retryAfter },
  );
}

/** The `[limits]` key that sets each kind. */
export const CONFIG_KEY: Record<LimitKind, string> = {
  handshake: "handshakes_per_minute",
  registration: "registrations_per_hour",
  frames: "frames_per_second",
  bytes: "bytes_per_second",
  message: "messages_burst / messages_per_minute",
  join: "joins_per_minute",
  sign_in: "sign_in_failures_per_hour",
  pairing_code: "pairing_codes_per_hour",
  pairing_attempt: "pairing_attempts_per_hour",
};
