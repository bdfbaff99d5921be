/**
 * The relay's metrics: one prom-client registry per server instance (several nodes can live in
 * one process in tests), exposed on `GET /metrics`, plus a cheap snapshot for the console's
 * dashboard.
 *
 * @module
 */
import { Counter, Gauge, type Metric, Registry } from "prom-client";
import { FRAME_TYPE_NAMES, type FrameType } from "../protocol/frame.ts";

/** Live figures for the console dashboard (read in-process, no HTTP). */
export interface MetricsSnapshot {
  nodeId: string;
  /** Established (post-handshake) connections right now. */
  connections: number;
  /** Connections still in their handshake. */
  handshaking: number;
  /** Cumulative frames received and sent; the dashboard derives rates from two readings. */
  framesIn: number;
  framesOut: number;
  handshakesOk: number;
  handshakeFailures: number;
  relayEnqueued: number;
  relayReplayed: number;
  relayAcknowledged: number;
  relayExpired: number;
  /** Envelopes waiting in the relay queue (last reading, refreshed periodically). */
  queueDepth: number;
  busMessages: number;
  errors: number;
  /** When the snapshot was taken (ms since the epoch). */
  at: number;
}

/** One exported sample of a {@link FrameHistogram}. */
interface HistogramValue {
  labels: Record<string, string | number>;
  value: number;
  metricName: string;
}

/**
 * A Prometheus histogram observed once per routed frame: an observation is a bucket search and
 * three additions (prom-client's own `observe` builds label objects and hashes them each time,
 * which shows at hundreds of thousands of frames per second). Exposed in the standard histogram
 * form (`_bucket{le}`, `_sum`, `_count`) through the registry like any other metric.
 */
export class FrameHistogram {
  readonly type = "histogram";
  readonly aggregator = "sum";
  readonly #bounds: readonly number[];
  /** Observations per bucket; the last slot counts those above every bound (+Inf). */
  readonly #counts: Float64Array;
  #sum = 0;
  #count = 0;

  constructor(
    readonly name: string,
    readonly help: string,
    buckets: number[],
    registry: Registry,
  ) {
    this.#bounds = [...buckets].sort((a, b) => a - b);
    this.#counts = new Float64Array(this.#bounds.length + 1);
    registry.registerMetric(this as unknown as Metric);
  }

  /** Records `value` (seconds) `times` times (frames handled together share one reading). */
  observe(value: number, times = 1): void {
    const bounds = this.#bounds;
    let i = 0;
    while (i < bounds.length && value > bounds[i]) i++;
    this.#counts[i] += times;
    this.#sum += value * times;
    this.#count += times;
  }

