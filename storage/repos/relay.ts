/**
 * The offline relay queue (`relay_queue`) and inbox offsets (`inbox_offset`).
 *
 * At-least-once delivery: an envelope is claimed by the session that replays it (claim), the
 * recipient sequence it went out under is recorded (markSent), and it is deleted only when the
 * recipient ACKs that sequence (ack), which also advances `inbox_offset` in the same statement.
 * A session that ends without ACKing gives its claims back (requeue) and they are replayed.
 *
 * Fast path (two statements per batch instead of three, nothing large read back on ack):
 * `claim(device, session, n, { firstSequence })` records the sequences in the claim itself,
 * and `ack(device, session, sequences, { returnPayloads: false })` returns only ids.
 */
import type { Db } from "../db.ts";
import { InvalidValue } from "../errors.ts";
import type {
  AckOptions,
  ClaimOptions,
  EnqueueItem,
  ExpiredEnvelope,
  OffsetRepo,
  RelayAck,
  RelayDepth,
  RelayEnvelope,
  RelayRepo,
  ReplayEnvelope,
} from "../types.ts";
import * as v from "./validate.ts";

/**
 * A CTE that turns off the WAL-flush wait for the statement's own (implicit) transaction.
 * Used only by claim, markSent and ack, which are replay-safe under at-least-once delivery: if
 * a database crash loses one of them, the envelope is simply claimed and sent again. It saves
 * a disk flush per statement on the delivery path; enqueue stays fully durable.
 */
const RELAXED_COMMIT =
  "relaxed AS MATERIALIZED (SELECT set_config('synchronous_commit', 'off', true) AS setting)";

/** Rows per INSERT statement when enqueueing. */
export const ENQUEUE_BATCH = 500;
/** The most envelopes one claim hands out (ccp1.md §5). */
export const MAX_CLAIM = 128;
/** The largest recipient sequence (u32). */
const MAX_U32 = 0xffffffff;

interface EnvelopeRow {
  envelope_id: string;
  device_id: string;
  channel_id: string;
  payload: Uint8Array;
  enqueued_at: Date;
  expires_at: Date;
  attempts: number;
  last_sequence: string | null;
  sender: string | null;
}

const ENVELOPE_COLUMNS =
  "envelope_id, device_id, channel_id, payload, enqueued_at, expires_at, attempts, last_sequence, sender";
/**
 * What the fast ack reads back: no payloads or timestamps to transfer and decode (a federated
 * frame's origin event and sender too, which are NULL for every other envelope).
 */
const ACK_COLUMNS =
  "envelope_id, channel_id, last_sequence, floor(extract(epoch FROM enqueued_at) * 1000)::int8 AS enqueued_ms, attempts, origin_event, CASE WHEN origin_event IS NULL THEN NULL ELSE sender END AS origin_sender";

/**
 * The delivery path's statements, each run as a named prepared statement (parsed and planned
 * once per connection on real Postgres; see QueryOptions.name).
 */
const ENQUEUE_SQL =
  `INSERT INTO relay_queue (device_id, channel_key, channel_id, payload, expires_at, sender,
                           claimed_by, claimed_at, last_sequence, attempts, origin_event)
  SELECT d, 'inbox:' || d, c, p, now() + make_interval(secs => $4), s,
         cb, CASE WHEN cb IS NULL THEN NULL ELSE now() END, ls, CASE WHEN cb IS NULL THEN 0 ELSE 1 END, oe
  FROM unnest($1::text[], $2::int8[], $3::bytea[], $5::text[], $6::text[], $7::int8[], $8::text[])
    AS t(d, c, p, s, cb, ls, oe)
  RETURNING envelope_id`;

/**
 * Timestamps as integer milliseconds since the epoch: a Date built from a number costs a
 * fraction of parsing timestamptz text (the delivery path reads two per envelope). Truncated to
 * the millisecond like the text parse.
 */
const msOf = (column: string, as: string) =>
  `floor(extract(epoch FROM ${column}) * 1000)::int8 AS ${as}`;
