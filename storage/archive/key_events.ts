/**
 * Key-event retention with archive.
 *
 * `archiveKeyEvents` moves events older than the retention period out of `device_key_event`
 * into an archive target, one node at a time (advisory lock): each chunk is a JSON Lines
 * object `key-events/<seq>.jsonl`; `key-events/manifest.json` lists every chunk with its
 * SHA-256 and a hash chain (chain_n = SHA-256(chain_{n-1} ‖ sha256_n), chain_0 = 32 zero bytes)
 * and is signed with the server's Ed25519 federation key. Order of a pass, so nothing is ever
 * deleted that is not archived: write the chunk, read it back and compare its hash, write the
 * signed manifest and read it back, and only then — in one transaction — index the chunk and
 * delete exactly its events. A pass that stops anywhere before that deletes nothing; the next
 * pass finds a manifest entry the database does not know and finishes it (reconcile).
 *
 * `verifyArchive` checks the signature, every chunk's hash, the chain, the lines, objects the
 * manifest does not list, and the database index against the manifest, so a deleted, altered
 * or rolled-back archive is reported. `restoreKeyEvents` and `archivedHistory` read chunks back
 * (each verified against the manifest or the index first).
 */
import { ed25519 } from "@noble/curves/ed25519.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { bytesToHex, hexToBytes } from "@noble/hashes/utils.js";
import type { ArchiveChunkRecord, ArchivedKeyEvent, KeyEventArchiveRepo } from "../types.ts";
import { checkArchivedEvent, MAX_CHUNK_EVENTS } from "../repos/key_event_archive.ts";
import { ArchiveFailure, type ArchiveTarget } from "./targets.ts";

export const ARCHIVE_FORMAT = "commucat-key-event-archive/1";
export const MANIFEST_OBJECT = "key-events/manifest.json";
const CHUNK_PREFIX = "key-events";
const ZERO_CHAIN = "0".repeat(64);

/** The Ed25519 key pair the manifest is signed with (the federation key). */
export interface ArchiveSigner {
  secretKey: Uint8Array;
  publicKey: Uint8Array;
}

/** One chunk as the manifest lists it. */
export interface ManifestChunk {
  seq: number;
  object: string;
  first_at: string;
  last_at: string;
  events: number;
  sha256: string;
  prev: string;
  chain: string;
}

/** The signed part of the manifest. */
export interface ManifestBody {
  format: typeof ARCHIVE_FORMAT;
  domain: string;
  /** Ed25519 public key (hex) that signed it. */
  public_key: string;
  updated_at: string;
  chunks: ManifestChunk[];
  /** The chain value after the last chunk (ZERO_CHAIN when empty). */
  head: string;
}

export interface Manifest {
  body: ManifestBody;
  /** Ed25519 signature (hex) over canonicalJson(body). */
  signature: string;
}

/** An archive that does not verify (altered, truncated, signed by another key). */
export class ArchiveIntegrityError extends ArchiveFailure {}

/** JSON with object keys sorted at every level: the bytes the manifest signature covers. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const o = value as Record<string, unknown>;
    const keys = Object.keys(o).filter((k) => o[k] !== undefined).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

const encoder = new TextEncoder();

export function sha256Hex(bytes: Uint8Array): string {
  return bytesToHex(sha256(bytes));
}

/** chain_n = SHA-256(chain_{n-1} ‖ sha256_n), over the 32-byte values. */
export function nextChain(prev: string, chunkSha: string): string {
  const both = new Uint8Array(64);
  both.set(hexToBytes(prev), 0);
  both.set(hexToBytes(chunkSha), 32);
  return sha256Hex(both);
}

export function signManifest(body: ManifestBody, signer: ArchiveSigner): Manifest {
  const signature = ed25519.sign(encoder.encode(canonicalJson(body)), signer.secretKey);
  return { body, signature: bytesToHex(signature) };
}

