/**
 * The frame analytics report both the console and the CLI show: rollups plus delivery latency
 * percentiles per hour or day, and its CSV form.
 */
import type { FrameRollup, Storage } from "./types.ts";
import { LATENCY_BOUNDS_MS } from "./analytics_bounds.ts";

export interface LatencySummary {
  bucket: Date;
  count: number;
  meanMs: number;
  p50Ms: number | null;
  p90Ms: number | null;
  p99Ms: number | null;
}

export interface AnalyticsReport {
  granularity: "hour" | "day";
  from: Date;
  to: Date;
  rows: FrameRollup[];
  latency: LatencySummary[];
}

/**
 * The `p`-quantile (0..1) of a histogram as the upper bound of the slot where it falls (null
 * when empty; the last slot, "above every bound", reads as the largest bound).
 */
export function percentile(slots: Map<number, number>, p: number): number | null {
  let total = 0;
  for (const n of slots.values()) total += n;
  if (total === 0) return null;
  const rank = p * total;
  let seen = 0;
  for (let i = 0; i <= LATENCY_BOUNDS_MS.length; i++) {
    seen += slots.get(i) ?? 0;
    if (seen >= rank && seen > 0) {
      return LATENCY_BOUNDS_MS[Math.min(i, LATENCY_BOUNDS_MS.length - 1)];
    }
  }
  return LATENCY_BOUNDS_MS[LATENCY_BOUNDS_MS.length - 1];
}

export async function analyticsReport(
  storage: Storage,
  filter: {
    granularity: "hour" | "day";
    from: Date;
    to: Date;
    by?: ("type" | "conversation" | "peer")[];
  },
): Promise<AnalyticsReport> {
  const [rows, hist] = await Promise.all([
    storage.analytics.rollups(filter),
    storage.analytics.latency(filter),
  ]);
  const latency = hist.map((h) => {
    const count = [...h.slots.values()].reduce((a, b) => a + b, 0);
    return {
      bucket: h.bucket,
      count,
      meanMs: count ? h.sumMs / count : 0,
      p50Ms: percentile(h.slots, 0.5),
      p90Ms: percentile(h.slots, 0.9),
      p99Ms: percentile(h.slots, 0.99),
    };
  });
  return { granularity: filter.granularity, from: filter.from, to: filter.to, rows, latency };
}

const csvCell = (v: unknown) => {
  const s = v instanceof Date ? v.toISOString() : v === null ? "" : String(v);
  return /[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
};

/** CSV: one line per rollup row, then (after a blank line) one per latency bucket. */
export function reportCsv(report: AnalyticsReport): string {
  const lines = [
    "bucket,frame_type,conversation,peer_domain,sent,delivered,queued,expired,redelivered",
    ...report.rows.map((r) =>
      [
        r.bucket,
        r.frameType,
        r.conversation,
        r.peerDomain,
        r.sent,
        r.delivered,
        r.queued,
        r.expired,
        r.redelivered,
      ].map(csvCell).join(",")
    ),
    "",
    "bucket,acknowledged,mean_ms,p50_ms,p90_ms,p99_ms",
    ...report.latency.map((l) =>
      [l.bucket, l.count, Math.round(l.meanMs), l.p50Ms, l.p90Ms, l.p99Ms].map(csvCell).join(",")
    ),
  ];
  return lines.join("\r\n") + "\r\n";
}
