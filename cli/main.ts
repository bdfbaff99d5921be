/** Entry point of `deno task cli <command>`; see cli/mod.ts and docs/CLI.md. */
import { runCli } from "./mod.ts";

if (import.meta.main) {
  const code = await runCli(Deno.args);
  // Exit explicitly: a Redis client reconnecting in the background must not keep us alive.
  Deno.exit(code);
}