function isHex(value: unknown, length: number): value is string {
  return typeof value === "string" && value.length === length && /^[0-9a-f]+$/.test(value);
}

/**
 * Parses and checks a manifest: its shape, its signature by `publicKey`, and the chain through
 * its chunk list. Throws ArchiveIntegrityError saying what is wrong.
 */
export function parseManifest(bytes: Uint8Array, publicKey: Uint8Array): Manifest {
  let data: unknown;
  try {
    data = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    throw new ArchiveIntegrityError(`${MANIFEST_OBJECT} is not JSON`);
  }
  const m = data as Manifest;
  if (
    typeof m !== "object" || m === null || typeof m.body !== "object" || m.body === null ||
    !isHex(m.signature, 128) || m.body.format !== ARCHIVE_FORMAT || !Array.isArray(m.body.chunks)
  ) {
    throw new ArchiveIntegrityError(`${MANIFEST_OBJECT} is not a ${ARCHIVE_FORMAT} manifest`);
  }
  if (m.body.public_key !== bytesToHex(publicKey)) {
    throw new ArchiveIntegrityError(
      `${MANIFEST_OBJECT} is signed by key ${String(m.body.public_key).slice(0, 16)}…, not by ` +
        `this server's federation key ${bytesToHex(publicKey).slice(0, 16)}…`,
    );
  }
  let valid = false;
  try {
    valid = ed25519.verify(
      hexToBytes(m.signature),
      encoder.encode(canonicalJson(m.body)),
      publicKey,
    );
  } catch {
    valid = false;
  }
  if (!valid) {
    throw new ArchiveIntegrityError(`${MANIFEST_OBJECT}: the signature does not verify`);
  }
  let prev = ZERO_CHAIN;
  for (const [i, c] of m.body.chunks.entries()) {
    if (
      typeof c !== "object" || c === null || c.seq !== (m.body.chunks[0]?.seq ?? 1) + i ||
      !isHex(c.sha256, 64) || c.prev !== prev || c.chain !== nextChain(prev, c.sha256) ||
      typeof c.object !== "string" || !Number.isSafeInteger(c.events) || c.events < 1
    ) {
      throw new ArchiveIntegrityError(
        `${MANIFEST_OBJECT}: chunk entry ${i + 1} breaks the hash chain or is malformed`,
      );
    }
    prev = c.chain;
  }
  if (m.body.head !== prev) {
    throw new ArchiveIntegrityError(`${MANIFEST_OBJECT}: head is not the last chunk's chain`);
  }
  return m;
}

/** Reads and verifies the target's manifest; null when the target has none yet. */
export async function readManifest(
  target: ArchiveTarget,
  publicKey: Uint8Array,
): Promise<Manifest | null> {
  const bytes = await target.get(MANIFEST_OBJECT);
  return bytes === null ? null : parseManifest(bytes, publicKey);
}

/** Parses a chunk's JSON Lines; every line is checked. */
export function parseChunk(bytes: Uint8Array, object: string): ArchivedKeyEvent[] {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new ArchiveIntegrityError(`${object} is not UTF-8`);
  }
  const lines = text.split("\n");
  if (lines.pop() !== "") throw new ArchiveIntegrityError(`${object} does not end with a newline`);
  return lines.map((line, i) => {
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      throw new ArchiveIntegrityError(`${object} line ${i + 1} is not JSON`);
    }
    try {
      return checkArchivedEvent(value, `${object} line ${i + 1}`);
    } catch (err) {
      throw new ArchiveIntegrityError((err as Error).message);
    }
  });
}

