/**
 * Frame analytics, the live part: each node counts frames in memory per hour, frame type,
 * conversation kind and peer domain, and adds the counts to the rollup tables every
 * `FLUSH_MS` (storage/repos/analytics.ts); delivery latency (enqueue → recipient ACK) goes to an
 * hourly histogram and to the Prometheus histogram `commucat_delivery_latency_seconds`. Only
 * counts and times: no content, ids or addresses (a peer domain names a server, not a person).
 *
 * What is counted where (docs/OPERATIONS.md "Frame analytics"):
 * - sent: a routed frame (MSG, TYPING, KEY_UPDATE, GROUP_EVENT) a client sent — under peer ""
 *   once, and under each remote domain its copies went to, once per copy;
 * - delivered: copies handed to a live connection at once, plus queued envelopes the recipient
 *   acknowledged; queued: copies written to the relay queue (other node or offline) or the
 *   federation outbox; expired: envelopes purged after relay_ttl; redelivered: acknowledged
 *   envelopes that had been handed out more than once.
 */
import { FRAME_TYPE_NAMES, type FrameType } from "../protocol/frame.ts";
/** What analytics needs of a conversation (routing/conversations.ts's Conversation fits). */
interface RoutedConversation {
  readonly members: ReadonlySet<string>;
  readonly groupId: string | null;
}
import { FrameHistogram, type RelayMetrics } from "./metrics.ts";
import type {
  AnalyticsRepo,
  FrameRollup,
  FrameRollupDelta,
  LatencyDelta,
} from "../storage/types.ts";
import { LATENCY_BOUNDS_MS } from "../storage/analytics_bounds.ts";

export { LATENCY_BOUNDS_MS } from "../storage/analytics_bounds.ts";
export { percentile } from "../storage/analytics_report.ts";

/** How often a node adds its counts to the database. */
export const FLUSH_MS = 10_000;
/** Hourly rollups older than this are deleted (once an hour, by whichever node flushes). */
export const KEEP_DAYS = 400;
/** Distinct (hour, type, conversation, peer) keys held between flushes at most; beyond, new keys wait. */
export const MAX_KEYS = 10_000;

const HOUR = 3_600_000;

/** A rollup row as it is counted: the hour as epoch milliseconds. */
type Counts = Omit<FrameRollup, "bucket"> & { bucket: number };

/** The slot of a latency in LATENCY_BOUNDS_MS. */
export function latencySlot(ms: number): number {
  let i = 0;
  while (i < LATENCY_BOUNDS_MS.length && ms > LATENCY_BOUNDS_MS[i]) i++;
  return i;
}

/** Remote domains among a route's members (device@domain with a domain not ours). */
const remoteCache = new WeakMap<
  RoutedConversation,
  { size: number; domains: Map<string, number> }
>();
function remoteDomains(route: RoutedConversation, own: string): Map<string, number> {
  const cached = remoteCache.get(route);
  if (cached && cached.size === route.members.size) return cached.domains;
  const domains = new Map<string, number>();
  for (const m of route.members) {
    const at = m.lastIndexOf("@");
    if (at < 0) continue;
    const d = m.slice(at + 1).toLowerCase();
    if (d !== own) domains.set(d, (domains.get(d) ?? 0) + 1);
  }
  remoteCache.set(route, { size: route.members.size, domains });
  return domains;
}

export class FrameAnalytics {
  readonly #counts = new Map<string, Counts>();
  readonly #latency = new Map<string, LatencyDelta>();
  readonly histogram: FrameHistogram;
  #timer: ReturnType<typeof setInterval> | null = null;
  #flushing: Promise<void> | null = null;
  #lastPurge = 0;
  /** Keys refused because MAX_KEYS was reached (a figure for the log). */
  dropped = 0;

  constructor(
    private readonly repo: AnalyticsRepo,
    private readonly ownDomain: string,
    metrics: RelayMetrics,
    private readonly now: () => number = Date.now,
  ) {
    this.histogram = new FrameHistogram(
      "commucat_delivery_latency_seconds",
      "Time from enqueueing a frame to the recipient's ACK (queued frames)",
      LATENCY_BOUNDS_MS.map((ms) => ms / 1000),
      metrics.registry,
    );
  }

  /**
   * The local rows (no peer domain) of the current hour by frame type, [direct, group]: every
   * routed frame counts into one, found without building its key. Emptied whenever the hour
   * changes or the counts are flushed (the rows then start anew in #counts).
   */
  readonly #hot = new Map<string, [Counts | null, Counts | null]>();
  #hotBucket = -1;

