/**
 * The key-event archive's bookkeeping: which events are due, the chunk index, deleting what
 * was archived (only that), restoring, and the retention job's advisory lock. Moving bytes to
 * and from an archive target is storage/archive/'s job.
 */
import type { Db } from "../db.ts";
import type {
  ArchiveChunkRecord,
  ArchivedKeyEvent,
  KeyEventArchiveRepo,
  KeyEventKind,
} from "../types.ts";
import { InvalidValue } from "../errors.ts";
import { bytesToHex } from "@noble/hashes/utils.js";
import * as v from "./validate.ts";

/** First key of the retention job's two-key advisory lock ("keva"); the second is the schema. */
export const ARCHIVE_LOCK_CLASS = 0x6b657661;

/** The most events one chunk may hold (`[retention] chunk_events` is capped to this). */
export const MAX_CHUNK_EVENTS = 100_000;

const KINDS: readonly KeyEventKind[] = [
  "registered",
  "pending",
  "approved",
  "rejected",
  "revoked",
  "rotated",
  "rotation-pending",
];

/** recorded_at as UTC text with microseconds (what an archive line carries). */
const RECORDED_TEXT =
  `to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS recorded_at`;

interface ChunkRow {
  target: string;
  seq: string;
  object: string;
  first_at: string;
  last_at: string;
  events: number;
  sha256: string;
  chain: string;
  archived_at: Date;
}

function toChunk(r: ChunkRow): ArchiveChunkRecord {
  return {
    target: r.target,
    seq: Number(r.seq),
    object: r.object,
    firstAt: r.first_at,
    lastAt: r.last_at,
    events: r.events,
    sha256: r.sha256,
    chain: r.chain,
    archivedAt: r.archived_at,
  };
}

const CHUNK_COLUMNS = "target, seq, object, first_at, last_at, events, sha256, chain, archived_at";

/** Checks one archive line before it goes back into the database. */
export function checkArchivedEvent(e: unknown, where: string): ArchivedKeyEvent {
  const bad = (field: string, value: unknown, expected: string) =>
    new InvalidValue(`${where} ${field}`, value, expected);
  if (typeof e !== "object" || e === null || Array.isArray(e)) {
    throw bad("line", typeof e, "a JSON object");
  }
  const o = e as Record<string, unknown>;
  v.id(`${where} event_id`, o.event_id);
  v.id(`${where} device_id`, o.device_id);
  if (!KINDS.includes(o.kind as KeyEventKind)) {
    throw bad("kind", o.kind, KINDS.join(", "));
  }
  if (typeof o.public_key !== "string" || !/^[0-9a-f]{64}$/.test(o.public_key)) {
    throw bad("public_key", o.public_key, "64 lowercase hex characters");
  }
  v.actor(o.actor);
  if (
    typeof o.recorded_at !== "string" ||
    !/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$/.test(o.recorded_at) ||
    Number.isNaN(Date.parse(o.recorded_at))
  ) {
    throw bad("recorded_at", o.recorded_at, "a UTC time such as 2025-01-31T12:00:00.000000Z");
  }
  return {
    event_id: o.event_id as string,
    device_id: o.device_id as string,
    kind: o.kind as KeyEventKind,
    public_key: o.public_key,
    actor: o.actor as string,
    recorded_at: o.recorded_at,
  };
}

export class PgKeyEventArchiveRepo implements KeyEventArchiveRepo {
  /** PGlite is one session, where an advisory lock is re-entrant: guard in process too. */
  #running = false;

  constructor(private readonly db: Db) {}

