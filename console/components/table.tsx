/** A data table with a caption (for screen readers) and column headers. */
import type { ComponentChildren } from "preact";

export interface Column<T> {
  label: string;
  cell: (row: T) => ComponentChildren;
  /** Right-align numbers. */
  numeric?: boolean;
}

export function Table<T>(
  props: { caption: string; columns: Column<T>[]; rows: T[]; rowClass?: (row: T) => string },
) {
  return (
    <div class="table-wrap">
      <table>
        <caption>{props.caption}</caption>
        <thead>
          <tr>
            {props.columns.map((col) => (
              <th scope="col" class={col.numeric ? "num" : undefined}>{col.label}</th>
            ))}
          </tr>
        </thead>
        <tbody>
          {props.rows.map((row) => (
            <tr class={props.rowClass?.(row)}>
              {props.columns.map((col) => (
                <td class={col.numeric ? "num" : undefined}>{col.cell(row)}</td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** A coloured status word (device, peer, role). */
export function Badge(props: { value: string }) {
  return <span class={`badge badge-${props.value.replace(/[^a-z-]/g, "")}`}>{props.value}</span>;
}
