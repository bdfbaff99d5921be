/**
 * Frame analytics rollups (`frame_rollup`, `frame_latency_rollup`): nodes add their hourly
 * counts (additive upserts, one statement per table per flush); readers sum hours into hours
 * or days. Only counts and times are stored — never content, ids or addresses.
 */
import type { Db } from "../db.ts";
import type { AnalyticsRepo, FrameRollup, FrameRollupDelta, LatencyDelta } from "../types.ts";
import * as v from "./validate.ts";

interface RollupRow {
  bucket: Date;
  frame_type: string;
  conversation: string;
  peer_domain: string;
  sent: string;
  delivered: string;
  queued: string;
  expired: string;
  redelivered: string;
}

const GROUPS = { type: "frame_type", conversation: "conversation", peer: "peer_domain" } as const;

export class PgAnalyticsRepo implements AnalyticsRepo {
  constructor(private readonly db: Db) {}

  async add(rows: FrameRollupDelta[], latency: LatencyDelta[]): Promise<void> {
    if (rows.length === 0 && latency.length === 0) return;
    await this.db.transaction(async (q) => {
      if (rows.length > 0) {
        await q.query(
          `INSERT INTO frame_rollup AS r (bucket, frame_type, conversation, peer_domain, sent,
             delivered, queued, expired, redelivered)
           SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[],
             $5::int8[], $6::int8[], $7::int8[], $8::int8[], $9::int8[])
           ON CONFLICT (bucket, frame_type, conversation, peer_domain) DO UPDATE SET
             sent = r.sent + EXCLUDED.sent, delivered = r.delivered + EXCLUDED.delivered,
             queued = r.queued + EXCLUDED.queued, expired = r.expired + EXCLUDED.expired,
             redelivered = r.redelivered + EXCLUDED.redelivered`,
          [
            rows.map((r) => r.bucket.toISOString()),
            rows.map((r) => r.frameType),
            rows.map((r) => r.conversation),
            rows.map((r) => r.peerDomain),
            rows.map((r) => r.sent),
            rows.map((r) => r.delivered),
            rows.map((r) => r.queued),
            rows.map((r) => r.expired),
            rows.map((r) => r.redelivered),
          ],
        );
      }
      if (latency.length > 0) {
        await q.query(
          `INSERT INTO frame_latency_rollup AS r (bucket, slot, count, sum_ms)
           SELECT * FROM unnest($1::timestamptz[], $2::int[], $3::int8[], $4::float8[])
           ON CONFLICT (bucket, slot) DO UPDATE SET
             count = r.count + EXCLUDED.count, sum_ms = r.sum_ms + EXCLUDED.sum_ms`,
          [
            latency.map((l) => l.bucket.toISOString()),
            latency.map((l) => l.slot),
            latency.map((l) => l.count),
            latency.map((l) => l.sumMs),
          ],
        );
      }
    });
  }

  async rollups(filter: {
    granularity: "hour" | "day";
    from: Date;
    to: Date;
    by?: ("type" | "conversation" | "peer")[];
  }): Promise<FrameRollup[]> {
    const unit = filter.granularity === "day" ? "day" : "hour";
    const by = new Set(filter.by ?? ["type", "conversation", "peer"]);
    const cols = (Object.keys(GROUPS) as (keyof typeof GROUPS)[]).map((k) =>
      by.has(k) ? GROUPS[k] : `'*'::text AS ${GROUPS[k]}`
    );
    const groupBy = [
      "1",
      ...(Object.keys(GROUPS) as (keyof typeof GROUPS)[])
        .filter((k) => by.has(k)).map((k) => GROUPS[k]),
    ];
    const res = await this.db.query<RollupRow>(
      `SELECT date_trunc('${unit}', bucket, 'UTC') AS bucket, ${cols.join(", ")},
         sum(sent) AS sent, sum(delivered) AS delivered, sum(queued) AS queued,
         sum(expired) AS expired, sum(redelivered) AS redelivered
       FROM frame_rollup WHERE bucket >= $1 AND bucket < $2
       GROUP BY ${groupBy.join(", ")}
       ORDER BY 1, 2, 3, 4`,
      [v.date("from", filter.from).toISOString(), v.date("to", filter.to).toISOString()],
    );
    return res.rows.map((r) => ({
      bucket: r.bucket,
      frameType: r.frame_type,
      conversation: r.conversation,
      peerDomain: r.peer_domain,
      sent: Number(r.sent),
      delivered: Number(r.delivered),
      queued: Number(r.queued),
      expired: Number(r.expired),
      redelivered: Number(r.redelivered),
    }));
  }

  async latency(filter: { granularity: "hour" | "day"; from: Date; to: Date }): Promise<
    { bucket: Date; slots: Map<number, number>; sumMs: number }[]
  > {
    const unit = filter.granularity === "day" ? "day" : "hour";
    const res = await this.db.query<{ bucket: Date; slot: number; count: string; sum_ms: number }>(
      `SELECT date_trunc('${unit}', bucket, 'UTC') AS bucket, slot, sum(count) AS count,
         sum(sum_ms) AS sum_ms
       FROM frame_latency_rollup WHERE bucket >= $1 AND bucket < $2
       GROUP BY 1, 2 ORDER BY 1, 2`,
      [v.date("from", filter.from).toISOString(), v.date("to", filter.to).toISOString()],
    );
    const out: { bucket: Date; slots: Map<number, number>; sumMs: number }[] = [];
    for (const r of res.rows) {
      let last = out.at(-1);
      if (!last || last.bucket.getTime() !== r.bucket.getTime()) {
        last = { bucket: r.bucket, slots: new Map(), sumMs: 0 };
        out.push(last);
      }
      last.slots.set(r.slot, Number(r.count));
      last.sumMs += Number(r.sum_ms);
    }
    return out;
  }

  async purge(before: Date): Promise<number> {
    const cutoff = v.date("before", before).toISOString();
    const a = await this.db.query(`DELETE FROM frame_rollup WHERE bucket < $1`, [cutoff]);
    const b = await this.db.query(`DELETE FROM frame_latency_rollup WHERE bucket < $1`, [cutoff]);
    return a.rowCount + b.rowCount;
  }
}