const FAST_ENVELOPE_COLUMNS =
  `r.envelope_id, r.device_id, r.channel_id, r.payload, ${msOf("r.enqueued_at", "enqueued_ms")}, ` +
  `${msOf("r.expires_at", "expires_ms")}, r.attempts, r.last_sequence, r.sender`;

/** An envelope row with its timestamps as epoch milliseconds (int8 text). */
type FastEnvelopeRow = Omit<EnvelopeRow, "enqueued_at" | "expires_at"> & {
  enqueued_ms: string;
  expires_ms: string;
};

function fromFastRow(r: FastEnvelopeRow): RelayEnvelope {
  return envelopeOf(r, new Date(Number(r.enqueued_ms)), new Date(Number(r.expires_ms)));
}

// `next` is materialized so the row locks are taken once, before numbering; the window numbers
// the claimed rows in FIFO order for the sequences.
const claimSql = (columns: string) =>
  `WITH ${RELAXED_COMMIT}, next AS MATERIALIZED (
    SELECT envelope_id FROM relay_queue
    WHERE device_id = $1 AND claimed_by IS NULL AND expires_at > now()
    ORDER BY envelope_id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
  ), numbered AS (
    SELECT envelope_id, row_number() OVER (ORDER BY envelope_id) - 1 AS i FROM next
  )
  UPDATE relay_queue r
  SET claimed_by = $2, claimed_at = now(), attempts = r.attempts + 1,
      last_sequence = COALESCE($4::int8 + numbered.i, r.last_sequence)
  FROM numbered, relaxed WHERE r.envelope_id = numbered.envelope_id
  RETURNING ${columns}`;
const CLAIM_SQL = claimSql(FAST_ENVELOPE_COLUMNS);
/**
 * The replay's claim: only what is sent (no timestamps to compute, transfer and build Dates
 * from; about 2 µs of Postgres and 2 µs of server CPU less per envelope).
 */
const CLAIM_REPLAY_SQL = claimSql("r.envelope_id, r.payload, r.sender");

// Driven by primary-key lookups (envelope_id = ANY) rather than a join the planner might turn
// into a scan of the session's claims.
const MARK_SENT_SQL = `WITH ${RELAXED_COMMIT}
  UPDATE relay_queue
  SET last_sequence = ($3::int8[])[array_position($2::int8[], envelope_id)]
  FROM relaxed
  WHERE envelope_id = ANY($2::int8[]) AND claimed_by = $1`;

/**
 * Delete a session's acknowledged envelopes and raise the inbox offsets, in one statement.
 * `byId`: the rows are found by id ($4, the envelopes sent under the sequences in $3), each still
 * claimed by this session under one of those sequences; otherwise by the session's claims and
 * sequence. In the by-id form the session test is written `COALESCE(claimed_by, '') = $2` on
 * purpose: it cannot use the partial index of claims, so the plan (a generic one too, which a
 * prepared statement keeps for the connection's life, planned maybe while the table was empty)
 * is always the (device_id, envelope_id) index with the ids, never a walk over every claim of
 * the session filtered by id. Session ids are never empty, so an unclaimed row never matches.
 */
function ackSql(columns: string, byId = false): string {
  const gone = byId
    ? `DELETE FROM relay_queue USING relaxed
    WHERE envelope_id = ANY($4::int8[]) AND device_id = $1 AND COALESCE(claimed_by, '') = $2
      AND last_sequence = ANY($3::int8[])`
    : `DELETE FROM relay_queue USING relaxed
    WHERE claimed_by = $2 AND device_id = $1 AND last_sequence = ANY($3::int8[])`;
  return `WITH ${RELAXED_COMMIT}, gone AS (
    ${gone}
    RETURNING ${columns}
  ), offsets AS (
    INSERT INTO inbox_offset AS o (entity_id, channel_id, last_envelope_id, updated_at)
    SELECT $1, channel_id, max(envelope_id), now() FROM gone GROUP BY channel_id
    ON CONFLICT (entity_id, channel_id) DO UPDATE
      SET last_envelope_id = GREATEST(o.last_envelope_id, EXCLUDED.last_envelope_id),
          updated_at = now()
  )
  SELECT * FROM gone`;
}
const ACK_FULL_SQL = ackSql(ENVELOPE_COLUMNS);
const ACK_IDS_SQL = ackSql(ACK_COLUMNS);
const ACK_FULL_BY_ID_SQL = ackSql(ENVELOPE_COLUMNS, true);
const ACK_IDS_BY_ID_SQL = ackSql(ACK_COLUMNS, true);