/** Fetches a chunk and checks it against its expected hash and event count. */
async function fetchChunk(
  target: ArchiveTarget,
  chunk: { object: string; sha256: string; events: number },
): Promise<ArchivedKeyEvent[]> {
  const bytes = await target.get(chunk.object);
  if (bytes === null) {
    throw new ArchiveIntegrityError(`${chunk.object} is missing from the archive`);
  }
  if (sha256Hex(bytes) !== chunk.sha256) {
    throw new ArchiveIntegrityError(`${chunk.object} was altered: its SHA-256 does not match`);
  }
  const events = parseChunk(bytes, chunk.object);
  if (events.length !== chunk.events) {
    throw new ArchiveIntegrityError(
      `${chunk.object} holds ${events.length} events, the manifest says ${chunk.events}`,
    );
  }
  return events;
}

function chunkObject(seq: number): string {
  return `${CHUNK_PREFIX}/${String(seq).padStart(10, "0")}.jsonl`;
}

function deviceCounts(events: ArchivedKeyEvent[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const e of events) counts.set(e.device_id, (counts.get(e.device_id) ?? 0) + 1);
  return counts;
}

function toRecord(target: ArchiveTarget, c: ManifestChunk): Omit<ArchiveChunkRecord, "archivedAt"> {
  return {
    target: target.id,
    seq: c.seq,
    object: c.object,
    firstAt: c.first_at,
    lastAt: c.last_at,
    events: c.events,
    sha256: c.sha256,
    chain: c.chain,
  };
}

export interface ArchiveOptions {
  repo: KeyEventArchiveRepo;
  target: ArchiveTarget;
  signer: ArchiveSigner;
  domain: string;
  /** Events recorded before this are archived (now − retention). */
  cutoff: Date;
  /** Restored events restored before this are deleted again (default: cutoff). */
  restoredCutoff?: Date;
  /** Events per chunk (1..100000). */
  chunkEvents: number;
  /** Chunks written at most in this pass (default 100); the next pass continues. */
  maxChunks?: number;
  /** Only count what is due, write and delete nothing. */
  dryRun?: boolean;
  now?: () => Date;
}

export type ArchiveResult =
  | { locked: false }
  | {
    locked: true;
    /** Chunks written by this pass, and events archived then deleted. */
    chunks: number;
    archived: number;
    deleted: number;
    /** Chunks finished from an interrupted earlier pass. */
    reconciled: number;
    /** Restored events deleted again. */
    restoredPurged: number;
    /** Dry run: events due now (up to chunkEvents × maxChunks). */
    due?: number;
  };

