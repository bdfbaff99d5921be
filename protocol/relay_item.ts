/**
 * The envelope a relayed frame travels in between nodes and through the relay queue: the frame
 * a recipient gets (before its own sequence is assigned) and the sender the server authenticated
 * (ccp1.md §4.2). In the relay queue the frame is the row's payload and the sender its own column;
 * on the bus both travel as one packet (see {@link encodeRelayItem}).
 *
 * @module
 */
import { encodeFrame, FrameDecoder, FrameType } from "./frame.ts";
import { concatBytes } from "./bytes.ts";
import { senderPrefix } from "./sender.ts";
import { decodeVarint } from "./varint.ts";

/** A frame being routed. `sender` is "" for frames the server itself originates. */
export interface RelayItem {
  type: FrameType;
  channel: number;
  payload: Uint8Array;
  sender: string;
}

const decoder = new TextDecoder("utf-8", { fatal: true });

/** The item's frame as stored in the relay queue (sequence 0: replaced on delivery). */
export function encodeItemFrame(item: RelayItem): Uint8Array {
  return encodeFrame({
    type: item.type,
    channel: item.channel,
    sequence: 0,
    payload: item.payload,
  });
}

/** The item a stored frame and its sender describe; throws on a malformed frame. */
export function itemFromFrame(frame: Uint8Array, sender: string | null): RelayItem {
  const frames = new FrameDecoder();
  frames.push(frame);
  const decoded = frames.next();
  if (decoded === null || frames.buffered !== 0) throw new Error("malformed relay frame");
  return {
    type: decoded.type,
    channel: decoded.channel,
    payload: decoded.payload,
    sender: sender ?? "",
  };
}

/** `varint(sender length) ‖ sender ‖ frame`: the item as one packet. */
export function encodeRelayItem(item: RelayItem): Uint8Array {
  // The same `varint(n) ‖ sender` as the sender capability's stamp (n may be 0 here).
  return concatBytes(senderPrefix(item.sender), encodeItemFrame(item));
}

/** Reads {@link encodeRelayItem}'s packet; throws on malformed bytes. */
export function decodeRelayItem(bytes: Uint8Array): RelayItem {
  const length = decodeVarint(bytes, 0);
  if (length === null || length.length + length.value > bytes.length) {
    throw new Error("malformed relay item");
  }
  const end = length.length + length.value;
  const sender = decoder.decode(bytes.subarray(length.length, end));
  return itemFromFrame(bytes.subarray(end), sender);
}
