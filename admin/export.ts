/**
 * Key-event exports, one format for the console, the CLI and the admin API: CSV safe to open in
 * a spreadsheet (RFC 4180, CRLF, every cell quoted, formula guard) and JSON, with the same
 * columns in the same order.
 */
import type { KeyEventView } from "./views.ts";

/** The exported columns, in order. */
export const KEY_EVENT_COLUMNS = [
  "event_id",
  "device_id",
  "kind",
  "public_key",
  "actor",
  "recorded_at",
] as const;

type Row = Record<(typeof KEY_EVENT_COLUMNS)[number], string>;

/** One exported row, as both formats carry it. */
export function exportRow(e: KeyEventView): Row {
  return {
    event_id: e.eventId,
    device_id: e.deviceId,
    kind: e.kind,
    public_key: e.publicKey,
    actor: e.actor,
    recorded_at: e.recordedAt,
  };
}

/**
 * A CSV cell: quoted, quotes doubled, and a leading `'` before anything a spreadsheet would run
 * as a formula (= + - @, tab or carriage return). The one formula guard of CommuCat's exports.
 */
export function csvCell(value: string): string {
  const safe = /^[=+\-@\t\r]/.test(value) ? `'${value}` : value;
  return `"${safe.replace(/"/g, '""')}"`;
}

/** The header line of a CSV export (with its CRLF). */
export const CSV_HEADER = KEY_EVENT_COLUMNS.join(",") + "\r\n";

/** One CSV line of an event (with its CRLF). */
export function csvLine(e: KeyEventView): string {
  const row = exportRow(e);
  return KEY_EVENT_COLUMNS.map((k) => csvCell(row[k])).join(",") + "\r\n";
}

/** The events as CSV with a header row, CRLF line ends (RFC 4180). */
export function toCsv(events: KeyEventView[]): string {
  return CSV_HEADER + events.map(csvLine).join("");
}

/** One event as a JSON object on one line (for streaming exports). */
export function jsonRow(e: KeyEventView): string {
  return JSON.stringify(exportRow(e));
}

/** The events as pretty JSON. */
export function toJson(events: KeyEventView[]): string {
  return JSON.stringify(events.map(exportRow), null, 2) + "\n";
}

/** A file name that says what is inside: key-events[-device]-YYYYMMDD-HHMMSS.ext. */
export function exportFileName(deviceId: string | null, at: Date, ext: "csv" | "json"): string {
  const device = deviceId ? `-${deviceId.replace(/[^A-Za-z0-9._-]/g, "_").slice(0, 64)}` : "";
  const stamp = at.toISOString().replace(/[-:]/g, "").replace("T", "-").slice(0, 15);
  return `key-events${device}-${stamp}.${ext}`;
}
