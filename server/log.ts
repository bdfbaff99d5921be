/**
 * The one logger: structured JSON, one line per event, to stdout.
 *
 * A line looks like `{"ts":"2025-01-01T00:00:00.000Z","level":"info","msg":"…",…fields}`.
 * Field names that look like secrets are redacted, passwords inside URLs (DSNs, Redis URLs) are
 * masked, and errors are reduced to `{name, message}` so stack traces and causes that might carry
 * secrets never reach the log.
 */
import { bytesToHex } from "@noble/hashes/utils.js";

export type LogLevel = "debug" | "info" | "warn" | "error";

/** Structured fields attached to a log line. */
export type LogFields = Record<string, unknown>;

/** A logger; `child` returns one that adds `fields` to every line it writes. */
export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  child(fields: LogFields): Logger;
}

const LEVEL_RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** Field names whose values are never written. */
export const REDACTED_FIELD = /private|secret|token|password|passwd|seed|dsn|authorization|cookie/i;
const REDACTED = "[redacted]";
/** Objects nested deeper than this are cut, so a cyclic or huge value cannot stall logging. */
const MAX_DEPTH = 6;
/** Byte arrays longer than this are summarized instead of hex-dumped. */
const MAX_HEX_BYTES = 64;

function levelFromEnv(): LogLevel {
  try {
    const value = Deno.env.get("COMMUCAT_LOG_LEVEL")?.trim().toLowerCase();
    if (value && value in LEVEL_RANK) return value as LogLevel;
  } catch {
    // Without env permission the default applies.
  }
  return "info";
}

let minimumLevel: LogLevel = levelFromEnv();

function writeStdout(line: string): void {
  try {
    console.log(line);
  } catch {
    // A closed stdout must never take the server down.
  }
}

let sink: (line: string) => void = writeStdout;

/**
 * Sends every log line to `fn` instead of stdout (tests capture output this way).
 * Pass `null` to restore stdout. Returns the previous sink.
 */
export function setLogSink(fn: ((line: string) => void) | null): (line: string) => void {
  const previous = sink;
  sink = fn ?? writeStdout;
  return previous;
}

/** Sets the lowest level written (the default comes from COMMUCAT_LOG_LEVEL, else "info"). */
export function setLogLevel(level: LogLevel): void {
  if (!(level in LEVEL_RANK)) throw new Error(`unknown log level ${JSON.stringify(level)}`);
  minimumLevel = level;
}

/** The lowest level currently written. */
export function getLogLevel(): LogLevel {
  return minimumLevel;
}

/** Masks the password of `scheme://user:password@host…`, leaving the rest readable. */
export function redactUrlPassword(value: string): string {
  return value.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:@/\s]*:)[^@/\s]*@/i, `$1${REDACTED}@`);
}

/** Turns a value into something JSON can carry, redacting secrets on the way. */
function sanitize(value: unknown, depth: number, seen: WeakSet<object>): unknown {
  if (value === null || value === undefined) return value ?? null;
  switch (typeof value) {
    case "string":
      return redactUrlPassword(value);
    case "number":
      return Number.isFinite(value) ? value : String(value);
    case "boolean":
      return value;
    case "bigint":
      return value.toString();
    case "function":
    case "symbol":
      return String(value);
  }
  if (value instanceof Error) {
    return { name: value.name, message: redactUrlPassword(value.message) };
  }
  if (value instanceof Date) {
    return Number.isNaN(value.getTime()) ? "Invalid Date" : value.toISOString();
  }
  if (value instanceof Uint8Array) {
    return value.length <= MAX_HEX_BYTES ? bytesToHex(value) : `<${value.length} bytes>`;
  }
  if (value instanceof ArrayBuffer) return `<${value.byteLength} bytes>`;
  const obj = value as object;
  if (seen.has(obj)) return "[circular]";
  if (depth >= MAX_DEPTH) return "[nested]";
  seen.add(obj);
  try {
    if (Array.isArray(obj)) return obj.map((item) => sanitize(item, depth + 1, seen));
    if (obj instanceof Map) {
      return sanitizeFields(Object.fromEntries(obj), depth + 1, seen);
    }
    if (obj instanceof Set) return [...obj].map((item) => sanitize(item, depth + 1, seen));
    return sanitizeFields(obj as LogFields, depth + 1, seen);
  } finally {
    seen.delete(obj);
  }
}

function sanitizeFields(fields: LogFields, depth: number, seen: WeakSet<object>): LogFields {
  const out: LogFields = {};
  for (const [key, value] of Object.entries(fields)) {
    if (value === undefined) continue;
    out[key] = REDACTED_FIELD.test(key) ? REDACTED : sanitize(value, depth, seen);
  }
  return out;
}

/** Returns a copy of `fields` as it would be logged (secrets redacted, errors reduced). */
export function redact(fields: LogFields): LogFields {
  return sanitizeFields(fields, 0, new WeakSet());
}

/** Builds one JSON log line; reserved names (ts, level, msg) in fields are prefixed "field_". */
export function formatLine(level: LogLevel, msg: string, fields: LogFields, now: Date): string {
  const line: LogFields = { ts: now.toISOString(), level, msg: redactUrlPassword(String(msg)) };
  for (const [key, value] of Object.entries(redact(fields))) {
    line[key in line ? `field_${key}` : key] = value;
  }
  return JSON.stringify(line);
}

class JsonLogger implements Logger {
  constructor(private readonly bound: LogFields) {}

  private write(level: LogLevel, msg: string, fields?: LogFields): void {
    if (LEVEL_RANK[level] < LEVEL_RANK[minimumLevel]) return;
    let line: string;
    try {
      line = formatLine(level, msg, { ...this.bound, ...fields }, new Date());
    } catch (err) {
      // Logging must never throw into the caller (e.g. a getter that throws).
      line = formatLine(level, msg, { log_error: err }, new Date());
    }
    sink(line);
  }

  debug(msg: string, fields?: LogFields): void {
    this.write("debug", msg, fields);
  }
  info(msg: string, fields?: LogFields): void {
    this.write("info", msg, fields);
  }
  warn(msg: string, fields?: LogFields): void {
    this.write("warn", msg, fields);
  }
  error(msg: string, fields?: LogFields): void {
    this.write("error", msg, fields);
  }
  child(fields: LogFields): Logger {
    return new JsonLogger({ ...this.bound, ...fields });
  }
}

/** The process-wide logger. */
export const log: Logger = new JsonLogger({});