  /** The metric in prom-client's export shape (cumulative buckets, then sum and count). */
  get(): Promise<{
    name: string;
    help: string;
    type: string;
    aggregator: string;
    values: HistogramValue[];
  }> {
    const values: HistogramValue[] = [];
    let cumulative = 0;
    for (let i = 0; i < this.#bounds.length; i++) {
      cumulative += this.#counts[i];
      values.push({
        labels: { le: this.#bounds[i] },
        value: cumulative,
        metricName: `${this.name}_bucket`,
      });
    }
    values.push(
      { labels: { le: "+Inf" }, value: this.#count, metricName: `${this.name}_bucket` },
      { labels: {}, value: this.#sum, metricName: `${this.name}_sum` },
      { labels: {}, value: this.#count, metricName: `${this.name}_count` },
    );
    return Promise.resolve({
      name: this.name,
      help: this.help,
      type: this.type,
      aggregator: this.aggregator,
      values,
    });
  }

  reset(): void {
    this.#counts.fill(0);
    this.#sum = 0;
    this.#count = 0;
  }
}

/** Counters and gauges of one relay node. */
export class RelayMetrics {
  readonly registry = new Registry();
  readonly connections: Gauge;
  readonly handshaking: Gauge;
  readonly handshakes: Counter<"pattern" | "result">;
  readonly framesIn: Counter<"type">;
  readonly framesOut: Counter<"type">;
  readonly relayEnqueued: Counter;
  readonly relayReplayed: Counter;
  readonly relayAcknowledged: Counter;
  readonly relayExpired: Counter;
  readonly queueDepth: Gauge;
  readonly busMessages: Counter<"direction">;
  readonly errors: Counter<"title">;
  readonly routingLatency: FrameHistogram;
  readonly rateLimitedTotal: Counter<"kind">;
  readonly connectionsRefused: Counter<"reason">;
  readonly degraded: Counter<"part">;
  readonly pairings: Counter<"outcome">;

  // Plain numbers mirror the counters so the snapshot costs nothing.
  #connections = 0;
  #handshaking = 0;
  #framesIn = 0;
  #framesOut = 0;
  #handshakesOk = 0;
  #handshakeFailures = 0;
  #enqueued = 0;
  #replayed = 0;
  #acknowledged = 0;
  #expired = 0;
  #depth = 0;
  #bus = 0;
  #errors = 0;
  // Frame counts by type are batched (prom-client's inc() per frame is measurable at 1M/s): a
  // typed-array increment per frame by type code (0x01..0x0d) on the hot path.
  #inByCode = new Float64Array(16);
  #outByCode = new Float64Array(16);

  constructor(readonly nodeId: string) {
    const registers = [this.registry];
    this.registry.setDefaultLabels({ node: nodeId });
    this.connections = new Gauge({
      name: "commucat_connections",
      help: "Established client connections",
      registers,
    });
    this.handshaking = new Gauge({
      name: "commucat_handshaking_connections",
      help: "Connections still in their handshake",
      registers,
    });
    this.handshakes = new Counter({
      name: "commucat_handshakes_total",
      help: "Handshakes by Noise pattern and result",
      labelNames: ["pattern", "result"],
      registers,
    });
    this.framesIn = new Counter({
      name: "commucat_frames_in_total",
      help: "Frames received from clients, by type",
      labelNames: ["type"],
      registers,
    });
    this.framesOut = new Counter({
      name: "commucat_frames_out_total",
      help: "Frames sent to clients, by type",
      labelNames: ["type"],
      registers,
    });
    this.relayEnqueued = new Counter({
      name: "commucat_relay_enqueued_total",
      help: "Envelopes written to the relay queue",
      registers,
    });
    this.relayReplayed = new Counter({
      name: "commucat_relay_replayed_total",
      help: "Queued envelopes replayed to a connection",
      registers,
    });
    this.relayAcknowledged = new Counter({
      name: "commucat_relay_acknowledged_total",
      help: "Queued envelopes deleted after the recipient's ACK",
      registers,
    });
    this.relayExpired = new Counter({
      name: "commucat_relay_expired_total",
      help: "Envelopes purged after relay_ttl",
      registers,
    });
    this.queueDepth = new Gauge({
      name: "commucat_relay_queue_depth",
      help: "Envelopes waiting in the relay queue (all devices)",
      registers,
    });
    this.busMessages = new Counter({
      name: "commucat_bus_messages_total",
      help: "Frames exchanged with other nodes over the bus",
      labelNames: ["direction"],
      registers,
    });
    this.errors = new Counter({
      name: "commucat_errors_total",
      help: "ERROR frames sent, by problem title",
      labelNames: ["title"],
      registers,
    });
    this.rateLimitedTotal = new Counter({
      name: "commucat_rate_limited_total",
      help: "Requests refused by a rate limit ([limits]), by kind",
      labelNames: ["kind"],
      registers,
    });
    this.connectionsRefused = new Counter({
      name: "commucat_connections_refused_total",
      help: "New connections refused (handshake caps, memory budget, HTTP caps), by reason",
      labelNames: ["reason"],
      registers,
    });
    this.degraded = new Counter({
      name: "commucat_degraded_total",
      help: "Frames answered with a non-fatal 503 because a storage part failed, by part",
      labelNames: ["part"],
      registers,
    });
    this.pairings = new Counter({
      name: "commucat_pairing_attempts_total",
      help: "Handshakes presenting a pairing code (and refused registrations), by outcome",
      labelNames: ["outcome"],
      registers,
    });
    this.routingLatency = new FrameHistogram(
      "commucat_routing_latency_seconds",
      "Time from receiving a routed frame to handing every copy over",
      [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1],
      this.registry,
    );
  }

  connectionOpened(): void {
    this.#connections++;
    this.connections.inc();
  }
  connectionClosed(): void {
    this.#connections--;
    this.connections.dec();
  }
  handshakeStarted(): void {
    this.#handshaking++;
    this.handshaking.inc();
  }
  handshakeEnded(pattern: string, result: string): void {
    this.#handshaking--;
    this.handshaking.dec();
    this.handshakes.inc({ pattern, result });
    if (result === "ok") this.#handshakesOk++;
    else this.#handshakeFailures++;
  }
  /** Counts a frame received, by its type code (the per-frame path). */
  frameInCode(type: FrameType): void {
    this.#framesIn++;
    this.#inByCode[type & 15]++;
  }
  /** Counts a frame sent, by its type code (the per-frame path). */
  frameOutCode(type: FrameType): void {
    this.#framesOut++;
    this.#outByCode[type & 15]++;
  }
  enqueued(n: number): void {
    this.#enqueued += n;
    this.relayEnqueued.inc(n);
  }
  replayed(n: number): void {
    this.#replayed += n;
    this.relayReplayed.inc(n);
  }
  acknowledged(n: number): void {
    this.#acknowledged += n;
    this.relayAcknowledged.inc(n);
  }
  expired(n: number): void {
    this.#expired += n;
    this.relayExpired.inc(n);
  }
  setQueueDepth(n: number): void {
    this.#depth = n;
    this.queueDepth.set(n);
  }
  bus(direction: "in" | "out"): void {
    this.#bus++;
    this.busMessages.inc({ direction });
  }
  error(title: string): void {
    this.#errors++;
    this.errors.inc({ title });
  }
  /** A rate limit refused something. */
  rateLimited(kind: string): void {
    this.rateLimitedTotal.inc({ kind });
  }
  /** A new connection was refused before its handshake. */
  connectionRefused(reason: string): void {
    this.connectionsRefused.inc({ reason });
  }
  /** A frame got a non-fatal 503 because `part` (postgres, redis) failed. */
  degradedFrame(part: string): void {
    this.degraded.inc({ part });
  }
  /** A pairing attempt ended: "paired", or why it was refused. */
  pairing(outcome: string): void {
    this.pairings.inc({ outcome });
  }
  /** Routing latency of `frames` frames (default one) handed over after `seconds`. */
  routed(seconds: number, frames = 1): void {
    this.routingLatency.observe(seconds, frames);
  }

  /** Moves the batched per-type frame counts into the prom-client counters. */
  flushFrameCounts(): void {
    for (let code = 0; code < 16; code++) {
      const name = FRAME_TYPE_NAMES[code as FrameType] ?? "unknown";
      if (this.#inByCode[code] > 0) this.framesIn.inc({ type: name }, this.#inByCode[code]);
      if (this.#outByCode[code] > 0) this.framesOut.inc({ type: name }, this.#outByCode[code]);
    }
    this.#inByCode.fill(0);
    this.#outByCode.fill(0);
  }

  /** Prometheus text exposition of this node's registry. */
  async exposition(): Promise<string> {
    this.flushFrameCounts();
    return await this.registry.metrics();
  }

  /** The content type of {@link exposition}. */
  get contentType(): string {
    return this.registry.contentType;
  }

  /** Live figures for the console. */
  snapshot(): MetricsSnapshot {
    return {
      nodeId: this.nodeId,
      connections: this.#connections,
      handshaking: this.#handshaking,
      framesIn: this.#framesIn,
      framesOut: this.#framesOut,
      handshakesOk: this.#handshakesOk,
      handshakeFailures: this.#handshakeFailures,
      relayEnqueued: this.#enqueued,
      relayReplayed: this.#replayed,
      relayAcknowledged: this.#acknowledged,
      relayExpired: this.#expired,
      queueDepth: this.#depth,
      busMessages: this.#bus,
      errors: this.#errors,
      at: Date.now(),
    };
  }
}