function toEnvelope(r: EnvelopeRow): RelayEnvelope {
  return envelopeOf(r, r.enqueued_at, r.expires_at);
}

/** An envelope from a row of either kind and its two times. */
function envelopeOf(
  r: Omit<EnvelopeRow, "enqueued_at" | "expires_at">,
  enqueuedAt: Date,
  expiresAt: Date,
): RelayEnvelope {
  return {
    envelopeId: String(r.envelope_id),
    deviceId: r.device_id,
    channelId: Number(r.channel_id),
    payload: r.payload,
    enqueuedAt,
    expiresAt,
    attempts: r.attempts,
    lastSequence: r.last_sequence === null ? null : Number(r.last_sequence),
    sender: r.sender ?? null,
  };
}

/** A block of `limit` sequences from `first` must fit in u32. */
function checkSequenceBlock(first: number, limit: number): void {
  v.u32("first sequence", first);
  if (first + limit - 1 > MAX_U32) {
    throw new InvalidValue(
      "first sequence",
      first,
      `a block of ${limit} sequences that fits in u32 (at most ${MAX_U32 - limit + 1})`,
    );
  }
}

/** Order envelopes by id (bigint strings compare by length, then lexically). */
function byId(a: { envelope_id: string }, b: { envelope_id: string }): number {
  const x = String(a.envelope_id), y = String(b.envelope_id);
  return x.length - y.length || (x < y ? -1 : x > y ? 1 : 0);
}

export class PgRelayRepo implements RelayRepo {
  constructor(private readonly db: Db) {}

  /**
   * Enqueue one row per recipient, in batches, atomically; returns ids in input order. An item
   * with `claim` is written as already handed to that session under that sequence (a live copy
   * made durable while it awaits the recipient's ACK, ccp1.md §5).
   */
  async enqueue(items: EnqueueItem[], ttlSeconds: number): Promise<string[]> {
    v.int("relay ttl seconds", ttlSeconds, 1, 10 * 365 * 86400);
    if (!Array.isArray(items)) throw new InvalidValue("items", items, "an array of envelopes");
    for (const it of items) {
      v.id("device id", it.deviceId);
      v.u32("channel id", it.channelId);
      if (!(it.payload instanceof Uint8Array)) {
        throw new InvalidValue("payload", typeof it.payload, "a Uint8Array");
      }
      if (it.sender !== undefined && it.sender !== null) v.text("sender", it.sender, 300, 1);
      if (it.originEvent !== undefined && it.originEvent !== null) {
        v.text("origin event", it.originEvent, 128, 1);
      }
      if (it.claim !== undefined) {
        v.id("session id", it.claim.sessionId);
        v.u32("sequence", it.claim.sequence);
      }
    }
    if (items.length === 0) return [];
    const insert = async (q: Pick<Db, "query">, batch: typeof items) => {
      const res = await q.query<{ envelope_id: string }>(
        ENQUEUE_SQL,
        [
          batch.map((i) => i.deviceId),
          batch.map((i) => i.channelId),
          batch.map((i) => i.payload),
          ttlSeconds,
          batch.map((i) => i.sender ?? null),
          batch.map((i) => i.claim?.sessionId ?? null),
          batch.map((i) => i.claim?.sequence ?? null),
          batch.map((i) => i.originEvent ?? null),
        ],
        { name: "commucat_relay_enqueue" },
      );
      // Ids are assigned in row order within the statement; sorting restores input order.
      return res.rows.sort(byId).map((r) => String(r.envelope_id));
    };
    if (items.length <= ENQUEUE_BATCH) return await insert(this.db, items);
    return await this.db.transaction(async (tx) => {
      const ids: string[] = [];
      for (let i = 0; i < items.length; i += ENQUEUE_BATCH) {
        ids.push(...await insert(tx, items.slice(i, i + ENQUEUE_BATCH)));
      }
      return ids;
    });
  }

