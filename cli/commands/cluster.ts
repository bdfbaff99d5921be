/** `nodes`, `queue` and `audit`: what runs, what waits for a device, who changed what. */
import { formatFlag, LIST_FLAGS, pageFlags, parseCommand, stringFlag } from "../args.ts";
import type { Command } from "../command.ts";
import { keyValues, table, toJson } from "../format.ts";
import { printPage } from "../page.ts";

const nodesUsage = "nodes [--format text|json]";

export const nodesCommand: Command = {
  name: "nodes",
  summary: "running nodes: address, version, uptime, connections, frames/s",
  usage: nodesUsage,
  help: `Lists the nodes that published a heartbeat in the last few seconds (every node
publishes one every 5 s into the ephemeral store; with a shared Redis that is the whole
cluster). Without a shared Redis only a server reached through its admin API is listed.

Example:
  deno task cli nodes`,
  async run(argv, ctx) {
    const args = parseCommand(argv, { usage: nodesUsage, flags: { format: { type: "string" } } });
    const format = formatFlag(args, nodesUsage);
    const nodes = await (await ctx.admin()).nodes();
    if (format === "json") {
      ctx.out(toJson(nodes));
      return 0;
    }
    ctx.out(table(
      ["NODE_ID", "ADDRESS", "VERSION", "UPTIME_S", "CONNECTIONS", "FRAMES_PER_S", "HEARTBEAT"],
      nodes.map((n) => [
        n.nodeId,
        n.address,
        n.version,
        n.uptimeSeconds,
        n.connections,
        n.framesPerSecond,
        n.lastHeartbeatAt,
      ]),
    ));
    return 0;
  },
};

const queueUsage = "queue <device_id> [--format text|json]";

export const queueCommand: Command = {
  name: "queue",
  summary: "a device's delivery: queue depth, oldest, in flight, redelivered",
  usage: queueUsage,
  help: `Shows what waits for a device in the relay queue: depth (unexpired envelopes), the
oldest one's enqueue time, how many are in flight (handed to a connection, not yet
acknowledged), how many were handed out more than once, and whether it is online.

Example:
  deno task cli queue laptop-01`,
  async run(argv, ctx) {
    const args = parseCommand(argv, {
      usage: queueUsage,
      positionals: ["device_id"],
      flags: { format: { type: "string" } },
    });
    const format = formatFlag(args, queueUsage);
    const d = await (await ctx.admin()).delivery(args.positionals[0]);
    if (format === "json") {
      ctx.out(toJson(d));
      return 0;
    }
    ctx.out(keyValues([
      ["device_id", d.deviceId],
      ["depth", d.depth],
      ["oldest", d.oldestAt],
      ["in_flight", d.inFlight],
      ["redelivered", d.redelivered],
      ["online", d.online],
      ["node", d.nodeId],
    ]));
    return 0;
  },
};

const auditUsage =
  "audit [--actor A] [--action A] [--target T] [--limit N] [--cursor C] [--format text|json]";

export const auditCommand: Command = {
  name: "audit",
  summary: "the operator audit log, newest first",
  usage: auditUsage,
  help: `Lists operator actions (console, CLI and admin API): time, actor, action, target.
Filters match exactly, e.g. --action device.approve or --target device:laptop-01.

Example:
  deno task cli audit --action device.revoke`,
  async run(argv, ctx) {
    const args = parseCommand(argv, {
      usage: auditUsage,
      flags: {
        actor: { type: "string" },
        action: { type: "string" },
        target: { type: "string" },
        ...LIST_FLAGS,
      },
    });
    const format = formatFlag(args, auditUsage);
    const page = await (await ctx.admin()).audit({
      actor: stringFlag(args, "actor"),
      action: stringFlag(args, "action"),
      target: stringFlag(args, "target"),
      ...pageFlags(args, auditUsage),
    });
    return printPage(
      ctx,
      format,
      page,
      ["RECORDED_AT", "ACTOR", "ACTION", "TARGET"],
      (a) => [a.recordedAt, a.actor, a.action, a.target],
    );
  },
};
