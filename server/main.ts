/**
 * The server's former entry point, kept for tools that start `deno run -A server/main.ts`: the
 * same process as `deno task serve` (app/serve.ts, where the relay and the console are wired).
 *
 * @module
 */
import { main } from "../app/serve.ts";

if (import.meta.main) {
  Deno.exit(await main());
}