  #localRow(frameType: string, conversation: "direct" | "group"): Counts | null {
    const bucket = Math.floor(this.now() / HOUR) * HOUR;
    if (bucket !== this.#hotBucket) {
      this.#hot.clear();
      this.#hotBucket = bucket;
    }
    let pair = this.#hot.get(frameType);
    if (pair === undefined) {
      pair = [null, null];
      this.#hot.set(frameType, pair);
    }
    const i = conversation === "group" ? 1 : 0;
    return pair[i] ??= this.#row(frameType, conversation, "");
  }

  #row(frameType: string, conversation: string, peerDomain: string): Counts | null {
    const bucket = Math.floor(this.now() / HOUR) * HOUR;
    const key = `${bucket}|${frameType}|${conversation}|${peerDomain}`;
    let c = this.#counts.get(key);
    if (!c) {
      if (this.#counts.size >= MAX_KEYS) {
        this.dropped++;
        return null;
      }
      c = {
        bucket,
        frameType,
        conversation,
        peerDomain,
        sent: 0,
        delivered: 0,
        queued: 0,
        expired: 0,
        redelivered: 0,
      };
      this.#counts.set(key, c);
    }
    return c;
  }

  /** A routed frame: `recipients` copies, `live` of them handed to live connections at once. */
  routed(type: FrameType, route: RoutedConversation, recipients: number, live: number): void {
    const name = FRAME_TYPE_NAMES[type] ?? "unknown";
    const conversation = route.groupId ? "group" : "direct";
    const local = this.#localRow(name, conversation);
    let remote = 0;
    if (route.members.size > 1) {
      for (const [domain, n] of remoteDomains(route, this.ownDomain)) {
        const r = this.#row(name, conversation, domain);
        if (r) r.sent += n;
        remote += n;
      }
    }
    if (!local) return;
    local.sent++;
    local.delivered += live;
    local.queued += Math.max(0, recipients - live - remote);
  }

  /** Queued envelopes the recipient acknowledged (with when they were enqueued). */
  acknowledged(rows: { enqueuedAt: Date; attempts: number }[]): void {
    if (rows.length === 0) return;
    const row = this.#row("*", "*", "");
    const now = this.now();
    const bucket = Math.floor(now / HOUR) * HOUR;
    for (const r of rows) {
      const ms = Math.max(0, now - r.enqueuedAt.getTime());
      const slot = latencySlot(ms);
      const key = `${bucket}|${slot}`;
      const l = this.#latency.get(key) ?? { bucket: new Date(bucket), slot, count: 0, sumMs: 0 };
      l.count++;
      l.sumMs += ms;
      this.#latency.set(key, l);
      this.histogram.observe(ms / 1000);
      if (row) {
        row.delivered++;
        if (r.attempts > 1) row.redelivered++;
      }
    }
  }

  /** Envelopes purged after relay_ttl. */
  expired(n: number): void {
    const row = this.#row("*", "*", "");
    if (row) row.expired += n;
  }

  /** Adds the counts so far to the database (kept for the next flush when that fails). */
  flush(): Promise<void> {
    this.#flushing ??= this.#flush().finally(() => (this.#flushing = null));
    return this.#flushing;
  }

  async #flush(): Promise<void> {
    const counts = [...this.#counts.values()];
    const latency = [...this.#latency.values()];
    this.#counts.clear();
    this.#hot.clear();
    this.#latency.clear();
    const rows: FrameRollupDelta[] = counts.map((c) => ({ ...c, bucket: new Date(c.bucket) }));
    try {
      await this.repo.add(rows, latency);
    } catch (err) {
      // Put them back (merged with what arrived meanwhile) so nothing counted is lost.
      for (const c of counts) {
        const key = `${c.bucket}|${c.frameType}|${c.conversation}|${c.peerDomain}`;
        const cur = this.#counts.get(key);
        if (!cur) this.#counts.set(key, c);
        else {
          cur.sent += c.sent;
          cur.delivered += c.delivered;
          cur.queued += c.queued;
          cur.expired += c.expired;
          cur.redelivered += c.redelivered;
        }
      }
      for (const l of latency) {
        const key = `${l.bucket.getTime()}|${l.slot}`;
        const cur = this.#latency.get(key);
        if (cur) {
          cur.count += l.count;
          cur.sumMs += l.sumMs;
        } else this.#latency.set(key, l);
      }
      throw err;
    }
    if (this.now() - this.#lastPurge > HOUR) {
      this.#lastPurge = this.now();
      await this.repo.purge(new Date(this.now() - KEEP_DAYS * 86_400_000));
    }
  }

  start(onError: (err: unknown) => void): void {
    this.#timer ??= setInterval(() => this.flush().catch(onError), FLUSH_MS);
  }

  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    await this.flush();
  }
}