  /**
   * Claim the oldest unclaimed, unexpired envelopes of a device (SKIP LOCKED: no waiting).
   * With `firstSequence`, the same statement records envelope i (FIFO) as sent under
   * `firstSequence + i`, which saves the markSent round trip.
   */
  async claim(
    deviceId: string,
    sessionId: string,
    limit = MAX_CLAIM,
    options: ClaimOptions = {},
  ): Promise<RelayEnvelope[]> {
    v.id("device id", deviceId);
    v.id("session id", sessionId);
    v.int("claim limit", limit, 1, MAX_CLAIM);
    const first = options.firstSequence;
    if (first !== undefined) checkSequenceBlock(first, limit);
    const res = await this.db.query<FastEnvelopeRow>(
      CLAIM_SQL,
      [deviceId, sessionId, limit, first ?? null],
      { name: "commucat_relay_claim" },
    );
    return res.rows.sort(byId).map(fromFastRow);
  }

  /** `claim` with `firstSequence`, reading back only ids, payloads and senders. */
  async claimForReplay(
    deviceId: string,
    sessionId: string,
    limit: number,
    firstSequence: number,
  ): Promise<ReplayEnvelope[]> {
    v.id("device id", deviceId);
    v.id("session id", sessionId);
    v.int("claim limit", limit, 1, MAX_CLAIM);
    checkSequenceBlock(firstSequence, limit);
    const res = await this.db.query<
      { envelope_id: string; payload: Uint8Array; sender: string | null }
    >(CLAIM_REPLAY_SQL, [deviceId, sessionId, limit, firstSequence], {
      name: "commucat_relay_claim_replay",
    });
    return res.rows.sort(byId).map((r) => ({
      envelopeId: String(r.envelope_id),
      payload: r.payload,
      sender: r.sender ?? null,
    }));
  }

  /** Record, in one statement, the sequence each claimed envelope was sent under. */
  async markSent(
    sessionId: string,
    sent: { envelopeId: string; sequence: number }[],
  ): Promise<void> {
    v.id("session id", sessionId);
    if (sent.length === 0) return;
    const ids = sent.map((s) => v.bigId("envelope id", s.envelopeId));
    const seqs = sent.map((s) => v.u32("sequence", s.sequence));
    await this.db.query(MARK_SENT_SQL, [sessionId, ids, seqs], {
      name: "commucat_relay_mark_sent",
    });
  }

  /**
   * Delete what this session sent under these sequences and advance the device's inbox offset
   * per channel to the highest acknowledged envelope — one statement, so both or neither.
   * `{ returnPayloads: false }` reads back only ids, channels and sequences (the fast path).
   */
  ack(
    deviceId: string,
    sessionId: string,
    sequences: number[],
    options?: AckOptions & { returnPayloads?: true },
  ): Promise<RelayEnvelope[]>;
  ack(
    deviceId: string,
    sessionId: string,
    sequences: number[],
    options: AckOptions & { returnPayloads: false },
  ): Promise<RelayAck[]>;
  ack(
    deviceId: string,
    sessionId: string,
    sequences: number[],
    options: AckOptions,
  ): Promise<RelayEnvelope[] | RelayAck[]>;
  async ack(
    deviceId: string,
    sessionId: string,
    sequences: number[],
    options: AckOptions = {},
  ): Promise<RelayEnvelope[] | RelayAck[]> {
    v.id("device id", deviceId);
    v.id("session id", sessionId);
    if (!Array.isArray(sequences)) {
      throw new InvalidValue("sequences", sequences, "an array of sequences");
    }
    if (sequences.length === 0) return [];
    const seqs = sequences.map((s) => v.u32("sequence", s));
    const full = options.returnPayloads !== false;
    const ids = options.envelopeIds;
    if (ids !== undefined) {
      if (!Array.isArray(ids) || ids.length !== seqs.length) {
        throw new InvalidValue("envelope ids", ids, "one envelope id per sequence");
      }
      for (const id of ids) v.bigId("envelope id", id);
    }
    const sql = ids !== undefined
      ? (full ? ACK_FULL_BY_ID_SQL : ACK_IDS_BY_ID_SQL)
      : (full ? ACK_FULL_SQL : ACK_IDS_SQL);
    const name = `commucat_relay_ack${full ? "" : "_ids"}${ids !== undefined ? "_by_id" : ""}`;
    const res = await this.db.query<EnvelopeRow>(
      sql,
      ids !== undefined ? [deviceId, sessionId, seqs, ids] : [deviceId, sessionId, seqs],
      { name },
    );
    const rows = res.rows.sort(byId);
    if (full) return rows.map(toEnvelope);
    type AckRow = EnvelopeRow & {
      enqueued_ms: string;
      origin_event: string | null;
      origin_sender: string | null;
    };
    return (rows as unknown as AckRow[]).map((r) => {
      const acked: RelayAck = {
        envelopeId: String(r.envelope_id),
        channelId: Number(r.channel_id),
        sequence: Number(r.last_sequence),
        enqueuedAt: new Date(Number(r.enqueued_ms)),
        attempts: r.attempts,
      };
      if (r.origin_event !== null && r.origin_sender !== null) {
        acked.origin = { eventId: r.origin_event, sender: r.origin_sender };
      }
      return acked;
    });
  }

