/**
 * The bus's second chance (docs/OPERATIONS.md "Guarantees"): a periodic reconciliation that
 * makes a node converge even when a pub/sub message was lost or Redis restarted empty.
 *
 * Every {@link RECONCILE_INTERVAL_MS} a node
 * 1. wakes the replay of each device it holds that has unclaimed envelopes waiting in the relay
 *    queue (Postgres: a lost nudge, or a frame queued while its route was gone);
 * 2. cuts the sessions of devices that are revoked (Postgres: a lost revocation) and of devices
 *    whose interrupt key appeared since the session opened (Redis);
 * 3. checks a few of its routes and, when Redis lost them (a restart), writes every route again;
 * 4. reads the control stream and the route-change stream after its last position and hands
 *    every entry to the node again (the handlers are idempotent, so a message that did arrive
 *    over pub/sub and is seen again changes nothing).
 *
 * Each step fails on its own (a Redis outage does not stop the Postgres steps) and is retried
 * at the next tick.
 *
 * @module
 */
import { CONTROL_CHANNEL, decodeControl } from "../storage/ephemeral/mod.ts";
import { compareStreamIds } from "../storage/ephemeral/shared.ts";
import type { ControlEvent } from "../storage/types.ts";
import type { NodeContext } from "./context.ts";
import { ROUTES_CHANNEL } from "./context.ts";

/** How often a node reconciles. A revoked device is cut within about this bound (plus one
 * query) even when its revocation event was lost; a queued frame for a connected device is
 * replayed within it even when its nudge was lost. */
export const RECONCILE_INTERVAL_MS = 2000;
/** Route-change entries the route stream keeps. */
export const ROUTE_STREAM_LENGTH = 10_000;
/** Routes sampled per tick to notice that Redis lost them. */
const ROUTE_SAMPLE = 16;
/** Device ids per storage query. */
const CHUNK = 2000;
/** Stream entries handled per stream per tick. */
const STREAM_BATCH = 1000;
/** How long an interrupt key is remembered after it was first seen (its TTL is 120 s). */
const INTERRUPT_MEMORY_MS = 10 * 60_000;

/** One session a node holds, as the reconciler sees it. */
export interface HeldSession {
  deviceId: string;
  sessionId: string;
  /** When the session's connection opened (ms since the epoch). */
  openedAt: number;
}

/** What the node gives the reconciler. */
export interface ReconcileHost {
  /** The open sessions this node holds. */
  sessions(): HeldSession[];
  /** Start the replay of a device's queue on its session here (no-op if it runs already). */
  wake(deviceId: string): void;
  /** End the device's sessions here with a fatal ERROR of `status`. */
  cut(deviceId: string, title: string, status: number, detail: string): void;
  /** Handle a control event again. */
  control(event: ControlEvent): void;
  /** Handle a route-change bus message again. */
  routeChange(message: Uint8Array): void;
  /** Write a held device's conversation routes back (Redis lost them). */
  restoreRoutes?(deviceId: string): Promise<void>;
}

/** What one tick did (tests and the debug log). */
export interface ReconcileReport {
  woken: number;
  cut: number;
  routesRewritten: number;
  controlReplayed: number;
  routeChangesReplayed: number;
  failures: string[];
}

/** The periodic reconciliation of one node. */
export class Reconciler {
  #timer: ReturnType<typeof setInterval> | null = null;
  #busy = false;
  #sample = 0;
  readonly #positions = new Map<string, string>();
  /** Interrupt reasons seen per device, and when first seen. */
  readonly #interrupts = new Map<string, { reason: string; seenAt: number }>();

  constructor(
    private readonly ctx: NodeContext,
    private readonly host: ReconcileHost,
    private readonly intervalMs = RECONCILE_INTERVAL_MS,
  ) {}

