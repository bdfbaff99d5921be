/**
 * The ledger adapter: an append-only audit trail of sessions and device key events.
 *
 * Every record carries a BLAKE3 digest over the canonical JSON of `{kind, metadata,
 * recorded_at}` (object keys sorted, no whitespace, byte arrays as hex), so anyone holding a
 * line of the file can recompute and check it with `ledgerDigest`.
 *
 * Modes: `null` keeps nothing, `debug` writes each record to the log, `file` appends
 * newline-delimited JSON to `target` (created with mode 0600, parent directories created).
 */
import { blake3 } from "@noble/hashes/blake3.js";
import { bytesToHex } from "@noble/hashes/utils.js";
import { dirname } from "node:path";
import { ProblemError } from "../protocol/errors.ts";

/** The ledger's modes, as `[ledger] mode` names them. */
export const LEDGER_MODES = ["null", "debug", "file"] as const;
export type LedgerMode = typeof LEDGER_MODES[number];

/**
 * The little the ledger needs of a logger, so storage never imports server code; the server's
 * one logger (server/log.ts) satisfies it and is what callers pass.
 */
export interface LedgerLogger {
  child(fields: Record<string, unknown>): {
    info(msg: string, fields?: Record<string, unknown>): void;
  };
}

/** One ledger entry, exactly as written to the file (one JSON object per line). */
export interface LedgerRecord {
  /** Hex BLAKE3 digest of canonicalJson({kind, metadata, recorded_at}). */
  digest: string;
  /** RFC 3339 timestamp (UTC, milliseconds). */
  recorded_at: string;
  kind: string;
  /** The metadata after normalization (byte arrays as hex, dates as RFC 3339). */
  metadata: Record<string, unknown>;
}

export interface Ledger {
  readonly mode: LedgerMode;
  /** Normalizes, digests and stores one record; resolves once it is written. */
  record(kind: string, metadata: Record<string, unknown>): Promise<LedgerRecord>;
  /** Opens the target now (file mode), so a bad path fails at start rather than later. */
  ready(): Promise<void>;
  /** Waits for pending writes and releases the file; later `record` calls are refused. */
  close(): Promise<void>;
}

export interface LedgerOptions {
  mode: LedgerMode;
  target: string | null;
  /** Clock, for tests. */
  now?: () => Date;
}

/** A ledger that cannot be created or written; the message says what and where. */
export class LedgerError extends ProblemError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("Ledger Failure", 503, message, { cause: options?.cause });
    this.name = "LedgerError";
  }
}

/**
 * Converts metadata into plain JSON values: byte arrays become hex, dates RFC 3339 strings,
 * bigints decimal strings; undefined object members are dropped. Refuses values JSON cannot
 * represent faithfully (non-finite numbers, functions, cycles), naming the path.
 */
export function normalizeValue(
  value: unknown,
  path = "metadata",
  seen = new Set<object>(),
): unknown {
  if (value === null) return null;
  switch (typeof value) {
    case "string":
    case "boolean":
      return value;
    case "number":
      if (!Number.isFinite(value)) throw new LedgerError(`${path} is ${value}: not representable`);
      return value;
    case "bigint":
      return value.toString();
    case "undefined":
      return null;
    case "function":
    case "symbol":
      throw new LedgerError(`${path} is a ${typeof value}: not representable`);
  }
  if (value instanceof Uint8Array) return bytesToHex(value);
  if (value instanceof ArrayBuffer) return bytesToHex(new Uint8Array(value));
  if (value instanceof Date) {
    if (Number.isNaN(value.getTime())) throw new LedgerError(`${path} is an invalid date`);
    return value.toISOString();
  }
  const obj = value as object;
  if (seen.has(obj)) throw new LedgerError(`${path} refers to itself`);
  seen.add(obj);
  try {
    if (Array.isArray(obj)) {
      return obj.map((item, i) => normalizeValue(item, `${path}[${i}]`, seen));
    }
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(obj)) {
      if (item === undefined) continue;
      out[key] = normalizeValue(item, `${path}.${key}`, seen);
    }
    return out;
  } finally {
    seen.delete(obj);
  }
}

