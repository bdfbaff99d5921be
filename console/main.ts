/**
 * `deno task console`: serves the admin console on its own, against the shared storage of a
 * running deployment (Postgres via `postgres_dsn` and Redis via `redis_url`). The embedded
 * database belongs to one process, so without a DSN the relay server must host the console
 * (`deno task serve` serves it on `console_bind`).
 *
 * @module
 */
import { loadConfigOrReport, untilStopSignal } from "../server/process.ts";
import type { Config } from "../server/config/mod.ts";
import { log } from "../server/log.ts";
import { openStorage } from "../storage/mod.ts";
import { troubleshootingHint } from "../storage/errors.ts";
import { startConsole } from "./server.ts";
import { ConsoleConfigError } from "./auth.ts";

/** Why this configuration cannot run a stand-alone console, or null when it can. */
export function standaloneProblem(config: Config): string | null {
  if (!config.storage.postgresDsn) {
    return "the console cannot run on its own with the embedded database: only one process " +
      "can open it, and that is the relay server. Run `deno task serve`, which serves the " +
      `console on console_bind (${config.server.consoleBind.hostname}:` +
      `${config.server.consoleBind.port}), or set [storage] postgres_dsn ` +
      "(COMMUCAT_PG_DSN) and redis_url (COMMUCAT_REDIS_URL) to share real Postgres and Redis.";
  }
  if (!config.storage.redisUrl) {
    return "the console cannot run on its own without Redis: approvals, revocations and " +
      "group changes reach the relay nodes over the Redis bus. Set [storage] redis_url " +
      "(COMMUCAT_REDIS_URL) to the relay's Redis, or run `deno task serve`, which serves the " +
      "console in the relay process.";
  }
  return null;
}

/** Runs the stand-alone console until SIGINT/SIGTERM; returns the exit code. */
export async function main(): Promise<number> {
  const config = await loadConfigOrReport();
  if (!config) return 2;
  const problem = standaloneProblem(config);
  if (problem) {
    console.error(`commucat console: ${problem}`);
    return 2;
  }
  let storage;
  try {
    storage = await openStorage({
      postgresDsn: config.storage.postgresDsn,
      redisUrl: config.storage.redisUrl,
      dataDir: config.server.dataDir,
      staticPeers: config.federation.peers,
      log: log.child({ component: "console" }),
    });
  } catch (err) {
    console.error(`commucat console: ${(err as Error).message}`);
    const hint = troubleshootingHint(err);
    if (hint) console.error(hint);
    return 1;
  }
  let running;
  try {
    running = await startConsole({
      config,
      storage,
      nodeId: `console-${Deno.hostname()}`,
      log: log.child({ component: "console" }),
    });
  } catch (err) {
    await storage.close();
    console.error(`commucat console: ${(err as Error).message}`);
    return err instanceof ConsoleConfigError ? 2 : 1;
  }
  console.log(`admin console listening on ${running.url}`);
  if (running.startupTokenFile) {
    console.log(`no admin token configured: sign in with the token in ${running.startupTokenFile}`);
  }
  await untilStopSignal();
  await running.stop();
  await storage.close();
  return 0;
}

if (import.meta.main) {
  Deno.exit(await main());
}
