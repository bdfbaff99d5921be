/**
 * Argument parsing for the operator CLI: strict flags (an unknown flag is a usage error),
 * counted positionals, and value checks that name the flag and the bad value. Every problem
 * becomes a `UsageError`, which the entry point turns into exit code 2 and a one-line hint.
 */
import { parseArgs } from "node:util";
import { ProblemError } from "../protocol/errors.ts";
import { parseKeyText } from "../protocol/ids.ts";

/** A mistake in how the command was typed (exit code 2). */
export class UsageError extends ProblemError {
  constructor(message: string, readonly usage: string) {
    super("Usage Error", 400, message, { fatal: true });
    this.name = "UsageError";
  }
}

/** A flag a command accepts. */
export interface FlagSpec {
  type: "string" | "boolean";
  short?: string;
}

export interface CommandSyntax {
  /** One line: `devices [--status S] [--user ID] …` (without the program name). */
  usage: string;
  flags?: Record<string, FlagSpec>;
  /** Names of the positionals, for messages; `?` suffix marks optional ones. */
  positionals?: string[];
}

export interface ParsedArgs {
  /** Flag values by name (strings or booleans; absent flags are undefined). */
  flags: Record<string, string | boolean | undefined>;
  positionals: string[];
  /** `--help` or `-h` was given: print the help and do nothing else. */
  help: boolean;
}

/** True when argv asks for help before any `--` separator. */
export function wantsHelp(argv: string[]): boolean {
  for (const arg of argv) {
    if (arg === "--") return false;
    if (arg === "--help" || arg === "-h") return true;
  }
  return false;
}

/**
 * Parses a command's arguments. Positionals are checked against `syntax.positionals`: too
 * few or too many is a usage error naming what is missing or extra. A value that starts with
 * `-` can be passed after `--`.
 */
export function parseCommand(argv: string[], syntax: CommandSyntax): ParsedArgs {
  if (wantsHelp(argv)) return { flags: {}, positionals: [], help: true };
  const options: Record<string, { type: "string" | "boolean"; short?: string }> = {};
  for (const [name, spec] of Object.entries(syntax.flags ?? {})) {
    options[name] = spec.short ? { type: spec.type, short: spec.short } : { type: spec.type };
  }
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, strict: true, allowPositionals: true });
  } catch (err) {
    throw new UsageError(describeParseError(err), syntax.usage);
  }
  const names = syntax.positionals ?? [];
  const required = names.filter((n) => !n.endsWith("?")).length;
  const got = parsed.positionals;
  if (got.length < required) {
    const missing = names.slice(got.length, required).map((n) => `<${n}>`).join(" ");
    throw new UsageError(`missing ${missing}`, syntax.usage);
  }
  if (got.length > names.length) {
    const extra = got.slice(names.length).map((v) => JSON.stringify(v)).join(" ");
    throw new UsageError(`unexpected argument ${extra}`, syntax.usage);
  }
  return { flags: parsed.values as ParsedArgs["flags"], positionals: got, help: false };
}

/** node:util's messages are long; say in a few words what was wrong with which option. */
function describeParseError(err: unknown): string {
  const e = err as { code?: string; message?: string };
  const message = e.message ?? String(err);
  const option = /'(-{1,2}[^']*)'/.exec(message)?.[1];
  switch (e.code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION":
      return `unknown option ${option ?? message}` +
        (option ? " (a value starting with '-' goes after '--')" : "");
    case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE":
      return /argument missing/.test(message)
        ? `option ${option?.split(" ")[0] ?? "?"} needs a value`
        : `option ${option ?? "?"} takes no value`;
    default:
      return message;
  }
}

/** The usage error for a missing (`sub` undefined) or unknown subcommand of `names`. */
export function subcommandError(
  sub: string | undefined,
  names: readonly string[],
  usage: string,
): UsageError {
  const expected = names.length === 1
    ? names[0]
    : `${names.slice(0, -1).join(", ")} or ${names[names.length - 1]}`;
  return new UsageError(
    sub === undefined
      ? `missing subcommand: ${expected}`
      : `unknown subcommand ${JSON.stringify(sub)}: expected ${expected}`,
    usage,
  );
}

