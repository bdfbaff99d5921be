/** `register-user` and `users`: create a user, list users. */
import { LIST_FLAGS, parseCommand, stringFlag } from "../args.ts";
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
