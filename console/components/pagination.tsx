/** Keyset pagination: "first page" and "next page" links that keep the current filters. */
import type { ComponentChildren } from "preact";
import { href } from "./format.ts";
import { type Column, Table } from "./table.tsx";
import type { Page } from "../../storage/types.ts";

export function Pagination(
  props: {
    path: string;
    params: Record<string, string | null | undefined>;
    cursor: string | null | undefined;
    nextCursor: string | null;
    cursorParam?: string;
  },
) {
  const name = props.cursorParam ?? "cursor";
  if (!props.cursor && !props.nextCursor) return null;
  return (
    <nav class="pager" aria-label="Pages">
      {props.cursor && (
        <a href={href(props.path, { ...props.params, [name]: null })}>« First page</a>
      )}
      {props.nextCursor && (
        <a rel="next" href={href(props.path, { ...props.params, [name]: props.nextCursor })}>
          Next page »
        </a>
      )}
    </nav>
  );
}

/**
 * A page of rows as a table with its page links, or `empty` when the page has no rows. With
 * `groups`, the page's rows are shown as one table per group (e.g. per user), each under its
 * heading, in the order given.
 */
export function PagedTable<T>(
  props: {
    caption: string;
    columns: Column<T>[];
    page: Page<T>;
    rowClass?: (row: T) => string;
    path: string;
    params: Record<string, string | null | undefined>;
    cursor: string | null | undefined;
    cursorParam?: string;
    empty: ComponentChildren;
    groups?: { key: string; heading: ComponentChildren; caption: string; rows: T[] }[];
  },
) {
  if (props.page.items.length === 0) return <>{props.empty}</>;
  return (
    <>
      {props.groups
        ? props.groups.map((g) => (
          <div class="row-group" data-group={g.key}>
            {g.heading}
            <Table
              caption={g.caption}
              columns={props.columns}
              rows={g.rows}
              rowClass={props.rowClass}
            />
          </div>
        ))
        : (
          <Table
            caption={props.caption}
            columns={props.columns}
            rows={props.page.items}
            rowClass={props.rowClass}
          />
        )}
      <Pagination
        path={props.path}
        params={props.params}
        cursor={props.cursor}
        nextCursor={props.page.nextCursor}
        cursorParam={props.cursorParam}
      />
    </>
  );
}
