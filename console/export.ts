/** Key-event exports: CSV (safe to open in a spreadsheet) and JSON. */
import type { DeviceKeyEvent } from "../storage/types.ts";
import { hex } from "./components/format.ts";

/** One exported row, as both formats carry it. */
export function exportRow(e: DeviceKeyEvent) {
  return {
    event_id: e.eventId,
    device_id: e.deviceId,
    kind: e.kind,
    public_key: hex(e.publicKey),
    actor: e.actor,
    recorded_at: e.recordedAt.toISOString(),
  };
}

/**
 * A CSV cell: quoted, quotes doubled, and a leading `'` before anything a spreadsheet would run
 * as a formula (= + - @, and tab or carriage return).
 */
export function csvCell(value: string): string {
  const safe = /^[=+\-@\t\r]/.test(value) ? `'${value}` : value;
  return `"${safe.replace(/"/g, '""')}"`;
}

/** The events as CSV with a header row, CRLF line ends (RFC 4180). */
export function toCsv(events: DeviceKeyEvent[]): string {
  const header = ["event_id", "device_id", "kind", "public_key", "actor", "recorded_at"];
  const lines = [header.join(",")];
  for (const e of events) {
    const row = exportRow(e);
    lines.push(header.map((k) => csvCell(row[k as keyof typeof row])).join(","));
  }
  return lines.join("\r\n") + "\r\n";
}

/** The events as pretty JSON. */
export function toJson(events: DeviceKeyEvent[]): string {
  return JSON.stringify(events.map(exportRow), null, 2) + "\n";
}

/** A file name that says what is inside: key-events[-device]-YYYYMMDD-HHMMSS.ext. */
export function exportFileName(deviceId: string | null, at: Date, ext: "csv" | "json"): string {
  const device = deviceId ? `-${deviceId.replace(/[^A-Za-z0-9._-]/g, "_").slice(0, 64)}` : "";
  const stamp = at.toISOString().replace(/[-:]/g, "").replace("T", "-").slice(0, 15);
  return `key-events${device}-${stamp}.${ext}`;
}