/** One retention pass: archive due events in chunks, then delete them. See the module doc. */
export async function archiveKeyEvents(opts: ArchiveOptions): Promise<ArchiveResult> {
  const chunkEvents = Math.min(Math.max(1, Math.floor(opts.chunkEvents)), MAX_CHUNK_EVENTS);
  const maxChunks = opts.maxChunks ?? 100;
  const now = opts.now ?? (() => new Date());
  const { repo, target, signer } = opts;
  const outcome = await repo.withJobLock(async () => {
    if (opts.dryRun) {
      const due = await repo.due(opts.cutoff, Math.min(chunkEvents * maxChunks, MAX_CHUNK_EVENTS));
      return {
        chunks: 0,
        archived: 0,
        deleted: 0,
        reconciled: 0,
        restoredPurged: 0,
        due: due.length,
      };
    }
    let manifest = await readManifest(target, signer.publicKey);
    let deleted = 0;
    let reconciled = 0;
    // Finish chunks an interrupted pass wrote into the manifest but did not commit.
    if (manifest) {
      const known = new Set(
        (await repo.chunks({ target: target.id, limit: 100_000 })).map((c) => c.seq),
      );
      for (const c of manifest.body.chunks) {
        if (known.has(c.seq)) continue;
        const events = await fetchChunk(target, c);
        deleted += await repo.commitChunk(
          toRecord(target, c),
          events.map((e) => e.event_id),
          deviceCounts(events),
        );
        reconciled++;
      }
    }
    let chunks = 0;
    let archived = 0;
    while (chunks < maxChunks) {
      const events = await repo.due(opts.cutoff, chunkEvents);
      if (events.length === 0) break;
      const bytes = encoder.encode(events.map((e) => JSON.stringify(e) + "\n").join(""));
      const sha = sha256Hex(bytes);
      const prevChunks = manifest?.body.chunks ?? [];
      const seq = (prevChunks.at(-1)?.seq ?? 0) + 1;
      const prev = manifest?.body.head ?? ZERO_CHAIN;
      const entry: ManifestChunk = {
        seq,
        object: chunkObject(seq),
        first_at: events[0].recorded_at,
        last_at: events[events.length - 1].recorded_at,
        events: events.length,
        sha256: sha,
        prev,
        chain: nextChain(prev, sha),
      };
      await target.put(entry.object, bytes, "application/x-ndjson");
      const back = await target.get(entry.object);
      if (back === null || sha256Hex(back) !== sha) {
        throw new ArchiveFailure(
          `${entry.object} read back from ${target.id} differs from what was written; ` +
            "nothing was deleted",
        );
      }
      const next = signManifest({
        format: ARCHIVE_FORMAT,
        domain: opts.domain,
        public_key: bytesToHex(signer.publicKey),
        updated_at: now().toISOString(),
        chunks: [...prevChunks, entry],
        head: entry.chain,
      }, signer);
      const manifestBytes = encoder.encode(JSON.stringify(next, null, 1) + "\n");
      await target.put(MANIFEST_OBJECT, manifestBytes, "application/json");
      const manifestBack = await target.get(MANIFEST_OBJECT);
      if (manifestBack === null || sha256Hex(manifestBack) !== sha256Hex(manifestBytes)) {
        throw new ArchiveFailure(
          `${MANIFEST_OBJECT} read back from ${target.id} differs from what was written; ` +
            "nothing was deleted",
        );
      }
      manifest = next;
      deleted += await repo.commitChunk(
        toRecord(target, entry),
        events.map((e) => e.event_id),
        deviceCounts(events),
      );
      chunks++;
      archived += events.length;
    }
    const restoredPurged = await repo.purgeRestored(opts.restoredCutoff ?? opts.cutoff);
    return { chunks, archived, deleted, reconciled, restoredPurged };
  });
  return outcome.locked ? { locked: true, ...outcome.value } : { locked: false };
}

export interface VerifyReport {
  ok: boolean;
  chunks: number;
  events: number;
  /** First and last recorded_at covered by the archive. */
  range: { from: string; to: string } | null;
  problems: string[];
}

/**
 * Checks the whole archive of a target. Every problem found is listed (a bad chunk does not
 * stop the check of the others); `ok` is true only with none.
 */
export async function verifyArchive(
  target: ArchiveTarget,
  publicKey: Uint8Array,
  repo?: KeyEventArchiveRepo,
): Promise<VerifyReport> {
  const problems: string[] = [];
  let manifest: Manifest | null = null;
  try {
    manifest = await readManifest(target, publicKey);
  } catch (err) {
    if (!(err instanceof ArchiveFailure)) throw err;
    problems.push(err.message);
  }
  const indexed = repo ? await repo.chunks({ target: target.id, limit: 100_000 }) : [];
  if (manifest === null) {
    if (problems.length === 0 && indexed.length > 0) {
      problems.push(
        `${MANIFEST_OBJECT} is missing but the database indexes ${indexed.length} chunks`,
      );
    }
    return { ok: problems.length === 0, chunks: 0, events: 0, range: null, problems };
  }
  let events = 0;
  const ids = new Set<string>();
  for (const c of manifest.body.chunks) {
    try {
      const lines = await fetchChunk(target, c);
      for (const e of lines) {
        if (ids.has(e.event_id)) problems.push(`${c.object}: event ${e.event_id} appears twice`);
        ids.add(e.event_id);
      }
      if (lines[0].recorded_at !== c.first_at || lines.at(-1)!.recorded_at !== c.last_at) {
        problems.push(`${c.object}: its time range differs from the manifest`);
      }
      events += lines.length;
    } catch (err) {
      if (!(err instanceof ArchiveFailure)) throw err;
      problems.push(err.message);
    }
  }
  const listed = new Set(manifest.body.chunks.map((c) => c.object));
  for (const name of await target.list(CHUNK_PREFIX)) {
    if (name !== MANIFEST_OBJECT && name.endsWith(".jsonl") && !listed.has(name)) {
      problems.push(
        `${name} is in the archive but not in the manifest (a replaced or rolled-back manifest?)`,
      );
    }
  }
  const bySeq = new Map(manifest.body.chunks.map((c) => [c.seq, c]));
  for (const row of indexed) {
    const c = bySeq.get(row.seq);
    if (!c) {
      problems.push(
        `the database indexes chunk ${row.seq} (${row.object}) but the manifest does not list it`,
      );
    } else if (c.sha256 !== row.sha256 || c.chain !== row.chain) {
      problems.push(`chunk ${row.seq}: the manifest's hashes differ from the database index`);
    }
  }
  const first = manifest.body.chunks[0];
  const last = manifest.body.chunks.at(-1);
  return {
    ok: problems.length === 0,
    chunks: manifest.body.chunks.length,
    events,
    range: first && last ? { from: first.first_at, to: last.last_at } : null,
    problems,
  };
}

