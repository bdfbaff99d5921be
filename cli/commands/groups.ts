/** `groups list | show <id>`: chat groups and their rosters. */
import { formatFlag, LIST_FLAGS, parseCommand, stringFlag, subcommandError } from "../args.ts";
import { printNotes, runList } from "../page.ts";
import type { Command } from "../command.ts";
import { keyValues, table, toJson } from "../format.ts";

const listUsage = "groups list [--search TEXT] [--limit N] [--cursor C] [--format text|json]";
const showUsage = "groups show <group_id> [--format text|json]";
const removeUsage = "groups remove-member <group_id> <device_id>";
const usage = [listUsage, showUsage, removeUsage].join("\n");

export const groupsCommand: Command = {
  name: "groups",
  summary: "list groups, show a group's roster and history, remove a member",
  usage,
  help: `list   groups with their owner device, relay flag and member count; --search matches the
       start of group ids; pages of --limit rows (1..500, default 50), next cursor on stderr
show   one group: its fields, its roster (device, role, joined) and its membership history
remove-member  removes a device from a group (not its owner); running servers drop its route

Examples:
  deno task cli groups list
  deno task cli groups show grp-7f3a --format json`,
  async run(argv, ctx) {
    const [sub, ...rest] = argv;
    switch (sub) {
      case "list":
        return await runList(rest, ctx, {
          usage: listUsage,
          flags: LIST_FLAGS,
          query: async (args, paging, admin) =>
            (await admin()).groups({ search: stringFlag(args, "search"), ...paging }),
          headers: ["GROUP_ID", "OWNER_DEVICE", "RELAY", "MEMBERS", "CREATED"],
          row: (g) => [g.id, g.ownerDeviceId, g.relay, g.memberCount, g.createdAt],
        });
      case "show": {
        const args = parseCommand(rest, {
          usage: showUsage,
          positionals: ["group_id"],
          flags: { format: { type: "string" } },
        });
        const [id] = args.positionals;
        const format = formatFlag(args, showUsage);
        const { group, roster, history, moreHistory } = await (await ctx.admin()).group(id);
        if (format === "json") {
          ctx.out(toJson({ group, roster, history }));
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
          history.map((e) => [e.recordedAt, e.action, e.deviceId, e.role, e.actor]),
        ));
        if (moreHistory) ctx.note("history: only the latest 100 entries are shown");
        return 0;
      }
      case "remove-member": {
        const args = parseCommand(rest, {
          usage: removeUsage,
          positionals: ["group_id", "device_id"],
        });
        const [groupId, deviceId] = args.positionals;
        const r = await (await ctx.admin()).removeGroupMember(groupId, deviceId);
        printNotes(ctx, r.notes);
        ctx.out(keyValues([["group_id", groupId], ["removed", deviceId]]));
        return 0;
      }
      default:
        throw subcommandError(sub, ["list", "show", "remove-member"], listUsage);
    }
  },
};