  /** Remembers where the streams end now, then reconciles every interval. */
  async start(): Promise<void> {
    for (const stream of [CONTROL_CHANNEL, ROUTES_CHANNEL]) {
      try {
        this.#positions.set(stream, await this.ctx.storage.ephemeral.lastEventId(stream));
      } catch {
        this.#positions.set(stream, "0"); // Redis down: read what is there once it is back
      }
    }
    this.#timer = setInterval(() => {
      if (this.#busy) return;
      this.#busy = true;
      this.tick().catch((err) => this.ctx.log.warn("reconciliation failed", { error: err }))
        .finally(() => (this.#busy = false));
    }, this.intervalMs);
  }

  stop(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }

  /** One reconciliation pass. */
  async tick(): Promise<ReconcileReport> {
    const report: ReconcileReport = {
      woken: 0,
      cut: 0,
      routesRewritten: 0,
      controlReplayed: 0,
      routeChangesReplayed: 0,
      failures: [],
    };
    const sessions = this.host.sessions();
    const step = async (name: string, fn: () => Promise<void>) => {
      try {
        await fn();
      } catch (err) {
        report.failures.push(`${name}: ${err instanceof Error ? err.message : String(err)}`);
      }
    };
    await step("queue", () => this.#wakeWaiting(sessions, report));
    await step("revocations", () => this.#cutRevoked(sessions, report));
    await step("interrupts", () => this.#cutInterrupted(sessions, report));
    await step("routes", () => this.#checkRoutes(sessions, report));
    await step("control stream", () => this.#follow(CONTROL_CHANNEL, report));
    await step("route stream", () => this.#follow(ROUTES_CHANNEL, report));
    const acted = report.woken + report.cut + report.routesRewritten;
    if (acted > 0 || report.failures.length > 0) {
      this.ctx.log[report.failures.length > 0 ? "warn" : "info"]("reconciled", { ...report });
    }
    return report;
  }

  async #wakeWaiting(sessions: HeldSession[], report: ReconcileReport): Promise<void> {
    const { relay } = this.ctx.storage;
    for (const ids of chunks(sessions.map((s) => s.deviceId))) {
      for (const deviceId of await relay.waiting(ids)) {
        this.host.wake(deviceId);
        report.woken++;
      }
    }
  }

  async #cutRevoked(sessions: HeldSession[], report: ReconcileReport): Promise<void> {
    const { devices } = this.ctx.storage;
    for (const ids of chunks(sessions.map((s) => s.deviceId))) {
      for (const deviceId of await devices.revokedAmong(ids)) {
        this.host.cut(deviceId, "Device Revoked", 403, `device ${deviceId} was revoked`);
        report.cut++;
      }
    }
  }

  async #cutInterrupted(sessions: HeldSession[], report: ReconcileReport): Promise<void> {
    const now = Date.now();
    for (const [id, seen] of this.#interrupts) {
      if (now - seen.seenAt > INTERRUPT_MEMORY_MS) this.#interrupts.delete(id);
    }
    for (const batch of chunks(sessions)) {
      const reasons = await this.ctx.storage.ephemeral.getInterrupts(batch.map((s) => s.deviceId));
      batch.forEach((session, i) => {
        const reason = reasons[i];
        if (reason === null) return;
        let seen = this.#interrupts.get(session.deviceId);
        if (seen === undefined || seen.reason !== reason) {
          seen = { reason, seenAt: now };
          this.#interrupts.set(session.deviceId, seen);
        }
        // Only sessions older than the interrupt: a device that reconnected after it stays.
        if (session.openedAt < seen.seenAt) {
          this.host.cut(session.deviceId, "Session Interrupted", 409, reason);
          report.cut++;
        }
      });
    }
  }

  async #checkRoutes(sessions: HeldSession[], report: ReconcileReport): Promise<void> {
    if (sessions.length === 0) return;
    const { ephemeral } = this.ctx.storage;
    const sample: HeldSession[] = [];
    for (let i = 0; i < Math.min(ROUTE_SAMPLE, sessions.length); i++) {
      sample.push(sessions[(this.#sample + i) % sessions.length]);
    }
    this.#sample = (this.#sample + sample.length) % sessions.length;
    const routes = await Promise.all(sample.map((s) => ephemeral.getRoute(s.deviceId)));
    if (routes.every((r) => r !== null)) return;
    // Redis lost routes (restarted empty, or they expired): write every route again.
    const { nodeId, config } = this.ctx;
    for (const s of sessions) {
      const now = await ephemeral.getRoute(s.deviceId);
      if (now !== null) continue; // another session of the device may own it by now
      await ephemeral.setRoute(
        s.deviceId,
        { nodeId, sessionId: s.sessionId },
        config.limits.presenceTtl,
      );
      await this.host.restoreRoutes?.(s.deviceId);
      report.routesRewritten++;
    }
  }

  async #follow(stream: string, report: ReconcileReport): Promise<void> {
    const { ephemeral } = this.ctx.storage;
    let after = this.#positions.get(stream) ?? "0";
    const last = await ephemeral.lastEventId(stream);
    // The stream is behind our position: Redis restarted empty (or it expired). Start over.
    if (compareStreamIds(last, after) < 0) after = "0";
    const entries = await ephemeral.readEvents(stream, after, STREAM_BATCH);
    for (const entry of entries) {
      if (stream === CONTROL_CHANNEL) {
        const event = decodeControl(entry.message);
        if (event !== null) {
          this.host.control(event);
          report.controlReplayed++;
        }
      } else {
        this.host.routeChange(entry.message);
        report.routeChangesReplayed++;
      }
      after = entry.id;
    }
    this.#positions.set(stream, after);
  }
}

function chunks<T>(items: T[]): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += CHUNK) out.push(items.slice(i, i + CHUNK));
  return out;
}
