/** Prints one page of a paged listing the same way for every list command. */
import type { CliContext } from "./context.ts";
import { table, toJson } from "./format.ts";
import type { Page } from "../storage/mod.ts";

/**
 * Prints `page` as JSON (`{items, nextCursor}`) or as a table of `row(item)` under `headers`;
 * in text, the next page's cursor goes to stderr so stdout stays the table. Returns exit code 0.
 */
export function printPage<T>(
  ctx: Pick<CliContext, "out" | "note">,
  format: "text" | "json",
  page: Page<T>,
  headers: string[],
  row: (item: T) => unknown[],
): number {
  if (format === "json") {
    ctx.out(toJson({ items: page.items, nextCursor: page.nextCursor }));
    return 0;
  }
  ctx.out(table(headers, page.items.map(row)));
  if (page.nextCursor) ctx.note(`more: --cursor ${page.nextCursor}`);
  return 0;
}
