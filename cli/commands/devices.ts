/** `devices`, `approve-device`, `reject-device`, `revoke-device`. */
import { choiceFlag, LIST_FLAGS, parseCommand, stringFlag } from "../args.ts";
import { listCommand, printNotes } from "../page.ts";
import type { Command } from "../command.ts";
import type { CliContext } from "../context.ts";
import { keyValues } from "../format.ts";
import type { DeviceStatus } from "../../storage/mod.ts";

const STATUSES = ["pending", "active", "revoked"] as const;
const listUsage =
  "devices [--status pending|active|revoked] [--awaiting] [--user ID|HANDLE] [--search TEXT] " +
  "[--limit N] [--cursor C] [--format text|json]";

const shortKey = (key: string | null) => key ? `${key.slice(0, 16)}…` : null;

export const devicesCommand: Command = listCommand({
  name: "devices",
  summary: "list devices (filter by status, awaiting approval, user, text)",
  help: `Lists devices, newest first, with their owner's handle and status. --awaiting lists
only what waits for an operator: pending devices and active devices with a new key waiting
for approval (PENDING_KEY set); approve-device or reject-device decides either kind. Filters
combine: --awaiting --status active lists only the waiting new keys. --user lists one user's
devices, by user id or handle (who paired which: the key event of a paired device names it,
see key-events --device ID). --search matches the
start of device ids and handles (case-insensitive). Pages hold --limit rows (1..500, default
50); when there are more, the cursor of the next page is printed on stderr. Text output
shortens keys; --format json has them whole.

Examples:
  deno task cli devices --awaiting
  deno task cli devices --status pending`,
}, {
  usage: listUsage,
  flags: {
    status: { type: "string" },
    awaiting: { type: "boolean" },
    user: { type: "string" },
    ...LIST_FLAGS,
  },
  async query(args, paging, open, note) {
    const status = choiceFlag<DeviceStatus>(args, "status", STATUSES, listUsage);
    const admin = await open();
    // --user takes a user id or a handle (a user's devices, e.g. after pairings).
    let userId = stringFlag(args, "user");
    if (userId !== undefined) {
      const wanted = userId;
      const named = await admin.users({ search: wanted, limit: 50 });
      userId = named.items.find((u) => u.handle === wanted)?.id ?? wanted;
      const limit = await admin.deviceLimit(userId).catch(() => null);
      if (limit) {
        note(
          `user ${limit.handle}: ${limit.devices} devices count against its limit of ${
            limit.maxDevices ?? "[limits] max_devices_per_user"
          } (set-device-limit ${limit.handle} N)`,
        );
      }
    }
    return await admin.devices({
      status,
      awaitingApproval: args.flags.awaiting === true,
      userId,
      search: stringFlag(args, "search"),
      ...paging,
    });
  },
  headers: ["DEVICE_ID", "HANDLE", "USER_ID", "STATUS", "PUBLIC_KEY", "PENDING_KEY", "LAST_SEEN"],
  row: (d) => [
    d.id,
    d.userHandle,
    d.userId,
    d.status,
    shortKey(d.publicKey),
    shortKey(d.pendingPublicKey),
    d.lastSeenAt,
  ],
});

type Action = "approve" | "reject" | "revoke";

/** One of the three status commands; they differ in the repo call and who is told. */
function statusCommand(action: Action, summary: string, help: string): Command {
  const name = `${action}-device`;
  const usage = `${name} <device_id>`;
  return {
    name,
    summary,
    usage,
    help,
    async run(argv: string[], ctx: CliContext) {
      const [id] = parseCommand(argv, { usage, positionals: ["device_id"] }).positionals;
      const admin = await ctx.admin();
      const run = {
        approve: () => admin.approveDevice(id),
        reject: () => admin.rejectDevice(id),
        revoke: () => admin.revokeDevice(id),
      }[action];
      const { device, event, notes } = await run();
      printNotes(ctx, notes);
      ctx.out(keyValues([
        ["device_id", device.id],
        ["status", device.status],
        ["public_key", device.publicKey],
        ["pending_public_key", device.pendingPublicKey],
        ["event", event.kind],
      ]));
      return 0;
    },
  };
}

export const approveDeviceCommand = statusCommand(
  "approve",
  "approve a pending device or its pending key",
  `Approves a device waiting for approval (its next handshake succeeds), or the new key a
device asked to rotate to. Writes a key event and an audit entry and tells running servers.

Example:
  deno task cli approve-device laptop-01`,
);

export const rejectDeviceCommand = statusCommand(
  "reject",
  "reject a pending device or its pending key",
  `Rejects a pending device (it becomes revoked) or drops the pending key of an active device,
which keeps its current key. Writes a key event and an audit entry.

Example:
  deno task cli reject-device laptop-01`,
);

export const revokeDeviceCommand = statusCommand(
  "revoke",
  "revoke a device and end its live connections",
  `Revokes a device: its handshakes are refused from now on, and its live connections end on
every node (an interrupt key and a control event over Redis). Writes a key event and an audit
entry. A revoked device cannot be approved again; register a new device instead.

Example:
  deno task cli revoke-device laptop-01`,
);