/** JSON with object keys sorted at every level and no whitespace (the digest's input). */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, item]) => item !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, item]) => `${JSON.stringify(k)}:${canonicalJson(item)}`).join(",")}}`;
}

/** Hex BLAKE3 digest of a record's canonical JSON; use it to verify a stored line. */
export function ledgerDigest(
  kind: string,
  metadata: Record<string, unknown>,
  recordedAt: string,
): string {
  const canonical = canonicalJson({ kind, metadata, recorded_at: recordedAt });
  return bytesToHex(blake3(new TextEncoder().encode(canonical)));
}

/** Builds a record (normalized metadata, timestamp, digest) without storing it. */
export function buildLedgerRecord(
  kind: string,
  metadata: Record<string, unknown>,
  now: Date = new Date(),
): LedgerRecord {
  if (typeof kind !== "string" || kind.trim() === "") {
    throw new LedgerError(
      `ledger record kind must be a non-empty string, got ${JSON.stringify(kind)}`,
    );
  }
  if (metadata === null || typeof metadata !== "object" || Array.isArray(metadata)) {
    throw new LedgerError("ledger record metadata must be an object");
  }
  const normalized = normalizeValue(metadata) as Record<string, unknown>;
  const recorded_at = now.toISOString();
  return {
    digest: ledgerDigest(kind, normalized, recorded_at),
    recorded_at,
    kind,
    metadata: normalized,
  };
}

/** Serializes a record as one file line (with the trailing newline). */
export function ledgerLine(record: LedgerRecord): string {
  const { digest, recorded_at, kind, metadata } = record;
  return JSON.stringify({ digest, recorded_at, kind, metadata }) + "\n";
}

/**
 * Creates the ledger for `mode`. File mode requires `target`; the file is opened on `ready()`
 * or the first record. Debug mode writes through `logger`. Throws LedgerError for an unknown
 * mode, a missing target or a debug ledger without a logger.
 */
export function createLedger(options: LedgerOptions, logger?: LedgerLogger): Ledger {
  const now = options.now ?? (() => new Date());
  switch (options.mode) {
    case "null":
      return new BasicLedger("null", now, () => {});
    case "debug": {
      if (!logger) throw new LedgerError('ledger mode "debug" needs a logger to write to');
      const ledgerLog = logger.child({ component: "ledger" });
      return new BasicLedger(
        "debug",
        now,
        (record) => ledgerLog.info("ledger record", { ...record }),
      );
    }
    case "file": {
      const target = options.target?.trim();
      if (!target) {
        throw new LedgerError(
          'ledger mode "file" needs a target path ([ledger] target or COMMUCAT_LEDGER_TARGET)',
        );
      }
      return new FileLedger(target, now);
    }
    default:
      throw new LedgerError(
        `unknown ledger mode ${JSON.stringify(options.mode)}: expected "null", "debug" or "file"`,
      );
  }
}

class BasicLedger implements Ledger {
  private closed = false;
  constructor(
    readonly mode: LedgerMode,
    private readonly now: () => Date,
    private readonly submit: (record: LedgerRecord) => void,
  ) {}

  record(kind: string, metadata: Record<string, unknown>): Promise<LedgerRecord> {
    try {
      if (this.closed) throw new LedgerError("ledger is closed");
      const record = buildLedgerRecord(kind, metadata, this.now());
      this.submit(record);
      return Promise.resolve(record);
    } catch (err) {
      return Promise.reject(err);
    }
  }
  ready(): Promise<void> {
    return Promise.resolve();
  }
  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }
}

class FileLedger implements Ledger {
  readonly mode = "file" as const;
  private file: Deno.FsFile | null = null;
  private opening: Promise<Deno.FsFile> | null = null;
  /** Tail of the write chain: each write starts after the previous one finished. */
  private tail: Promise<unknown> = Promise.resolve();
  private closed = false;
  private readonly encoder = new TextEncoder();

  constructor(readonly target: string, private readonly now: () => Date) {}

  private open(): Promise<Deno.FsFile> {
    if (this.file) return Promise.resolve(this.file);
    this.opening ??= (async () => {
      try {
        const dir = dirname(this.target);
        if (dir && dir !== ".") await Deno.mkdir(dir, { recursive: true });
        this.file = await Deno.open(this.target, {
          append: true,
          create: true,
          mode: 0o600,
        });
        return this.file;
      } catch (err) {
        this.opening = null;
        throw new LedgerError(
          `cannot open ledger file ${this.target}: ${(err as Error).message}`,
          { cause: err },
        );
      }
    })();
    return this.opening;
  }

  async ready(): Promise<void> {
    await this.open();
  }

  record(kind: string, metadata: Record<string, unknown>): Promise<LedgerRecord> {
    if (this.closed) return Promise.reject(new LedgerError("ledger is closed"));
    let record: LedgerRecord;
    try {
      record = buildLedgerRecord(kind, metadata, this.now());
    } catch (err) {
      return Promise.reject(err);
    }
    const bytes = this.encoder.encode(ledgerLine(record));
    const write = this.tail.then(async () => {
      const file = await this.open();
      try {
        let written = 0;
        while (written < bytes.length) written += await file.write(bytes.subarray(written));
      } catch (err) {
        throw new LedgerError(
          `cannot write ledger file ${this.target}: ${(err as Error).message}`,
          { cause: err },
        );
      }
      return record;
    });
    // A failed write rejects its own caller but must not stop the writes queued after it.
    this.tail = write.catch(() => {});
    return write;
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.tail;
    if (this.opening) await this.opening.catch(() => {});
    this.file?.close();
    this.file = null;
    this.opening = null;
  }
}
