/**
 * The operator CLI: `deno task cli <command> [arguments]`. This module holds the command table
 * and `runCli`, which turns every outcome into an exit code: 0 ok, 1 failure (with the guide's
 * troubleshooting hint for storage and Redis failures), 2 usage (with a one-line usage hint).
 */
import leven from "leven";
import { UsageError, wantsHelp } from "./args.ts";
import { type Command, PROGRAM } from "./command.ts";
import { CliContext, CliFailure } from "./context.ts";
import { analyticsCommand } from "./commands/analytics.ts";
import { diagnoseCommand } from "./commands/diagnose.ts";
import { auditCommand, nodesCommand, queueCommand } from "./commands/cluster.ts";
import {
  approveDeviceCommand,
  devicesCommand,
  rejectDeviceCommand,
  revokeDeviceCommand,
} from "./commands/devices.ts";
import { genKeysCommand } from "./commands/gen_keys.ts";
import { groupsCommand } from "./commands/groups.ts";
import { keyEventsCommand } from "./commands/key_events.ts";
import { migrateCommand } from "./commands/migrate.ts";
import { peersCommand } from "./commands/peers.ts";
import { rotateKeysCommand } from "./commands/rotate_keys.ts";
import { rotateServerKeyCommand } from "./commands/rotate_server_key.ts";
import { registerUserCommand, setDeviceLimitCommand, usersCommand } from "./commands/users.ts";
import { ConfigError } from "../server/config/mod.ts";
import { redactUrlPassword } from "../server/log.ts";
import { LedgerError } from "../storage/ledger.ts";
import { DbFailure, StorageError, troubleshootingHint } from "../storage/mod.ts";

export { UsageError } from "./args.ts";
export type { Command } from "./command.ts";

/** Every command, in the order the help lists them. */
export const COMMANDS: readonly Command[] = [
  migrateCommand,
  registerUserCommand,
  usersCommand,
  setDeviceLimitCommand,
  rotateKeysCommand,
  devicesCommand,
  approveDeviceCommand,
  rejectDeviceCommand,
  revokeDeviceCommand,
  keyEventsCommand,
  queueCommand,
  peersCommand,
  groupsCommand,
  nodesCommand,
  auditCommand,
  analyticsCommand,
  diagnoseCommand,
  genKeysCommand,
  rotateServerKeyCommand,
];

/** The global help: every command with its summary. */
export function globalHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length)) + 2;
  return [
    `usage: ${PROGRAM} <command> [arguments]`,
    "",
    "Operator tool over the same configuration (commucat.toml, COMMUCAT_*) and storage as the",
    "server. When a running server holds the embedded database, or with --server URL before",
    "the command, it asks that server's admin API instead (same commands, same output).",
    "Commands:",
    "",
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}${c.summary}`),
    "",
    `Run "${PROGRAM} <command> --help" for a command's arguments and an example.`,
    "Exit codes: 0 ok, 1 failure, 2 usage error.",
  ].join("\n");
}

/** A command's help: its usage line(s), then its description. */
export function commandHelp(command: Command): string {
  const lines = command.usage.split("\n").map((line, i) =>
    `${i === 0 ? "usage: " : "       "}${PROGRAM} ${line}`
  );
  return [...lines, "", command.help].join("\n");
}

/** The command an unknown name was probably meant to be, or null. */
export function closestCommand(name: string): string | null {
  let best: { name: string; d: number } | null = null;
  for (const c of COMMANDS) {
    const d = c.name.startsWith(name) || name.startsWith(c.name) ? 1 : leven(name, c.name);
    if (!best || d < best.d) best = { name: c.name, d };
  }
  return best && best.d <= Math.max(2, Math.floor(name.length / 3)) ? best.name : null;
}

function findCommand(name: string): Command | undefined {
  return COMMANDS.find((c) => c.name === name);
}

/** Why an error happened, in one or more lines, with secrets in URLs masked. */
function describe(err: unknown): string {
  if (err instanceof ConfigError) return `configuration error: ${err.message}`;
  const message = err instanceof Error ? err.message : String(err);
  return `error: ${redactUrlPassword(message)}`;
}

/**
 * Runs the CLI with `argv` (the arguments after the program) and returns the exit code.
 * Output goes to stdout; errors, hints, notes and progress to stderr.
 */
export async function runCli(
  argv: string[],
  env: Record<string, string | undefined> = Deno.env.toObject(),
): Promise<number> {
  let server: string | null = null;
  if (argv[0] === "--server" || argv[0]?.startsWith("--server=")) {
    const value = argv[0] === "--server" ? argv[1] : argv[0].slice("--server=".length);
    if (!value || !/^https?:\/\/[^/\s]+\/?$/.test(value)) {
      return usageFailure(
        `--server needs a URL such as http://127.0.0.1:8080, got ${JSON.stringify(value ?? "")}`,
        `${PROGRAM} --server URL <command> [arguments]`,
      );
    }
    server = value;
    argv = argv.slice(argv[0] === "--server" ? 2 : 1);
  }
  const [name, ...rest] = argv;
  if (name === undefined || name === "help" || name === "--help" || name === "-h") {
    const topic = name === "help" && rest[0] !== undefined ? findCommand(rest[0]) : undefined;
    if (name === "help" && rest[0] !== undefined && !topic) {
      return usageFailure(`unknown command ${JSON.stringify(rest[0])}`, `${PROGRAM} help`);
    }
    if (topic) console.log(commandHelp(topic));
    else if (name === undefined) {
      console.error(globalHelp());
      return 2;
    } else console.log(globalHelp());
    return 0;
  }
  const command = findCommand(name);
  if (!command) {
    const guess = closestCommand(name);
    return usageFailure(
      `unknown command ${JSON.stringify(name)}${guess ? `; did you mean "${guess}"?` : ""}`,
      `${PROGRAM} <command> [arguments]; run "${PROGRAM} help" for the list`,
    );
  }
  if (wantsHelp(rest)) {
    console.log(commandHelp(command));
    return 0;
  }
  const ctx = new CliContext(env);
  ctx.server = server;
  try {
    return await command.run(rest, ctx);
  } catch (err) {
    if (err instanceof UsageError) {
      return usageFailure(err.message, `${PROGRAM} ${err.usage}`, command.name);
    }
    console.error(describe(err));
    const hint = troubleshootingHint(err);
    if (hint) console.error(`hint: ${hint}`);
    if (err instanceof DbFailure && err.code === "42P01") {
      console.error(`hint: a table is missing: run ${PROGRAM} migrate`);
    }
    if (
      !(err instanceof StorageError || err instanceof ConfigError || err instanceof CliFailure ||
        err instanceof LedgerError) && env.COMMUCAT_LOG_LEVEL === "debug" && err instanceof Error
    ) {
      console.error(err.stack);
    }
    return 1;
  } finally {
    await ctx.close();
  }
}

function usageFailure(message: string, usage: string, command?: string): number {
  console.error(`error: ${message}`);
  console.error(`usage: ${usage}`);
  if (command) console.error(`run "${PROGRAM} ${command} --help" for details`);
  return 2;
}
