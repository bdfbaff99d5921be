/**
 * The signed event as it travels between domains (ccp1.md §7), its limits, and a strict
 * validator for untrusted JSON: every field is type-checked and unknown keys are refused, so
 * hostile bodies (wrong types, missing fields, `__proto__`) get a problem naming the field.
 *
 * Wire body: `{"event": FederationEvent, "signature": hex(64 bytes)}`; an optional `digest`
 * (hex, 32 bytes) is accepted and must then equal the recomputed digest.
 *
 * @module
 */
import type { FederationEvent } from "../../protocol/federation.ts";
import { isHex } from "../../protocol/hex.ts";
import { MAX_U32 } from "../../protocol/varint.ts";
import { type Frame, FRAME_TYPE_NAMES, FrameDecoder, FrameType } from "../../protocol/frame.ts";
import { CodecError, ProblemError } from "../../protocol/errors.ts";
import { EVENT_ID_PATTERN, isDomain } from "../../protocol/ids.ts";

/**
 * Largest encoded CCP-1 frame carried over federation: 1 MiB. Frames are hex inside JSON
 * (twice the size) and sit in the durable outbox, so federation takes far less than the
 * 16 MiB a direct connection may carry.
 */
export const MAX_FEDERATED_FRAME = 1024 * 1024;
/** Largest request body the inbound endpoint reads: the hex frame plus room for the envelope. */
export const MAX_EVENT_BODY = 2 * MAX_FEDERATED_FRAME + 64 * 1024;
/** Largest length of an event id, a device id or a member address. */
export const MAX_ID_LENGTH = 256;

/** Frame types that cross domains: what a channel fans out to its members (ccp1.md §4). */
export const FEDERATED_FRAME_TYPES: ReadonlySet<number> = new Set([
  FrameType.Msg,
  FrameType.Typing,
  FrameType.KeyUpdate,
  FrameType.GroupEvent,
]);

/** What travels in one POST. */
export interface SignedEventBody {
  event: FederationEvent;
  /** Ed25519 signature over the event digest, hex. */
  signature: string;
  /** Optional: the digest the sender computed, hex. */
  digest?: string;
}

/** A body that failed validation; `field` is the dotted path of what was wrong. */
export class EventShapeError extends ProblemError {
  constructor(readonly field: string, detail: string) {
    super("Invalid Event", 400, `${field}: ${detail}`);
    this.name = "EventShapeError";
  }
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value === "string"
    ? "a string"
    : typeof value === "object"
    ? "an object"
    : `a ${typeof value}`;
}

/** A plain JSON object with exactly the allowed keys (required ones present). */
function record(
  value: unknown,
  field: string,
  required: readonly string[],
  optional: readonly string[] = [],
): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new EventShapeError(field, `expected an object, got ${describe(value)}`);
  }
  const obj = value as Record<string, unknown>;
  for (const key of Object.keys(obj)) {
    if (!required.includes(key) && !optional.includes(key)) {
      throw new EventShapeError(
        field === "" ? key : `${field}.${key}`,
        `unknown field (allowed: ${[...required, ...optional].join(", ")})`,
      );
    }
  }
  for (const key of required) {
    if (!Object.hasOwn(obj, key)) {
      throw new EventShapeError(field === "" ? key : `${field}.${key}`, "missing");
    }
  }
  return obj;
}

function text(value: unknown, field: string, max = MAX_ID_LENGTH): string {
  if (typeof value !== "string") {
    throw new EventShapeError(field, `expected a string, got ${describe(value)}`);
  }
  if (value.length === 0 || value.length > max) {
    throw new EventShapeError(field, `expected 1..${max} characters, got ${value.length}`);
  }
  // Control characters have no place in identifiers and would garble logs.
  // deno-lint-ignore no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(value)) {
    throw new EventShapeError(field, "contains control characters");
  }
  return value;
}

function u32(value: unknown, field: string): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > MAX_U32) {
    throw new EventShapeError(
      field,
      `expected an integer 0..${MAX_U32}, got ${JSON.stringify(value) ?? describe(value)}`,
    );
  }
  return value;
}

/**
 * Validates an untrusted, already-parsed JSON body. Returns the body typed; throws
 * {@link EventShapeError} naming the first wrong field. Checks shape only: peers, scope,
 * signature, time and replay are the caller's.
 */