  /** Release claims (by session, or every claim on a device) so they are replayed again. */
  async requeue(by: { sessionId?: string; deviceId?: string }): Promise<number> {
    const sessionId = by.sessionId === undefined ? null : v.id("session id", by.sessionId);
    const deviceId = by.deviceId === undefined ? null : v.id("device id", by.deviceId);
    if (sessionId === null && deviceId === null) {
      throw new InvalidValue("requeue", by, "a sessionId or a deviceId");
    }
    const res = await this.db.query(
      `UPDATE relay_queue SET claimed_by = NULL, claimed_at = NULL
       WHERE claimed_by IS NOT NULL
         AND ($1::text IS NULL OR claimed_by = $1)
         AND ($2::text IS NULL OR device_id = $2)`,
      [sessionId, deviceId],
    );
    return res.rowCount;
  }

  async purgeExpired(now: Date = new Date()): Promise<number> {
    const res = await this.db.query(`DELETE FROM relay_queue WHERE expires_at <= $1`, [
      v.date("now", now).toISOString(),
    ]);
    return res.rowCount;
  }

  async expire(
    now: Date = new Date(),
    limit = 1000,
    notices?: (expired: ExpiredEnvelope[]) => {
      items: { deviceId: string; channelId: number; payload: Uint8Array }[];
      ttlSeconds: number;
    },
  ): Promise<{ expired: ExpiredEnvelope[]; queued: number }> {
    const n = v.int("limit", limit, 1, 10_000);
    const at = v.date("now", now).toISOString();
    // One transaction: the expired envelopes go and their notices arrive together, or neither.
    return await this.db.transaction(async (tx) => {
      const res = await tx.query<{
        envelope_id: string;
        device_id: string;
        channel_id: string;
        enqueued_at: Date;
        expires_at: Date;
        sender: string | null;
      }>(
        `DELETE FROM relay_queue WHERE envelope_id IN (
           SELECT envelope_id FROM relay_queue WHERE expires_at <= $1
           ORDER BY expires_at, envelope_id LIMIT $2 FOR UPDATE SKIP LOCKED)
         RETURNING envelope_id, device_id, channel_id, enqueued_at, expires_at, sender`,
        [at, n],
      );
      const expired = res.rows.map((r) => ({
        envelopeId: String(r.envelope_id),
        deviceId: r.device_id,
        channelId: Number(r.channel_id),
        enqueuedAt: r.enqueued_at,
        expiresAt: r.expires_at,
        sender: r.sender ?? null,
      })).sort((a, b) =>
        a.expiresAt.getTime() - b.expiresAt.getTime() || Number(a.envelopeId) - Number(b.envelopeId)
      );
      if (expired.length === 0 || !notices) return { expired, queued: 0 };
      const { items, ttlSeconds } = notices(expired);
      if (items.length === 0) return { expired, queued: 0 };
      const ttl = v.int("ttl seconds", ttlSeconds, 1, 31_536_000);
      await tx.query(
        `INSERT INTO relay_queue (device_id, channel_key, channel_id, payload, expires_at)
         SELECT d, 'inbox:' || d, c, p, now() + make_interval(secs => $4)
         FROM unnest($1::text[], $2::int8[], $3::bytea[]) AS t(d, c, p)`,
        [
          items.map((i) => v.id("device id", i.deviceId)),
          items.map((i) => v.u32("channel id", i.channelId)),
          items.map((i) => i.payload),
          ttl,
        ],
      );
      return { expired, queued: items.length };
    });
  }

