/** `register-user` and `users`: create a user, list users. */
import { LIST_FLAGS, parseCommand, stringFlag, UsageError } from "../args.ts";
import type { Command } from "../command.ts";
import { keyValues } from "../format.ts";
import { listCommand } from "../page.ts";

const registerUsage = "register-user <handle> [display_name] [avatar_url]";

export const registerUserCommand: Command = {
  name: "register-user",
  summary: "create a user",
  usage: registerUsage,
  help: `Creates a user with a handle (1 to 64 letters, digits, '.', '_' or '-') and, optionally, a
display name and an avatar URL, stored exactly as given. Prints user_id=… and the stored fields.
A value starting with '-' goes after '--'. The action is written to the operator audit log.

Example:
  deno task cli register-user alice "Alice Liddell" https://example.org/alice.png`,
  async run(argv, ctx) {
    const args = parseCommand(argv, {
      usage: registerUsage,
      positionals: ["handle", "display_name?", "avatar_url?"],
    });
    const [handle, displayName, avatarUrl] = args.positionals;
    const user = await (await ctx.admin()).registerUser({
      handle,
      displayName: displayName ?? null,
      avatarUrl: avatarUrl ?? null,
    });
    ctx.out(keyValues([
      ["user_id", user.id],
      ["handle", user.handle],
      ["display_name", user.displayName],
      ["avatar_url", user.avatarUrl],
    ]));
    return 0;
  },
};

export const usersCommand: Command = listCommand({
  name: "users",
  summary: "list users",
  help: `Lists users in handle order. --search matches the start of the handle (case-insensitive).
Pages hold --limit rows (1..500, default 50); the next page's cursor is printed on stderr.

Example:
  deno task cli users --search ali --format json`,
}, {
  usage: "users [--search TEXT] [--limit N] [--cursor C] [--format text|json]",
  flags: LIST_FLAGS,
  query: async (args, paging, admin) =>
    (await admin()).users({ search: stringFlag(args, "search"), ...paging }),
  headers: ["USER_ID", "HANDLE", "DISPLAY_NAME", "AVATAR_URL", "CREATED"],
  row: (u) => [u.id, u.handle, u.displayName, u.avatarUrl, u.createdAt],
});

const limitUsage = "set-device-limit <user> <N|default>";

export const setDeviceLimitCommand: Command = {
  name: "set-device-limit",
  summary: "raise or lower one user's device limit",
  usage: limitUsage,
  help: `Sets how many devices (pending and active; revoked ones do not count) the user, by
handle or user id, may hold: 1..10000, or "default" for [limits] max_devices_per_user. A pairing
or registration past the limit is refused with "Device Limit Reached"; devices held already
stay. Prints the user, its limit and its device count. Written to the operator audit log
(action user.device-limit).

Examples:
  deno task cli set-device-limit alice 12
  deno task cli set-device-limit alice default`,
  async run(argv, ctx) {
    const args = parseCommand(argv, { usage: limitUsage, positionals: ["user", "limit"] });
    const [user, text] = args.positionals;
    let limit: number | null = null;
    if (text !== "default") {
      if (!/^\d{1,5}$/.test(text) || Number(text) < 1 || Number(text) > 10_000) {
        throw new UsageError(
          `limit must be 1..10000 or "default", got ${JSON.stringify(text)}`,
          limitUsage,
        );
      }
      limit = Number(text);
    }
    const view = await (await ctx.admin()).setDeviceLimit(user, limit);
    ctx.out(keyValues([
      ["user_id", view.userId],
      ["handle", view.handle],
      ["max_devices", view.maxDevices === null ? "default" : String(view.maxDevices)],
      ["devices", String(view.devices)],
    ]));
    return 0;
  },
};
