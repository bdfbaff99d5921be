/**
 * Live figures for the dashboard: what the relay server reports (`ConsoleFigures`) and the
 * samples the console derives from it (rates, storage-backed counts) for the live chart.
 */
import type { NodeHeartbeat, Storage } from "../storage/types.ts";

/**
 * What the relay server tells the console about itself. Counters (`framesIn`, `framesOut`,
 * `handshakeFailures`) are cumulative since the process started; the console turns them into
 * rates. Optional figures fall back to what storage can tell when they are absent.
 */
export interface ConsoleFigures {
  /** Live client connections on this node. */
  connections: number;
  /** Frames received since start (cumulative). */
  framesIn: number;
  /** Frames sent since start (cumulative). */
  framesOut: number;
  /** Handshakes that failed since start (cumulative). */
  handshakeFailures: number;
  /** Envelopes waiting in the relay queue; read from storage when absent. */
  relayDepth?: number;
  /** Devices waiting for approval (new devices and new keys); read from storage when absent. */
  pendingApprovals?: number;
  /** Federation events not yet delivered; read from storage when absent. */
  outboxBacklog?: number;
}

/** Supplies the current figures; the relay server passes one to `startConsole`. */
export type FiguresSource = () => ConsoleFigures | Promise<ConsoleFigures>;

/** One point of the dashboard's time series. `null` means "not known here". */
export interface FigureSample {
  /** Milliseconds since the epoch. */
  at: number;
  connections: number | null;
  /** Frames in + out per second since the previous sample. */
  framesPerSecond: number | null;
  relayDepth: number | null;
  /** Handshake failures since start. */
  handshakeFailures: number | null;
  pendingApprovals: number | null;
  outboxBacklog: number | null;
  /** Every node's latest heartbeat (the whole cluster with a shared Redis); null when unknown. */
  nodes: NodeFigures[] | null;
  /** Set when a figure could not be read (e.g. "storage failure: …"). */
  error: string | null;
}

/** One node as the dashboard shows it: its heartbeat in the ephemeral store, as stored. */
export type NodeFigures = NodeHeartbeat;

/** How often the dashboard refreshes, and how much history the chart keeps. */
export const SAMPLE_INTERVAL_MS = 5_000;
export const HISTORY_LENGTH = 120; // ten minutes at one sample per five seconds

/** Reads figures from the server (when present) and from storage, and keeps a short history. */
export class FigureSampler {
  #history: FigureSample[] = [];
  #previous: { at: number; frames: number } | null = null;
  #listeners = new Set<(s: FigureSample) => void>();
  #timer: ReturnType<typeof setInterval> | null = null;

  constructor(
    private readonly storage: Storage,
    private readonly source: FiguresSource | undefined,
    private readonly now: () => number = Date.now,
    readonly intervalMs = SAMPLE_INTERVAL_MS,
  ) {}

  /** The samples taken so far, oldest first. */
  get history(): FigureSample[] {
    return [...this.#history];
  }

  /** Takes one sample now, records it and tells every listener. Never throws. */
  async sample(): Promise<FigureSample> {
    const at = this.now();
    let error: string | null = null;
    const fail = (e: unknown) => {
      error ??= e instanceof Error ? e.message : String(e);
      return null;
    };
    let figures: ConsoleFigures | null = null;
    if (this.source) {
      try {
        figures = await this.source();
      } catch (e) {
        fail(e);
      }
    }
    const [relayDepth, pendingApprovals, outboxBacklog, nodes] = await Promise.all([
      figures?.relayDepth ?? this.storage.relay.totalDepth().catch(fail),
      figures?.pendingApprovals ??
        this.storage.devices.countAwaitingApproval().catch(fail),
      figures?.outboxBacklog ??
        this.storage.outbox.backlog().then((b) => b.reduce((n, p) => n + p.pending, 0))
          .catch(fail),
      this.storage.ephemeral.listNodeHeartbeats().catch(fail),
    ]);
    let framesPerSecond: number | null = null;
    if (figures) {
      const frames = figures.framesIn + figures.framesOut;
      const prev = this.#previous;
      // The first reading has nothing to compare with: its rate stays unknown.
      if (prev && at > prev.at && frames >= prev.frames) {
        framesPerSecond = Math.round(((frames - prev.frames) * 1000) / (at - prev.at) * 10) / 10;
      }
      this.#previous = { at, frames };
    }
    const sample: FigureSample = {
      at,
      connections: figures?.connections ?? null,
      framesPerSecond,
      relayDepth,
      handshakeFailures: figures?.handshakeFailures ?? null,
      pendingApprovals,
      outboxBacklog,
      nodes,
      error,
    };
    this.#history.push(sample);
    if (this.#history.length > HISTORY_LENGTH) this.#history.shift();
    for (const listener of this.#listeners) listener(sample);
    return sample;
  }

  /** The latest sample if it is fresh, else a new one. */
  async current(): Promise<FigureSample> {
    const last = this.#history.at(-1);
    if (last && this.now() - last.at < this.intervalMs) return last;
    return await this.sample();
  }

  /**
   * Calls `listener` with every new sample; sampling runs only while someone listens, so an
   * idle console holds no timer. Returns the unsubscribe function.
   */
  subscribe(listener: (s: FigureSample) => void): () => void {
    this.#listeners.add(listener);
    if (this.#timer === null) {
      this.#timer = setInterval(() => void this.sample(), this.intervalMs);
    }
    return () => {
      this.#listeners.delete(listener);
      if (this.#listeners.size === 0) this.stop();
    };
  }

  /** Stops the timer and forgets every listener. */
  stop(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
    this.#listeners.clear();
  }
}
