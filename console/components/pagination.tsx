/** Keyset pagination: "first page" and "next page" links that keep the current filters. */
import { href } from "./format.ts";

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
