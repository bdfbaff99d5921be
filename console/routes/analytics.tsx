// deno-lint-ignore-file jsx-key -- server-rendered static children are never reordered, so keys add nothing
/**
 * Frame analytics: frames sent, delivered, queued, expired and redelivered per hour (the last
 * 24 hours) or per day (the last 30 days), by frame type, conversation kind and peer domain,
 * with delivery latency percentiles, charts and a CSV export. Counts and times only.
 */
import type { Context, Hono } from "hono";
import type { AppEnv, ConsoleDeps } from "../context.ts";
import { renderPage } from "../render.tsx";
import { Table } from "../components/table.tsx";
import { Chart } from "../components/chart.tsx";
import { Empty } from "../components/empty.tsx";
import { href } from "../components/format.ts";
import { analyticsReport, reportCsv } from "../../storage/analytics_report.ts";
import type { FrameRollup } from "../../storage/types.ts";

const DIMENSIONS = ["type", "conversation", "peer"] as const;
type Dimension = typeof DIMENSIONS[number];
const HOUR = 3_600_000;

function filters(c: Context<AppEnv>, now: number) {
  const granularity = c.req.query("granularity") === "day" ? "day" as const : "hour" as const;
  const byText = c.req.query("by");
  const by = byText === undefined
    ? [...DIMENSIONS]
    : byText.split(",").filter((d): d is Dimension =>
      (DIMENSIONS as readonly string[]).includes(d)
    );
  const unit = granularity === "day" ? 24 * HOUR : HOUR;
  const to = new Date(Math.floor(now / unit) * unit + unit);
  const from = new Date(to.getTime() - (granularity === "day" ? 30 : 24) * unit);
  return { granularity, by, from, to, unit };
}

const ms = (v: number | null) => (v === null ? "—" : v >= 1000 ? `≤ ${v / 1000} s` : `≤ ${v} ms`);

export function register(app: Hono<AppEnv>, deps: ConsoleDeps): void {
  app.get("/analytics", async (c) => {
    const f = filters(c, deps.now());
    const report = await analyticsReport(deps.storage, f);
    const params = { granularity: f.granularity, by: f.by.join(",") };
    const perBucket = new Map<number, { sent: number; delivered: number; queued: number }>();
    for (const r of report.rows) {
      const t = r.bucket.getTime();
      const b = perBucket.get(t) ?? { sent: 0, delivered: 0, queued: 0 };
      b.sent += r.sent;
      b.delivered += r.delivered;
      b.queued += r.queued;
      perBucket.set(t, b);
    }
    const times: number[] = [];
    for (let t = f.from.getTime(); t < f.to.getTime(); t += f.unit) times.push(t);
    const series = (key: "sent" | "delivered" | "queued") =>
      times.map((at) => ({ at, value: perBucket.get(at)?.[key] ?? 0 }));
    const p90 = new Map(report.latency.map((l) => [l.bucket.getTime(), l.p90Ms]));
    const spanMs = f.to.getTime() - f.from.getTime() - f.unit;
    const columns = [
      {
        label: f.granularity === "day" ? "Day (UTC)" : "Hour (UTC)",
        cell: (r: FrameRollup) =>
          r.bucket.toISOString().slice(0, f.granularity === "day" ? 10 : 16),
      },
      { label: "Type", cell: (r: FrameRollup) => r.frameType },
      { label: "Conversation", cell: (r: FrameRollup) => r.conversation },
      {
        label: "Peer domain",
        cell: (r: FrameRollup) => (r.peerDomain === "" ? "(this domain)" : r.peerDomain),
      },
      { label: "Sent", cell: (r: FrameRollup) => r.sent },
      { label: "Delivered", cell: (r: FrameRollup) => r.delivered },
      { label: "Queued", cell: (r: FrameRollup) => r.queued },
      { label: "Expired", cell: (r: FrameRollup) => r.expired },
      { label: "Redelivered", cell: (r: FrameRollup) => r.redelivered },
    ];
    return renderPage(c, deps, { title: "Frame analytics", active: "analytics" }, [
      <form method="get" action="/analytics" class="filters" aria-label="Analytics view">
        <label for="granularity">Per</label>
        <select id="granularity" name="granularity">
          <option value="hour" selected={f.granularity === "hour"}>hour (last 24 hours)</option>
          <option value="day" selected={f.granularity === "day"}>day (last 30 days)</option>
        </select>
        <label for="by">Grouped by</label>
        <select id="by" name="by">
          {[
            ["type,conversation,peer", "type, conversation and peer"],
            ["type", "frame type"],
            ["conversation", "conversation kind"],
            ["peer", "peer domain"],
            ["", "nothing (totals)"],
          ].map(([value, label]) => (
            <option value={value} selected={f.by.join(",") === value}>{label}</option>
          ))}
        </select>
        <button type="submit">Show</button>{" "}
        <a class="button small" href={href("/analytics/export.csv", params)} download>CSV</a>
      </form>,
      <p class="muted">
        Counts and times only: no content, ids or addresses. Nodes add their counts every 10
        seconds; delivered counts copies handed to a live connection and queued frames the recipient
        acknowledged; latency is enqueue → the recipient's ACK of queued frames.
      </p>,
      <section aria-labelledby="charts-title">
        <h2 id="charts-title">Frames per {f.granularity}</h2>
        <Chart label="Frames sent" points={series("sent")} spanMs={spanMs} variant="main" />
        <Chart
          label="Copies delivered"
          points={series("delivered")}
          spanMs={spanMs}
          variant="main"
        />
        <Chart label="Copies queued" points={series("queued")} spanMs={spanMs} variant="main" />
        <Chart
          label="Delivery latency p90 (ms)"
          points={times.map((at) => ({ at, value: p90.get(at) ?? null }))}
          spanMs={spanMs}
          variant="main"
        />
      </section>,
      <section aria-labelledby="counts-title">
        <h2 id="counts-title">Counts</h2>
        {report.rows.length
          ? <Table caption={`Frames per ${f.granularity}`} rows={report.rows} columns={columns} />
          : <Empty title="No frames counted in this period." />}
      </section>,
      <section aria-labelledby="latency-title">
        <h2 id="latency-title">Delivery latency of queued frames</h2>
        {report.latency.length
          ? (
            <Table
              caption={`Delivery latency per ${f.granularity}`}
              rows={report.latency}
              columns={[
                { label: "Bucket (UTC)", cell: (l) => l.bucket.toISOString().slice(0, 16) },
                { label: "Acknowledged", cell: (l) => l.count },
                { label: "Mean", cell: (l) => `${Math.round(l.meanMs)} ms` },
                { label: "p50", cell: (l) => ms(l.p50Ms) },
                { label: "p90", cell: (l) => ms(l.p90Ms) },
                { label: "p99", cell: (l) => ms(l.p99Ms) },
              ]}
            />
          )
          : <Empty title="No queued frames were acknowledged in this period." />}
      </section>,
    ]);
  });

  app.get("/analytics/export.csv", async (c) => {
    const f = filters(c, deps.now());
    const report = await analyticsReport(deps.storage, f);
    const day = new Date(deps.now()).toISOString().slice(0, 10);
    return c.body(reportCsv(report), 200, {
      "content-type": "text/csv; charset=utf-8",
      "content-disposition":
        `attachment; filename="commucat-analytics-${f.granularity}-${day}.csv"`,
    });
  });
}
