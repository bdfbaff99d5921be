/**
 * The admin token: constant-time comparison, and what happens when none is configured
 * (the console then refuses every address but loopback and makes a start-up token).
 */
import { randomBytes } from "node:crypto";
import { isLoopbackHost } from "../protocol/net.ts";
import { ProblemError } from "../protocol/errors.ts";

/** The one constant-time secret comparison (protocol/crypto.ts). */
export { tokenMatches } from "../protocol/crypto.ts";

/** The console cannot start with this configuration; the message says what to change. */
export class ConsoleConfigError extends ProblemError {
  constructor(message: string) {
    super("Invalid Configuration", 500, message, { fatal: true });
    this.name = "ConsoleConfigError";
  }
}

/** Refuses a non-loopback console bind when no admin token is configured. */
export function checkBindAllowed(hostname: string, token: string | null): void {
  if (token === null && !isLoopbackHost(hostname)) {
    throw new ConsoleConfigError(
      `the admin console refuses to listen on ${hostname} without an admin token: ` +
        `set [admin] token in commucat.toml (or COMMUCAT_ADMIN_TOKEN), ` +
        `or bind console_bind to loopback (127.0.0.1)`,
    );
  }
}

/** A fresh random sign-in token for a run without a configured one. */
export function generateStartupToken(): string {
  return randomBytes(24).toString("base64url");
}

/**
 * Keeps the start-up token in `<dataDir>/console-token`, readable only by the owner, so it never
 * reaches the log. Returns the file's path.
 */
export async function writeStartupToken(dataDir: string, token: string): Promise<string> {
  await Deno.mkdir(dataDir, { recursive: true });
  const path = `${dataDir.replace(/\/+$/, "")}/console-token`;
  await Deno.writeTextFile(path, token + "\n", { mode: 0o600 });
  await Deno.chmod(path, 0o600); // mode applies only on create; the file may be older
  return path;
}
