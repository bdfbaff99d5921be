/** `groups list | show <id>`: chat groups and their rosters. */
import {
  formatFlag,
  LIST_FLAGS,
  pageFlags,
  parseCommand,
  stringFlag,
  UsageError,
} from "../args.ts";
import { printPage } from "../page.ts";
import type { Command } from "../command.ts";
import { keyValues, table, toJson } from "../format.ts";
import { NotFound } from "../../storage/mod.ts";

const listUsage = "groups list [--search TEXT] [--limit N] [--cursor C] [--format text|json]";
const showUsage = "groups show <group_id> [--format text|json]";
const usage = [listUsage, showUsage].join("\n");

export const groupsCommand: Command = {
  name: "groups",
  summary: "list groups, show a group's roster and membership history",
  usage,
  help: `list   groups with their owner device, relay flag and member count; --search matches the
       start of group ids; pages of --limit rows (1..500, default 50), next cursor on stderr
show   one group: its fields, its roster (device, role, joined) and its membership history

Examples:
  deno task cli groups list
  deno task cli groups show grp-7f3a --format json`,
  async run(argv, ctx) {
    const [sub, ...rest] = argv;
    switch (sub) {
      case "list": {
        const args = parseCommand(rest, { usage: listUsage, flags: LIST_FLAGS });
        const format = formatFlag(args, listUsage);
        const paging = pageFlags(args, listUsage);
        const page = await (await ctx.storage()).groups.list({
          search: stringFlag(args, "search"),
          ...paging,
        });
        return printPage(
          ctx,
          format,
          page,
          ["GROUP_ID", "OWNER_DEVICE", "RELAY", "MEMBERS", "CREATED"],
          (g) => [g.id, g.ownerDeviceId, g.relay, g.memberCount, g.createdAt],
        );
      }
      case "show": {
        const args = parseCommand(rest, {
          usage: showUsage,
          positionals: ["group_id"],
          flags: { format: { type: "string" } },
        });
        const [id] = args.positionals;
        const format = formatFlag(args, showUsage);
        const storage = await ctx.storage();
        const group = await storage.groups.get(id);
        if (!group) throw new NotFound("group", id);
        const roster = await storage.groups.roster(id);
        const trail = await storage.groups.auditTrail(id, { limit: 100 });
        if (format === "json") {
          ctx.out(toJson({ group, roster, history: trail.items }));
          return 0;
        }
        ctx.out(keyValues([
          ["group_id", group.id],
          ["owner_device", group.ownerDeviceId],
          ["relay", group.relay],
          ["members", group.memberCount],
          ["created", group.createdAt],
        ]));
        ctx.out("");
        ctx.out(table(
          ["DEVICE_ID", "ROLE", "JOINED"],
          roster.map((m) => [m.deviceId, m.role, m.joinedAt]),
        ));
        ctx.out("");
        ctx.out(table(
          ["RECORDED_AT", "ACTION", "DEVICE_ID", "ROLE", "ACTOR"],
          trail.items.map((e) => [e.recordedAt, e.action, e.deviceId, e.role, e.actor]),
        ));
        if (trail.nextCursor) ctx.note("history: only the latest 100 entries are shown");
        return 0;
      }
      case undefined:
        throw new UsageError("missing subcommand: list or show", listUsage);
      default:
        throw new UsageError(
          `unknown subcommand ${JSON.stringify(sub)}: expected list or show`,
          listUsage,
        );
    }
  },
};
