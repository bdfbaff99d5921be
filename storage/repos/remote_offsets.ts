/**
 * inbox_offset across domains, on the origin's side: a peer reports that its devices
 * acknowledged frames this server sent them (a signed offset event naming our outbox event ids).
 * `record` checks every named event in one transaction — it must be an event this server sent to
 * that peer, from that local sender, for that remote device, on that channel, and a frame rather
 * than an offset report itself — and then marks the events acknowledged (`remote_acked_at`),
 * raises the peer device's `remote_inbox_offset` and queues the receipts for the local sender,
 * all or nothing. Events acknowledged before are counted but change nothing.
 */
import type { Db } from "../db.ts";
import type { RemoteAckInput, RemoteAckResult, RemoteOffset, RemoteOffsetRepo } from "../types.ts";
import * as v from "./validate.ts";

/** Event ids one report may name. */
export const MAX_REPORTED_EVENTS = 256;
/** The frame type code of ACK (protocol/frame.ts FrameType.Ack). */
const ACK_TYPE = 0x06;

/** The frame type of a hex-encoded CCP-1 frame from its first bytes (after the length varint). */
export function frameTypeOfHex(hexPrefix: string): number | null {
  for (let i = 0; i + 2 <= hexPrefix.length && i < 20; i += 2) {
    const byte = parseInt(hexPrefix.slice(i, i + 2), 16);
    if (Number.isNaN(byte)) return null;
    if ((byte & 0x80) === 0) {
      const type = parseInt(hexPrefix.slice(i + 2, i + 4), 16);
      return Number.isNaN(type) ? null : type;
    }
  }
  return null;
}

interface OutboxCheckRow {
  id: string;
  event_id: string;
  sender: string | null;
  target: string | null;
  channel: string | null;
  frame_prefix: string | null;
  remote_acked_at: Date | null;
  created_at: Date;
}

export class PgRemoteOffsetRepo implements RemoteOffsetRepo {
  constructor(private readonly db: Db) {}

