/**
 * Expiry notices: when envelopes expire unread (`[limits] relay_ttl`), each local sender device
 * is told which of its frames expired, so "sent" never silently means "lost". The notice is a
 * non-fatal ERROR on channel 0, queued in the sender's own relay queue (it reaches the sender
 * when it is online now — its holder replays it — or at its next connection):
 *
 *   {"type": "about:blank", "title": "Frames Expired", "status": 410, "fatal": false,
 *    "detail": "3 frames expired unread after relay_ttl",
 *    "expired": [{"channel": 7, "recipient": "bob-phone", "frames": 3,
 *                 "first_queued_at": "…", "last_queued_at": "…", "expired_at": "…"}]}
 *
 * One entry per (channel, recipient); at most MAX_ENTRIES entries per notice and MAX_NOTICES
 * notices per sender per pass (further frames are summed into `more_frames`). The client ACKs
 * the notice like any relayed frame. Envelopes without a sender (written before migration 013,
 * or server notices themselves) and those of remote senders (device@other.domain) get none.
 */
import type { ExpiredFrames } from "../protocol/control.ts";
import { encodeControlPayload, encodeFrame, FrameType } from "../protocol/frame.ts";
import type { ExpiredEnvelope, Storage } from "../storage/types.ts";

export const NOTICE_TITLE = "Frames Expired";
/** Entries ((channel, recipient) pairs) in one notice. */
export const MAX_ENTRIES = 256;
/** Seconds a notice waits for its sender at least (it lives relay_ttl, or this when longer). */
export const NOTICE_MIN_TTL = 3600;
/** Notices one sender gets from one purge pass. */
export const MAX_NOTICES = 8;
/** Expired envelopes read per statement, and statements per pass. */
const BATCH = 1000;
const MAX_BATCHES = 50;

/** One entry of a notice: the wire type the SDK reads too (protocol/control.ts). */
export type ExpiryEntry = ExpiredFrames;

export interface ExpiryNotice {
  type: "about:blank";
  title: typeof NOTICE_TITLE;
  status: 410;
  fatal: false;
  detail: string;
  expired: ExpiryEntry[];
  /** Frames of this pass not listed (over MAX_NOTICES × MAX_ENTRIES entries). */
  more_frames?: number;
}

/** The local device a sender names, or null (no sender, or one of another domain). */
function localSender(sender: string | null, domain: string): string | null {
  if (!sender) return null;
  const at = sender.lastIndexOf("@");
  if (at < 0) return sender;
  return sender.slice(at + 1).toLowerCase() === domain ? sender.slice(0, at) : null;
}

/** Notices per local sender for a set of expired envelopes (pure; see the module doc). */
export function buildNotices(
  expired: ExpiredEnvelope[],
  domain: string,
): Map<string, ExpiryNotice[]> {
  const bySender = new Map<string, Map<string, ExpiryEntry>>();
  for (const e of expired) {
    const sender = localSender(e.sender, domain);
    if (sender === null) continue;
    let entries = bySender.get(sender);
    if (!entries) bySender.set(sender, entries = new Map());
    const key = `${e.channelId}|${e.deviceId}`;
    const queued = e.enqueuedAt.toISOString();
    const at = e.expiresAt.toISOString();
    const entry = entries.get(key);
    if (!entry) {
      entries.set(key, {
        channel: e.channelId,
        recipient: e.deviceId,
        frames: 1,
        first_queued_at: queued,
        last_queued_at: queued,
        expired_at: at,
      });
    } else {
      entry.frames++;
      if (queued < entry.first_queued_at) entry.first_queued_at = queued;
      if (queued > entry.last_queued_at) entry.last_queued_at = queued;
      if (at > entry.expired_at) entry.expired_at = at;
    }
  }
  const out = new Map<string, ExpiryNotice[]>();
  for (const [sender, entries] of bySender) {
    const all = [...entries.values()];
    const notices: ExpiryNotice[] = [];
    for (let i = 0; i < all.length && notices.length < MAX_NOTICES; i += MAX_ENTRIES) {
      const part = all.slice(i, i + MAX_ENTRIES);
      const frames = part.reduce((n, e) => n + e.frames, 0);
      notices.push({
        type: "about:blank",
        title: NOTICE_TITLE,
        status: 410,
        fatal: false,
        detail: `${frames} ${frames === 1 ? "frame" : "frames"} expired unread after relay_ttl`,
        expired: part,
      });
    }
    const listed = notices.reduce((n, x) => n + x.expired.length, 0);
    if (listed < all.length) {
      notices[notices.length - 1].more_frames = all.slice(listed).reduce((n, e) => n + e.frames, 0);
    }
    out.set(sender, notices);
  }
  return out;
}

/**
 * One purge pass: deletes expired envelopes in batches and queues the notices for their
 * senders. Returns how many envelopes expired and how many notices were queued.
 */
export async function expireWithNotices(
  storage: Storage,
  opts: { domain: string; relayTtl: number; now?: Date },
): Promise<{ expired: number; notices: number; senders: number }> {
  let expired = 0;
  let notices = 0;
  const senders = new Set<string>();
  for (let batch = 0; batch < MAX_BATCHES; batch++) {
    const result = await storage.relay.expire(opts.now ?? new Date(), BATCH, (rows) => {
      const items = [];
      for (const [sender, list] of buildNotices(rows, opts.domain)) {
        senders.add(sender);
        for (const notice of list) {
          items.push({
            deviceId: sender,
            channelId: 0,
            payload: encodeFrame({
              type: FrameType.Error,
              channel: 0,
              sequence: 0,
              payload: encodeControlPayload(notice),
            }),
          });
        }
      }
      return { items, ttlSeconds: Math.max(opts.relayTtl, NOTICE_MIN_TTL) };
    });
    expired += result.expired.length;
    notices += result.queued;
    if (result.expired.length < BATCH) break;
  }
  return { expired, notices, senders: senders.size };
}
