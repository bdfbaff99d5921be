/** `analytics`: frame counts and delivery latency per hour or day (counts and times only). */
import {
  choiceFlag,
  formatFlag,
  oneOf,
  parseCommand,
  stringFlag,
  timeFlag,
  UsageError,
} from "../args.ts";
import type { Command } from "../command.ts";
import { table, toJson } from "../format.ts";
import { analyticsReport, reportCsv } from "../../storage/analytics_report.ts";

const usage =
  "analytics [--granularity hour|day] [--from TIME] [--to TIME] [--by type,conversation,peer] " +
  "[--format text|json|csv]";

const DIMENSIONS = ["type", "conversation", "peer"] as const;

const ms = (v: number | null) => (v === null ? "-" : v >= 1000 ? `${v / 1000}s` : `${v}ms`);

export const analyticsCommand: Command = {
  name: "analytics",
  summary: "frame counts and delivery latency per hour or day",
  usage,
  help: `Prints the frame analytics rollups: per hour (default, the last 24 hours) or per day (the
last 30 days), frames sent, delivered, queued, expired and redelivered by frame type,
conversation kind (direct, group) and peer domain ("" = this domain), then the delivery
latency (enqueue to the recipient's ACK) of queued frames as p50/p90/p99 upper bounds.
--by limits the grouping (e.g. --by type); dimensions left out read "*". Nodes add their counts
every 10 seconds. Only counts and times are kept, never content or addresses.

Example:
  deno task cli analytics --granularity day --by type --format csv > frames.csv`,
  async run(argv, ctx) {
    const args = parseCommand(argv, {
      usage,
      flags: {
        granularity: { type: "string" },
        from: { type: "string" },
        to: { type: "string" },
        by: { type: "string" },
        format: { type: "string" },
      },
    });
    const granularity = choiceFlag(args, "granularity", ["hour", "day"], usage, "hour");
    const format = formatFlag(args, usage, ["text", "json", "csv"]);
    const now = Date.now();
    const span = granularity === "day" ? 30 * 86_400_000 : 86_400_000;
    const to = timeFlag(args, "to", usage) ?? new Date(now + 1);
    const from = timeFlag(args, "from", usage) ?? new Date(to.getTime() - span);
    if (from >= to) throw new UsageError("--from must be before --to", usage);
    const byText = stringFlag(args, "by");
    const by = byText === undefined ? undefined : byText.split(",").filter((s) => s !== "").map(
      (d) => oneOf("by", d.trim(), DIMENSIONS, usage),
    );
    const storage = await ctx.storage();
    const report = await analyticsReport(storage, { granularity, from, to, by });
    if (format === "json") {
      ctx.out(toJson(report));
      return 0;
    }
    if (format === "csv") {
      await Deno.stdout.write(new TextEncoder().encode(reportCsv(report)));
      return 0;
    }
    ctx.out(table(
      [
        "BUCKET",
        "TYPE",
        "CONVERSATION",
        "PEER",
        "SENT",
        "DELIVERED",
        "QUEUED",
        "EXPIRED",
        "REDELIVERED",
      ],
      report.rows.map((r) => [
        r.bucket,
        r.frameType,
        r.conversation,
        r.peerDomain === "" ? "(here)" : r.peerDomain,
        r.sent,
        r.delivered,
        r.queued,
        r.expired,
        r.redelivered,
      ]),
    ));
    ctx.out("");
    ctx.out(table(
      ["BUCKET", "ACKNOWLEDGED", "MEAN", "P50", "P90", "P99"],
      report.latency.map((l) => [
        l.bucket,
        l.count,
        ms(Math.round(l.meanMs)),
        ms(l.p50Ms),
        ms(l.p90Ms),
        ms(l.p99Ms),
      ]),
    ));
    return 0;
  },
};