  async record(
    input: RemoteAckInput,
    receipts: (fresh: { eventId: string; createdAt: Date }[]) => {
      items: { deviceId: string; channelId: number; payload: Uint8Array }[];
      ttlSeconds: number;
    },
  ): Promise<RemoteAckResult> {
    const peer = v.domain(input.peerDomain);
    const recipient = v.text("recipient", input.recipient, 300, 1);
    const sender = v.text("sender", input.sender, 300, 1);
    const channel = v.u32("channel id", input.channel);
    const ackedAt = v.date("acked at", input.ackedAt);
    if (!Array.isArray(input.eventIds) || input.eventIds.length === 0) {
      return { ok: false, eventId: null, reason: "the report names no event" };
    }
    if (input.eventIds.length > MAX_REPORTED_EVENTS) {
      return {
        ok: false,
        eventId: null,
        reason: `the report names ${input.eventIds.length} events; at most ${MAX_REPORTED_EVENTS}`,
      };
    }
    const ids = input.eventIds.map((id) => v.text("event id", id, 128, 1));
    if (new Set(ids).size !== ids.length) {
      return { ok: false, eventId: null, reason: "the report names an event twice" };
    }
    return await this.db.transaction(async (tx) => {
      const res = await tx.query<OutboxCheckRow>(
        `SELECT id, event_id, body #>> '{event,payload,sender}' AS sender,
                body #>> '{event,payload,target}' AS target,
                body #>> '{event,payload,channel}' AS channel,
                substr(body #>> '{event,payload,payload}', 1, 24) AS frame_prefix,
                remote_acked_at, created_at
         FROM federation_outbox WHERE peer_domain = $1 AND event_id = ANY($2::text[])
         FOR UPDATE`,
        [peer, ids],
      );
      const byId = new Map(res.rows.map((r) => [r.event_id, r]));
      for (const id of ids) {
        const row = byId.get(id);
        if (!row) {
          return { ok: false, eventId: id, reason: `no event ${id} was sent to ${peer}` };
        }
        if (
          row.sender?.toLowerCase() !== sender.toLowerCase() ||
          row.target?.toLowerCase() !== recipient.toLowerCase()
        ) {
          return {
            ok: false,
            eventId: id,
            reason: `event ${id} was not sent from ${sender} to ${recipient}`,
          };
        }
        if (Number(row.channel) !== channel) {
          return {
            ok: false,
            eventId: id,
            reason: `event ${id} was not sent on channel ${channel}`,
          };
        }
        if (frameTypeOfHex(row.frame_prefix ?? "") === ACK_TYPE) {
          return { ok: false, eventId: id, reason: `event ${id} is an offset report itself` };
        }
      }
      const fresh = ids.map((id) => byId.get(id)!).filter((r) => r.remote_acked_at === null);
      if (fresh.length === 0) return { ok: true, fresh: [], already: ids.length, queued: 0 };
      // The peer's time, but never later than ours: it only orders and displays.
      const at = new Date(Math.min(ackedAt.getTime(), Date.now())).toISOString();
      await tx.query(
        `UPDATE federation_outbox SET remote_acked_at = $2::timestamptz WHERE id = ANY($1::int8[])`,
        [fresh.map((r) => r.id), at],
      );
      const last = fresh.reduce((a, b) => (Number(b.id) > Number(a.id) ? b : a));
      await tx.query(
        `INSERT INTO remote_inbox_offset AS o
           (peer_domain, entity_id, channel_id, last_event_id, acked_frames, acked_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6::timestamptz, now())
         ON CONFLICT (peer_domain, entity_id, channel_id) DO UPDATE
           SET last_event_id = EXCLUDED.last_event_id,
               acked_frames = o.acked_frames + EXCLUDED.acked_frames,
               acked_at = GREATEST(o.acked_at, EXCLUDED.acked_at),
               updated_at = now()`,
        [peer, recipient.toLowerCase(), channel, last.event_id, fresh.length, at],
      );
      const built = receipts(fresh.map((r) => ({ eventId: r.event_id, createdAt: r.created_at })));
      if (built.items.length > 0) {
        await tx.query(
          `INSERT INTO relay_queue (device_id, channel_key, channel_id, payload, expires_at)
           SELECT d, 'inbox:' || d, c, p, now() + make_interval(secs => $4)
           FROM unnest($1::text[], $2::int8[], $3::bytea[]) AS t(d, c, p)`,
          [
            built.items.map((i) => v.id("device id", i.deviceId)),
            built.items.map((i) => v.u32("channel id", i.channelId)),
            built.items.map((i) => i.payload),
            v.int("ttl seconds", built.ttlSeconds, 1, 31_536_000),
          ],
        );
      }
      return {
        ok: true,
        fresh: fresh.map((r) => r.event_id),
        already: ids.length - fresh.length,
        queued: built.items.length,
      };
    });
  }

  async list(
    filter: { peerDomain?: string; entityId?: string; limit?: number } = {},
  ): Promise<RemoteOffset[]> {
    const limit = v.int("limit", filter.limit ?? 100, 1, 500);
    const peer = filter.peerDomain === undefined ? null : v.domain(filter.peerDomain);
    const entity = filter.entityId === undefined
      ? null
      : v.text("entity id", filter.entityId, 300, 1).toLowerCase();
    const res = await this.db.query<{
      peer_domain: string;
      entity_id: string;
      channel_id: string;
      last_event_id: string;
      acked_frames: string;
      acked_at: Date;
      updated_at: Date;
    }>(
      `SELECT peer_domain, entity_id, channel_id, last_event_id, acked_frames, acked_at, updated_at
       FROM remote_inbox_offset
       WHERE ($1::text IS NULL OR peer_domain = $1) AND ($2::text IS NULL OR entity_id = $2)
       ORDER BY updated_at DESC, peer_domain, entity_id, channel_id LIMIT $3`,
      [peer, entity, limit],
    );
    return res.rows.map((r) => ({
      peerDomain: r.peer_domain,
      entityId: r.entity_id,
      channelId: Number(r.channel_id),
      lastEventId: r.last_event_id,
      ackedFrames: Number(r.acked_frames),
      ackedAt: r.acked_at,
      updatedAt: r.updated_at,
    }));
  }
}
