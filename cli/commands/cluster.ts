/** `nodes`, `queue` and `audit`: what runs, what waits for a device, who changed what. */
import { formatFlag, LIST_FLAGS, parseCommand, stringFlag } from "../args.ts";
import type { Command } from "../command.ts";
import { keyValues } from "../format.ts";
import { listCommand, printAs } from "../page.ts";

export const nodesCommand: Command = listCommand({
  name: "nodes",
  summary: "running nodes: address, version, uptime, connections, frames/s",
  help: `Lists the nodes that published a heartbeat in the last few seconds (every node
publishes one every 5 s into the ephemeral store; with a shared Redis that is the whole
cluster). Without a shared Redis only a server reached through its admin API is listed.

Example:
  deno task cli nodes`,
}, {
  usage: "nodes [--format text|json]",
  query: async (_args, _paging, admin) => (await admin()).nodes(),
  headers: [
    "NODE_ID",
    "ADDRESS",
    "VERSION",
    "UPTIME_S",
    "CONNECTIONS",
    "FRAMES_PER_S",
    "HEARTBEAT",
  ],
  row: (n) => [
    n.nodeId,
    n.address,
    n.version,
    n.uptimeSeconds,
    n.connections,
    n.framesPerSecond,
    n.lastHeartbeatAt,
  ],
});

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
    const delivery = await (await ctx.admin()).delivery(args.positionals[0]);
    return printAs(ctx, format, delivery, (d) =>
      keyValues([
        ["device_id", d.deviceId],
        ["depth", d.depth],
        ["oldest", d.oldestAt],
        ["in_flight", d.inFlight],
        ["redelivered", d.redelivered],
        ["online", d.online],
        ["node", d.nodeId],
      ]));
  },
};

export const auditCommand: Command = listCommand({
  name: "audit",
  summary: "the operator audit log, newest first",
  help: `Lists operator actions (console, CLI and admin API): time, actor, action, target.
Filters match exactly, e.g. --action device.approve or --target device:laptop-01.

Example:
  deno task cli audit --action device.revoke`,
}, {
  usage:
    "audit [--actor A] [--action A] [--target T] [--limit N] [--cursor C] [--format text|json]",
  flags: {
    actor: { type: "string" },
    action: { type: "string" },
    target: { type: "string" },
    ...LIST_FLAGS,
  },
  query: async (args, paging, admin) =>
    (await admin()).audit({
      actor: stringFlag(args, "actor"),
      action: stringFlag(args, "action"),
      target: stringFlag(args, "target"),
      ...paging,
    }),
  headers: ["RECORDED_AT", "ACTOR", "ACTION", "TARGET"],
  row: (a) => [a.recordedAt, a.actor, a.action, a.target],
});
