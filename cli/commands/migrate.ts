/** `migrate`: applies pending schema migrations, one progress line per file. */
import { parseCommand } from "../args.ts";
import type { Command } from "../command.ts";
import { migrate, migrationStatus } from "../../storage/mod.ts";

const usage = "migrate";

export const migrateCommand: Command = {
  name: "migrate",
  summary: "apply pending database migrations",
  usage,
  help: `Applies every pending file of migrations/ in order, each in its own transaction, under an
advisory lock (a second process migrating at the same time waits). Refuses a database whose
recorded checksums differ from the files. Progress goes to stderr, one line per file.

Example:
  deno task cli migrate`,
  async run(argv, ctx) {
    parseCommand(argv, { usage });
    const db = await ctx.db();
    const before = await migrationStatus(db);
    if (before.unknown.length > 0) {
      ctx.note(
        `warning: the database records migrations this code does not have: ` +
          `${before.unknown.join(", ")} (it was migrated by a newer version)`,
      );
    }
    const started = performance.now();
    const applied = await migrate(db, {
      onProgress: (p) => ctx.note(`[${p.index}/${p.total}] applying ${p.name}`),
    });
    const ms = Math.round(performance.now() - started);
    if (applied.length === 0) {
      ctx.out(`database is up to date (${before.applied.length} migrations applied)`);
    } else {
      ctx.out(`applied ${applied.length} migration${applied.length === 1 ? "" : "s"} in ${ms} ms`);
      for (const name of applied) ctx.out(`  ${name}`);
    }
    return 0;
  },
};