/** A string flag's value, or undefined when the flag was not given. */
export function stringFlag(args: ParsedArgs, name: string): string | undefined {
  const value = args.flags[name];
  return typeof value === "string" ? value : undefined;
}

/** Checks a value against a fixed set of choices. */
export function oneOf<T extends string>(
  what: string,
  value: string,
  choices: readonly T[],
  usage: string,
): T {
  if ((choices as readonly string[]).includes(value)) return value as T;
  throw new UsageError(
    `invalid ${what} ${JSON.stringify(value)}: expected ${choices.join(", ")}`,
    usage,
  );
}

/** Parses a decimal integer in [min, max]. */
export function intValue(
  what: string,
  value: string,
  min: number,
  max: number,
  usage: string,
): number {
  if (/^\d{1,9}$/.test(value)) {
    const n = Number(value);
    if (n >= min && n <= max) return n;
  }
  throw new UsageError(
    `invalid ${what} ${JSON.stringify(value)}: expected an integer from ${min} to ${max}`,
    usage,
  );
}

/** Parses a 32-byte key: 64 hex characters, or base64 (the key rule of protocol/ids.ts). */
export function hexKey(what: string, value: string, usage: string): Uint8Array {
  const key = parseKeyText(value);
  if (key === null) {
    throw new UsageError(
      `invalid ${what} ${JSON.stringify(value)}: expected 64 hex characters (32 bytes) or base64`,
      usage,
    );
  }
  return key;
}

/** A `--<flag> TIME` value: RFC 3339 (`2025-01-31T12:00:00Z`) or a date; absent → undefined. */
export function timeFlag(args: ParsedArgs, flag: string, usage: string): Date | undefined {
  const value = stringFlag(args, flag);
  if (value === undefined) return undefined;
  const date = new Date(value);
  if (!/^\d{4}-\d{2}-\d{2}/.test(value) || Number.isNaN(date.getTime())) {
    throw new UsageError(
      `invalid --${flag} ${JSON.stringify(value)}: expected an RFC 3339 time such as ` +
        "2025-01-31T12:00:00Z or a date such as 2025-01-31",
      usage,
    );
  }
  return date;
}

/** The flags every paged listing takes: --search, --limit, --cursor and --format. */
export const LIST_FLAGS: Record<string, FlagSpec> = {
  search: { type: "string" },
  limit: { type: "string" },
  cursor: { type: "string" },
  format: { type: "string" },
};

/** A `--<flag> CHOICE` value checked against `choices`; absent → `fallback`. */
export function choiceFlag<T extends string>(
  args: ParsedArgs,
  flag: string,
  choices: readonly T[],
  usage: string,
): T | undefined;
export function choiceFlag<T extends string>(
  args: ParsedArgs,
  flag: string,
  choices: readonly T[],
  usage: string,
  fallback: T,
): T;
export function choiceFlag<T extends string>(
  args: ParsedArgs,
  flag: string,
  choices: readonly T[],
  usage: string,
  fallback?: T,
): T | undefined {
  const value = stringFlag(args, flag);
  return value === undefined ? fallback : oneOf(flag, value, choices, usage);
}

/** `--format text|json` (or the `choices` given), text when absent. */
export function formatFlag(args: ParsedArgs, usage: string): "text" | "json";
export function formatFlag<T extends string>(
  args: ParsedArgs,
  usage: string,
  choices: readonly T[],
): T;
export function formatFlag(
  args: ParsedArgs,
  usage: string,
  choices: readonly string[] = ["text", "json"],
): string {
  return choiceFlag(args, "format", choices, usage, "text");
}

/** A paged listing's `--limit` (1..500; absent leaves the repository's default) and `--cursor`. */
export function pageFlags(
  args: ParsedArgs,
  usage: string,
): { limit: number | undefined; cursor: string | undefined } {
  const limitText = stringFlag(args, "limit");
  const limit = limitText === undefined ? undefined : intValue("limit", limitText, 1, 500, usage);
  return { limit, cursor: stringFlag(args, "cursor") };
}