  /** Unexpired envelopes waiting for a device, and when the oldest was enqueued. */
  async depth(deviceId: string): Promise<RelayDepth> {
    const res = await this.db.query<
      { n: string; oldest: Date | null; in_flight: string; redelivered: string }
    >(
      `SELECT count(*) AS n, min(enqueued_at) AS oldest,
              count(*) FILTER (WHERE claimed_by IS NOT NULL) AS in_flight,
              count(*) FILTER (WHERE attempts > 1) AS redelivered
       FROM relay_queue WHERE device_id = $1 AND expires_at > now()`,
      [v.id("device id", deviceId)],
    );
    const r = res.rows[0];
    return {
      depth: Number(r.n),
      oldest: r.oldest,
      inFlight: Number(r.in_flight),
      redelivered: Number(r.redelivered),
    };
  }

  async waiting(deviceIds: string[]): Promise<string[]> {
    if (!Array.isArray(deviceIds)) {
      throw new InvalidValue("device ids", deviceIds, "an array of device ids");
    }
    if (deviceIds.length === 0) return [];
    const ids = deviceIds.map((d) => v.id("device id", d));
    const res = await this.db.query<{ device_id: string }>(
      `SELECT DISTINCT device_id FROM relay_queue
       WHERE device_id = ANY($1::text[]) AND claimed_by IS NULL AND expires_at > now()`,
      [ids],
      { name: "commucat_relay_waiting" },
    );
    return res.rows.map((r) => r.device_id);
  }

  async totalDepth(): Promise<number> {
    const res = await this.db.query<{ n: string }>(`SELECT count(*) AS n FROM relay_queue`);
    return Number(res.rows[0].n);
  }
}

export class PgOffsetRepo implements OffsetRepo {
  constructor(private readonly db: Db) {}

  /** Set the last delivered envelope for (entity, channel). */
  async store(entityId: string, channelId: number, envelopeId: string): Promise<void> {
    await this.db.query(
      `INSERT INTO inbox_offset (entity_id, channel_id, last_envelope_id, updated_at)
       VALUES ($1, $2, $3, now())
       ON CONFLICT (entity_id, channel_id) DO UPDATE
         SET last_envelope_id = EXCLUDED.last_envelope_id, updated_at = now()`,
      [
        v.id("entity id", entityId),
        v.u32("channel id", channelId),
        v.bigId("envelope id", envelopeId),
      ],
    );
  }

  async read(entityId: string, channelId: number): Promise<string | null> {
    const res = await this.db.query<{ last_envelope_id: string }>(
      `SELECT last_envelope_id FROM inbox_offset WHERE entity_id = $1 AND channel_id = $2`,
      [v.id("entity id", entityId), v.u32("channel id", channelId)],
    );
    return res.rows[0] ? String(res.rows[0].last_envelope_id) : null;
  }

  async list(
    entityId: string,
  ): Promise<{ channelId: number; envelopeId: string; updatedAt: Date }[]> {
    const res = await this.db.query<
      { channel_id: string; last_envelope_id: string; updated_at: Date }
    >(
      `SELECT channel_id, last_envelope_id, updated_at FROM inbox_offset
       WHERE entity_id = $1 ORDER BY channel_id`,
      [v.id("entity id", entityId)],
    );
    return res.rows.map((r) => ({
      channelId: Number(r.channel_id),
      envelopeId: String(r.last_envelope_id),
      updatedAt: r.updated_at,
    }));
  }
}
