/**
 * inbox_offset across domains (docs/FEDERATION.md "Offsets and receipts").
 *
 * When a device here acknowledges frames that came from a peer, this server reports it to the
 * origin as an ordinary signed federation event whose frame is an ACK (ccp1.md §7 event, frame
 * type ACK 0x06) on the frames' channel, from the acknowledging device to their sender:
 *
 *   {"delivered": ["<origin event id>", …], "acked_at": "<RFC 3339>"}
 *
 * at most {@link MAX_REPORTED_EVENTS} ids per event, through the same durable outbox as frames.
 * The origin verifies it like any event (peer, scope, signature, clock skew, replay), checks
 * that every id is an event it sent to that device from that sender on that channel, records
 * the remote offset and queues a receipt for the sender device: an ACK on channel 0 (no `ack`
 * sequence, so nothing pending matches it), relayed like any frame and acknowledged by the
 * client like one:
 *
 *   {"receipt": "delivered", "delivered": [{"id": "<event id>", "channel": 7,
 *     "recipient": "bob@b.example", "acked_at": "…"}]}
 *
 * The ids are the ones the sender's ACK named for its remote copies (`remote`).
 *
 * @module
 */
import { EVENT_ID_PATTERN } from "../../protocol/ids.ts";
import { encodeControl, FrameType } from "../../protocol/frame.ts";
import { rfc3339ToNanos } from "../../protocol/federation.ts";
import { MAX_REPORTED_EVENTS } from "../../storage/repos/remote_offsets.ts";

export { MAX_REPORTED_EVENTS };

/** The `receipt` value of a receipt frame. */
export const RECEIPT_KIND = "delivered";
/** Seconds a receipt waits for its sender at least (it lives relay_ttl, or this when longer). */
export const RECEIPT_MIN_TTL = 3600;

/** One delivered copy, as the receipt frame names it. */
export interface DeliveryReceipt {
  /** The event id the sender's ACK named for this copy (`remote[].id`). */
  id: string;
  channel: number;
  /** The remote device that acknowledged it: `device@domain`. */
  recipient: string;
  /** When the recipient's server says it was acknowledged (RFC 3339). */
  acked_at: string;
}

/** The ACK frame of an offset report (sequence 0: the receiver numbers nothing of it). */
export function offsetFrame(channel: number, eventIds: string[], ackedAt: Date): Uint8Array {
  return encodeControl(FrameType.Ack, channel, 0, {
    delivered: eventIds,
    acked_at: ackedAt.toISOString(),
  });
}

/** Checks an offset report's JSON; returns its ids and time, or what is wrong. */
export function parseOffsetReport(
  json: unknown,
): { eventIds: string[]; ackedAt: Date } | { detail: string } {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    return { detail: "an offset report is a JSON object" };
  }
  const o = json as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (key !== "delivered" && key !== "acked_at") {
      return { detail: `unknown field ${JSON.stringify(key)} (allowed: delivered, acked_at)` };
    }
  }
  const ids = o.delivered;
  if (
    !Array.isArray(ids) || ids.length === 0 || ids.length > MAX_REPORTED_EVENTS ||
    !ids.every((id) => typeof id === "string" && EVENT_ID_PATTERN.test(id))
  ) {
    return {
      detail: `delivered: expected 1..${MAX_REPORTED_EVENTS} event ids ` +
        "(letters, digits and . _ : -)",
    };
  }
  if (new Set(ids).size !== ids.length) return { detail: "delivered: an event id is listed twice" };
  if (typeof o.acked_at !== "string") return { detail: "acked_at: expected an RFC 3339 time" };
  let nanos: bigint;
  try {
    nanos = rfc3339ToNanos(o.acked_at);
  } catch (err) {
    return { detail: `acked_at: ${(err as Error).message}` };
  }
  return { eventIds: ids as string[], ackedAt: new Date(Number(nanos / 1_000_000n)) };
}

/** The receipt frame queued for a sender device (ACK on channel 0, see the module notes). */
export function receiptFrame(entries: DeliveryReceipt[]): Uint8Array {
  return encodeControl(FrameType.Ack, 0, 0, { receipt: RECEIPT_KIND, delivered: entries });
}