export function parseSignedEventBody(value: unknown): SignedEventBody {
  const body = record(value, "", ["event", "signature"], ["digest"]);
  const ev = record(body.event, "event", ["event_id", "origin", "scope", "created_at", "payload"]);
  const eventId = text(ev.event_id, "event.event_id", 128);
  if (!EVENT_ID_PATTERN.test(eventId)) {
    throw new EventShapeError("event.event_id", "expected letters, digits and . _ : - only");
  }
  const origin = text(ev.origin, "event.origin", 253);
  if (!isDomain(origin)) {
    throw new EventShapeError("event.origin", "expected a lower-case domain name");
  }
  const scope = text(ev.scope, "event.scope", 253);
  if (!isDomain(scope)) {
    throw new EventShapeError("event.scope", "expected a lower-case domain name");
  }
  const createdAt = text(ev.created_at, "event.created_at", 64);
  const p = record(ev.payload, "event.payload", [
    "channel",
    "sequence",
    "payload",
    "sender",
    "target",
  ]);
  const channel = u32(p.channel, "event.payload.channel");
  const sequence = u32(p.sequence, "event.payload.sequence");
  if (typeof p.payload !== "string") {
    throw new EventShapeError(
      "event.payload.payload",
      `expected a hex string, got ${describe(p.payload)}`,
    );
  }
  if (p.payload.length === 0 || p.payload.length > 2 * MAX_FEDERATED_FRAME) {
    throw new EventShapeError(
      "event.payload.payload",
      `expected 1..${MAX_FEDERATED_FRAME} bytes of hex, got ${p.payload.length} characters`,
    );
  }
  if (!isHex(p.payload)) throw new EventShapeError("event.payload.payload", "is not hex");
  const sender = text(p.sender, "event.payload.sender");
  const target = text(p.target, "event.payload.target");
  if (!isHex(body.signature, 64)) {
    throw new EventShapeError("signature", "expected 128 hex characters (an Ed25519 signature)");
  }
  if (Object.hasOwn(body, "digest") && !isHex(body.digest, 32)) {
    throw new EventShapeError("digest", "expected 64 hex characters (a BLAKE3 digest)");
  }
  // Rebuilt from the checked values: nothing but these fields reaches the digest or handlers.
  const out: SignedEventBody = {
    event: {
      event_id: eventId,
      origin,
      scope,
      created_at: createdAt,
      payload: { channel, sequence, payload: p.payload, sender, target },
    },
    signature: body.signature as string,
  };
  if (typeof body.digest === "string") out.digest = body.digest;
  return out;
}

/** Why bytes are not a federated frame: 413 when too large, else 400. */
export interface FrameRejection {
  status: 400 | 413;
  detail: string;
}

/**
 * Decodes `bytes` as exactly one CCP-1 frame of a federated type (with `offsets`, an ACK too:
 * an offset report). Returns the frame or what is wrong with it.
 */
export function decodeFederatedFrame(
  bytes: Uint8Array,
  options: { offsets?: boolean } = {},
): Frame | FrameRejection {
  const bad = (detail: string): FrameRejection => ({ status: 400, detail });
  if (bytes.length === 0) return bad("the frame is empty");
  if (bytes.length > MAX_FEDERATED_FRAME) {
    return {
      status: 413,
      detail:
        `the frame is ${bytes.length} bytes; federation carries at most ${MAX_FEDERATED_FRAME}`,
    };
  }
  const decoder = new FrameDecoder({ maxFrameLength: MAX_FEDERATED_FRAME });
  decoder.push(bytes);
  let frame: Frame | null;
  try {
    frame = decoder.next();
  } catch (err) {
    if (err instanceof CodecError) return bad(`not a valid CCP-1 frame: ${err.message}`);
    throw err;
  }
  if (frame === null) return bad("not a valid CCP-1 frame: truncated");
  if (decoder.buffered !== 0) {
    return bad(`expected exactly one CCP-1 frame, found ${decoder.buffered} trailing bytes`);
  }
  // An ACK is an offset report (server/federation/offsets.ts), accepted where asked for.
  if (
    !FEDERATED_FRAME_TYPES.has(frame.type) && !(options.offsets && frame.type === FrameType.Ack)
  ) {
    return bad(
      `${FRAME_TYPE_NAMES[frame.type]} frames do not cross domains ` +
        `(only MSG, TYPING, KEY_UPDATE and GROUP_EVENT do)`,
    );
  }
  return frame;
}
