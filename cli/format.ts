/**
 * Output helpers: aligned text tables, key=value lines, CSV and JSON. Stored text can come from
 * clients (handles, display names), so every text cell has its control characters escaped
 * before it reaches the terminal; JSON output escapes them by itself.
 */
import { bytesToHex } from "@noble/hashes/utils.js";

/** Escapes C0/C1 control characters and backslashes so stored text cannot drive the terminal. */
export function safeText(value: string): string {
  // deno-lint-ignore no-control-regex
  return value.replace(/[\\\u0000-\u001f\u007f-\u009f]/g, (c) => {
    if (c === "\\") return "\\\\";
    if (c === "\n") return "\\n";
    if (c === "\t") return "\\t";
    if (c === "\r") return "\\r";
    return `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`;
  });
}

/** Lowercase hex of bytes. */
export const hex: (bytes: Uint8Array) => string = bytesToHex;

/** A cell value as text: dates RFC 3339, null as "-". */
export function cell(value: unknown): string {
  if (value === null || value === undefined) return "-";
  if (value instanceof Date) return value.toISOString();
  if (value instanceof Uint8Array) return hex(value);
  return safeText(String(value));
}

/** Display width: code points, so non-ASCII names still line up in most terminals. */
function width(text: string): number {
  return [...text].length;
}

/** An aligned table: a header row, then one line per row, columns two spaces apart. */
export function table(headers: string[], rows: unknown[][]): string {
  const text = rows.map((row) => row.map(cell));
  const widths = headers.map((h, i) => Math.max(width(h), ...text.map((r) => width(r[i] ?? ""))));
  const line = (cells: string[]) =>
    cells.map((c, i) => i === cells.length - 1 ? c : c + " ".repeat(widths[i] - width(c)))
      .join("  ").trimEnd();
  return [line(headers), ...text.map(line)].join("\n");
}

/** `key=value` lines, values escaped like table cells. */
export function keyValues(pairs: [string, unknown][]): string {
  return pairs.map(([k, v]) => `${k}=${cell(v)}`).join("\n");
}

/** JSON with byte arrays as hex and dates as RFC 3339. */
export function toJson(value: unknown, indent = 2): string {
  return JSON.stringify(
    value,
    function (this: unknown, key: string, v: unknown) {
      const raw = (this as Record<string, unknown>)[key];
      if (raw instanceof Uint8Array) return hex(raw);
      if (raw instanceof Date) return raw.toISOString();
      return v;
    },
    indent,
  );
}
