/**
 * The sender capability (ccp1.md §4.2): the server names the authenticated sender of every frame
 * it relays to a device that asked for it (HELLO `capabilities: ["sender"]`).
 *
 * - MSG and KEY_UPDATE (opaque): payload = `varint(n) ‖ sender (n octets, UTF-8) ‖ payload`;
 * - TYPING, GROUP_EVENT and PRESENCE about a peer (JSON objects): a top-level `"sender"` field,
 *   replacing any value the sending client put there.
 *
 * @module
 */
import { concatBytes } from "./bytes.ts";
import { FrameType } from "./frame.ts";
import { decodeVarint, encodeVarint } from "./varint.ts";

/** The capability name a client lists in HELLO. */
export const SENDER_CAPABILITY = "sender";
/** Longest sender a stamp may carry (a device id, or `device@domain`), in octets. */
export const MAX_SENDER_OCTETS = 512;

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** True for the frame types whose payload is opaque (the stamp is a prefix). */
export function isOpaqueType(type: FrameType): boolean {
  return type === FrameType.Msg || type === FrameType.KeyUpdate;
}

/** The prefix `varint(n) ‖ sender` put before an opaque payload. */
export function senderPrefix(sender: string): Uint8Array {
  const bytes = encoder.encode(sender);
  return concatBytes(encodeVarint(bytes.length), bytes);
}

/** How many senders' prefixes {@link sharedSenderPrefix} keeps (emptied when full). */
const SHARED_PREFIXES = 4096;
const sharedPrefixes = new Map<string, Uint8Array>();

/**
 * {@link senderPrefix}, made once per sender and shared: a relay stamps every frame a device
 * sends with the same prefix. The array is shared, so callers must only read it.
 */
export function sharedSenderPrefix(sender: string): Uint8Array {
  let prefix = sharedPrefixes.get(sender);
  if (prefix === undefined) {
    if (sharedPrefixes.size >= SHARED_PREFIXES) sharedPrefixes.clear();
    prefix = senderPrefix(sender);
    sharedPrefixes.set(sender, prefix);
  }
  return prefix;
}

/**
 * A JSON payload with its top-level `"sender"` set to `sender` (any value the client put there
 * is replaced). A payload that is not a JSON object is returned unchanged.
 */
export function stampJson(payload: Uint8Array, sender: string): Uint8Array {
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(payload));
  } catch {
    return payload;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return payload;
  return encoder.encode(JSON.stringify({ ...value, sender }));
}

/** Thrown by {@link splitSender} for a payload that does not start with a valid stamp. */
export class SenderStampError extends Error {
  constructor(detail: string) {
    super(`sender stamp: ${detail}`);
    this.name = "SenderStampError";
  }
}

/** Splits a stamped opaque payload into the sender and the sender's own payload (a view). */
export function splitSender(payload: Uint8Array): { sender: string; payload: Uint8Array } {
  let length;
  try {
    length = decodeVarint(payload, 0);
  } catch {
    throw new SenderStampError("the length is not a valid varint");
  }
  if (length === null) throw new SenderStampError("the payload ends inside the length");
  if (length.value === 0 || length.value > MAX_SENDER_OCTETS) {
    throw new SenderStampError(`length ${length.value} outside 1..${MAX_SENDER_OCTETS}`);
  }
  const end = length.length + length.value;
  if (end > payload.length) throw new SenderStampError("the payload ends inside the sender");
  let sender: string;
  try {
    sender = decoder.decode(payload.subarray(length.length, end));
  } catch {
    throw new SenderStampError("the sender is not UTF-8");
  }
  return { sender, payload: payload.subarray(end) };
}
