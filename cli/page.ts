/**
 * The one way the CLI reads and prints a listing: parse the arguments (with `--format`), read
 * the paging flags, ask the operator actions, print JSON or an aligned table.
 */
import { type FlagSpec, formatFlag, pageFlags, parseCommand, type ParsedArgs } from "./args.ts";
import type { Command } from "./command.ts";
import type { CliContext } from "./context.ts";
import { table, toJson } from "./format.ts";
import type { AdminOps } from "../admin/ops.ts";
import type { Page } from "../storage/mod.ts";

type Out = Pick<CliContext, "out" | "note">;

/** Prints `value` as JSON, or as `text(value)` in text format. Returns exit code 0. */
export function printAs<T>(
  ctx: Out,
  format: "text" | "json",
  value: T,
  text: (value: T) => string,
): number {
  ctx.out(format === "json" ? toJson(value) : text(value));
  return 0;
}

/**
 * Prints `page` as JSON (`{items, nextCursor}`) or as a table of `row(item)` under `headers`;
 * in text, the next page's cursor goes to stderr so stdout stays the table. Returns exit code 0.
 */
export function printPage<T>(
  ctx: Out,
  format: "text" | "json",
  page: Page<T>,
  headers: string[],
  row: (item: T) => unknown[],
): number {
  printAs(
    ctx,
    format,
    { items: page.items, nextCursor: page.nextCursor },
    (p) => table(headers, p.items.map(row)),
  );
  if (format === "text" && page.nextCursor) ctx.note(`more: --cursor ${page.nextCursor}`);
  return 0;
}

/** Prints the notes of an operator action (`note: …` lines on stderr). */
export function printNotes(ctx: Pick<CliContext, "note">, notes: readonly string[]): void {
  for (const note of notes) ctx.note(`note: ${note}`);
}

/** What a listing reads and how its rows look. */
export interface ListSpec<T> {
  usage: string;
  /** The flags besides `--format` (a paged listing spreads LIST_FLAGS in). */
  flags?: Record<string, FlagSpec>;
  positionals?: string[];
  /**
   * Reads the listing: a page (printed with its next cursor) or a plain list. `paging` is the
   * `--limit` and `--cursor` given (undefined when absent or not a flag of this listing);
   * `admin` opens the operator actions (check the arguments first, so a usage error opens
   * nothing); `note` writes a line on stderr, beside the listing.
   */
  query(
    args: ParsedArgs,
    paging: { limit: number | undefined; cursor: string | undefined },
    admin: () => Promise<AdminOps>,
    note: (text: string) => void,
  ): Promise<Page<T> | T[]>;
  headers: string[];
  row: (item: T) => unknown[];
}

/** Runs a listing: parse `argv`, query, print as `--format` says. Resolves to exit code 0. */
export async function runList<T>(
  argv: string[],
  ctx: CliContext,
  spec: ListSpec<T>,
): Promise<number> {
  const args = parseCommand(argv, {
    usage: spec.usage,
    positionals: spec.positionals,
    flags: { format: { type: "string" }, ...spec.flags },
  });
  const format = formatFlag(args, spec.usage);
  const paging = pageFlags(args, spec.usage);
  const result = await spec.query(args, paging, () => ctx.admin(), (text) => ctx.note(text));
  if (Array.isArray(result)) {
    return printAs(ctx, format, result, (items) => table(spec.headers, items.map(spec.row)));
  }
  return printPage(ctx, format, result, spec.headers, spec.row);
}

/** A command that is one listing. */
export function listCommand<T>(
  about: { name: string; summary: string; help: string },
  spec: ListSpec<T>,
): Command {
  return { ...about, usage: spec.usage, run: (argv, ctx) => runList(argv, ctx, spec) };
}