  async withJobLock<T>(
    fn: () => Promise<T>,
  ): Promise<{ locked: true; value: T } | { locked: false }> {
    if (this.#running) return { locked: false };
    this.#running = true;
    try {
      return await this.db.withConnection(async (conn) => {
        const res = await conn.query<{ ok: boolean }>(
          `SELECT pg_try_advisory_lock($1, hashtext(current_schema())) AS ok`,
          [ARCHIVE_LOCK_CLASS],
        );
        if (!res.rows[0]?.ok) return { locked: false as const };
        try {
          return { locked: true as const, value: await fn() };
        } finally {
          await conn.query(`SELECT pg_advisory_unlock($1, hashtext(current_schema()))`, [
            ARCHIVE_LOCK_CLASS,
          ]);
        }
      });
    } finally {
      this.#running = false;
    }
  }

  async due(cutoff: Date, limit: number): Promise<ArchivedKeyEvent[]> {
    const n = v.int("limit", limit, 1, MAX_CHUNK_EVENTS);
    const res = await this.db.query<
      Omit<ArchivedKeyEvent, "public_key"> & { public_key: Uint8Array }
    >(
      `SELECT event_id, device_id, kind, public_key, actor, ${RECORDED_TEXT}
       FROM device_key_event
       WHERE recorded_at < $1 AND restored_at IS NULL
       ORDER BY device_key_event.recorded_at, event_id
       LIMIT $2`,
      [v.date("cutoff", cutoff).toISOString(), n],
    );
    return res.rows.map((r) => ({
      event_id: r.event_id,
      device_id: r.device_id,
      kind: r.kind,
      public_key: bytesToHex(r.public_key),
      actor: r.actor,
      recorded_at: r.recorded_at,
    }));
  }

  async commitChunk(
    chunk: Omit<ArchiveChunkRecord, "archivedAt">,
    eventIds: string[],
    devices: Map<string, number>,
  ): Promise<number> {
    return await this.db.transaction(async (tx) => {
      await tx.query(
        `INSERT INTO key_event_archive_chunk
           (target, seq, object, first_at, last_at, events, sha256, chain)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (target, seq) DO NOTHING`,
        [
          chunk.target,
          chunk.seq,
          chunk.object,
          chunk.firstAt,
          chunk.lastAt,
          chunk.events,
          chunk.sha256,
          chunk.chain,
        ],
      );
      if (devices.size > 0) {
        await tx.query(
          `INSERT INTO key_event_archive_device (device_id, target, seq, events)
           SELECT d, $2, $3, n FROM unnest($1::text[], $4::int[]) AS t(d, n)
           ON CONFLICT DO NOTHING`,
          [[...devices.keys()], chunk.target, chunk.seq, [...devices.values()]],
        );
      }
      const res = await tx.query(
        `DELETE FROM device_key_event WHERE event_id = ANY($1::text[]) AND restored_at IS NULL`,
        [eventIds],
      );
      return res.rowCount;
    });
  }

  async purgeRestored(cutoff: Date): Promise<number> {
    const res = await this.db.query(
      `DELETE FROM device_key_event WHERE restored_at IS NOT NULL AND restored_at < $1`,
      [v.date("cutoff", cutoff).toISOString()],
    );
    return res.rowCount;
  }

  async chunks(filter: { target?: string; limit?: number } = {}): Promise<ArchiveChunkRecord[]> {
    const limit = v.int("limit", filter.limit ?? 1000, 1, 100_000);
    const res = await this.db.query<ChunkRow>(
      `SELECT ${CHUNK_COLUMNS} FROM key_event_archive_chunk
       WHERE ($1::text IS NULL OR target = $1)
       ORDER BY archived_at DESC, seq DESC LIMIT $2`,
      [filter.target ?? null, limit],
    );
    return res.rows.map(toChunk);
  }

  async chunksForDevice(deviceId: string, limit = 1000): Promise<ArchiveChunkRecord[]> {
    const res = await this.db.query<ChunkRow>(
      `SELECT ${CHUNK_COLUMNS.split(", ").map((c) => `c.${c}`).join(", ")}
       FROM key_event_archive_device d
       JOIN key_event_archive_chunk c ON c.target = d.target AND c.seq = d.seq
       WHERE d.device_id = $1
       ORDER BY c.first_at, c.seq LIMIT $2`,
      [v.id("device id", deviceId), v.int("limit", limit, 1, 100_000)],
    );
    return res.rows.map(toChunk);
  }

  async restore(
    events: ArchivedKeyEvent[],
  ): Promise<{ restored: number; present: number; unknownDevice: number }> {
    const checked = events.map((e, i) => checkArchivedEvent(e, `event ${i + 1}`));
    if (checked.length === 0) return { restored: 0, present: 0, unknownDevice: 0 };
    return await this.db.transaction(async (tx) => {
      const ids = checked.map((e) => e.event_id);
      const devices = checked.map((e) => e.device_id);
      const counts = await tx.query<{ present: string; unknown_device: string }>(
        `SELECT count(*) FILTER (WHERE k.event_id IS NOT NULL) AS present,
                count(*) FILTER (WHERE k.event_id IS NULL AND u.device_id IS NULL)
                  AS unknown_device
         FROM unnest($1::text[], $2::text[]) AS t(e, d)
         LEFT JOIN device_key_event k ON k.event_id = t.e
         LEFT JOIN user_device u ON u.device_id = t.d`,
        [ids, devices],
      );
      const res = await tx.query(
        `INSERT INTO device_key_event
           (event_id, device_id, kind, public_key, actor, recorded_at, restored_at)
         SELECT t.e, t.d, t.k, decode(t.p, 'hex'), t.a, t.r::timestamptz, now()
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
           AS t(e, d, k, p, a, r)
         WHERE EXISTS (SELECT 1 FROM user_device u WHERE u.device_id = t.d)
         ON CONFLICT (event_id) DO NOTHING`,
        [
          ids,
          devices,
          checked.map((e) => e.kind),
          checked.map((e) => e.public_key),
          checked.map((e) => e.actor),
          checked.map((e) => e.recorded_at),
        ],
      );
      return {
        restored: res.rowCount,
        present: Number(counts.rows[0]?.present ?? 0),
        unknownDevice: Number(counts.rows[0]?.unknown_device ?? 0),
      };
    });
  }
}
