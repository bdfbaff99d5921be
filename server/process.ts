/**
 * What the entry points (`deno task serve`, `deno task console`) share when they run as a
 * process: loading the configuration with a one-message failure, and waiting for the signal
 * that stops them.
 *
 * @module
 */
import { type Config, ConfigError, loadConfig, unknownVariableWarnings } from "./config/mod.ts";

/**
 * Loads the configuration; a ConfigError is printed on stderr and yields null (the caller exits
 * with code 2). Any other error propagates.
 */
export async function loadConfigOrReport(): Promise<Config | null> {
  for (const warning of unknownVariableWarnings(Deno.env.toObject())) console.error(warning);
  try {
    return await loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message);
      return null;
    }
    throw err;
  }
}

/** Resolves on the first SIGINT or SIGTERM, removing its listeners again. */
export async function untilStopSignal(): Promise<void> {
  const done = Promise.withResolvers<void>();
  const onSignal = () => done.resolve();
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  await done.promise;
  Deno.removeSignalListener("SIGINT", onSignal);
  Deno.removeSignalListener("SIGTERM", onSignal);
}
