/** Plain-text formatting shared by pages and exports. */
import { bytesToHex } from "@noble/hashes/utils.js";

/** Bytes as lower-case hex. */
export function hex(bytes: Uint8Array | null | undefined): string {
  return bytes ? bytesToHex(bytes) : "";
}

/** A key shortened for tables: first and last 8 hex digits. */
export function shortKey(bytes: Uint8Array | null | undefined): string {
  const h = hex(bytes);
  return h.length > 20 ? `${h.slice(0, 8)}…${h.slice(-8)}` : h;
}

/** A time as `YYYY-MM-DD HH:MM:SS UTC`, or "—" when absent. */
export function when(date: Date | null | undefined): string {
  if (!date || Number.isNaN(date.getTime())) return "—";
  return date.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

/** A duration in words for ages: "42 s", "5 min", "3 h", "2 d". */
export function age(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 90) return `${s} s`;
  if (s < 90 * 60) return `${Math.round(s / 60)} min`;
  if (s < 36 * 3600) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

/** A count, or "—" when it is not known. */
export function figure(n: number | null | undefined): string {
  return n === null || n === undefined ? "—" : n.toLocaleString("en-US");
}

/** A link with query parameters; empty values are left out. */
export function href(path: string, params: Record<string, string | null | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}