export interface RestoreFilter {
  deviceId?: string;
  /** recorded_at range [from, to). */
  from?: Date;
  to?: Date;
}

function matches(e: ArchivedKeyEvent, f: RestoreFilter): boolean {
  if (f.deviceId !== undefined && e.device_id !== f.deviceId) return false;
  const t = Date.parse(e.recorded_at);
  if (f.from && t < f.from.getTime()) return false;
  if (f.to && t >= f.to.getTime()) return false;
  return true;
}

/**
 * Puts archived events back into `device_key_event` (marked restored, so the retention job
 * deletes them again after the retention period without archiving them twice). The manifest
 * is verified first and each chunk read is checked against it.
 */
export async function restoreKeyEvents(
  repo: KeyEventArchiveRepo,
  target: ArchiveTarget,
  publicKey: Uint8Array,
  filter: RestoreFilter = {},
): Promise<
  { chunks: number; matched: number; restored: number; present: number; unknownDevice: number }
> {
  const manifest = await readManifest(target, publicKey);
  const result = { chunks: 0, matched: 0, restored: 0, present: 0, unknownDevice: 0 };
  if (!manifest) return result;
  for (const c of manifest.body.chunks) {
    if (filter.from && Date.parse(c.last_at) < filter.from.getTime()) continue;
    if (filter.to && Date.parse(c.first_at) >= filter.to.getTime()) continue;
    const events = (await fetchChunk(target, c)).filter((e) => matches(e, filter));
    result.chunks++;
    if (events.length === 0) continue;
    result.matched += events.length;
    const r = await repo.restore(events);
    result.restored += r.restored;
    result.present += r.present;
    result.unknownDevice += r.unknownDevice;
  }
  return result;
}

/**
 * A device's archived key events, oldest first, read from the chunks the database index names
 * for it (each checked against the index's hash). At most `limit` events.
 */
export async function archivedHistory(
  repo: KeyEventArchiveRepo,
  target: ArchiveTarget,
  deviceId: string,
  limit = 1000,
): Promise<{ events: ArchivedKeyEvent[]; chunks: ArchiveChunkRecord[]; truncated: boolean }> {
  const chunks = (await repo.chunksForDevice(deviceId)).filter((c) => c.target === target.id);
  const events: ArchivedKeyEvent[] = [];
  for (const c of chunks) {
    for (const e of await fetchChunk(target, c)) {
      if (e.device_id !== deviceId) continue;
      if (events.length >= limit) return { events, chunks, truncated: true };
      events.push(e);
    }
  }
  return { events, chunks, truncated: false };
}
