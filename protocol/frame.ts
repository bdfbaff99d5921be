/**
 * The CCP-1 frame codec (ccp1.md §1), byte-exact with the original codec:
 *
 * ```
 * frame = frame_len:varint body
 * body  = frame_type:u8 channel_id:varint sequence:varint payload_len:varint payload
 * ```
 *
 * Which error title each failure gets (every one is a fatal {@link CodecError}):
 *
 * | failure                                                    | title                     |
 * |------------------------------------------------------------|---------------------------|
 * | a varint longer than 10 octets or above 2^64 − 1           | Varint Overflow           |
 * | `frame_len` > 16 MiB (found as soon as its octets show it) | Frame Too Large           |
 * | `frame_len` = 0 (empty body)                               | Truncated Frame           |
 * | the body ends inside channel_id, sequence or payload_len   | Truncated Frame           |
 * | `payload_len` > 16 MiB                                     | Payload Too Large         |
 * | `payload_len` runs past the end of the body                | Truncated Frame           |
 * | octets left in the body after the payload                  | Truncated Frame           |
 * | frame type octet not in 0x01..0x0d                         | Invalid Frame Type        |
 * | channel_id or sequence > 2^32 − 1                          | Identifier Out Of Range   |
 * | control payload > 256 KiB                                  | Control Payload Too Large |
 * | control payload not UTF-8 or not JSON                      | Invalid Control Payload   |
 *
 * "Truncated Frame" therefore means "the frame's declared lengths disagree with its
 * content". When encoding, a payload over 16 MiB is "Payload Too Large" and a body over
 * 16 MiB "Frame Too Large", as in the original codec. `Protocol Version Mismatch` is never
 * raised here: the handshake raises it.
 *
 * @module
 */

import { CodecError, type Problem } from "./errors.ts";
import { assertU32, MAX_U32, MAX_VARINT_OCTETS, varintLength, writeVarint } from "./varint.ts";

/** Frame type codes (ccp1.md §1). */
export const FrameType = {
  Hello: 0x01,
  Auth: 0x02,
  Join: 0x03,
  Leave: 0x04,
  Msg: 0x05,
  Ack: 0x06,
  Typing: 0x07,
  Presence: 0x08,
  KeyUpdate: 0x09,
  GroupCreate: 0x0a,
  GroupInvite: 0x0b,
  GroupEvent: 0x0c,
  Error: 0x0d,
} as const;

/** A frame type code. */
export type FrameType = typeof FrameType[keyof typeof FrameType];

/** Wire names of the frame types, for logs and errors (e.g. `GROUP_CREATE`). */
export const FRAME_TYPE_NAMES: Readonly<Record<FrameType, string>> = Object.freeze({
  0x01: "HELLO",
  0x02: "AUTH",
  0x03: "JOIN",
  0x04: "LEAVE",
  0x05: "MSG",
  0x06: "ACK",
  0x07: "TYPING",
  0x08: "PRESENCE",
  0x09: "KEY_UPDATE",
  0x0a: "GROUP_CREATE",
  0x0b: "GROUP_INVITE",
  0x0c: "GROUP_EVENT",
  0x0d: "ERROR",
});

/** Largest body (type + identifiers + payload) a frame may declare: 16 MiB. */
export const MAX_FRAME_LEN = 16 * 1024 * 1024;
/** Largest control JSON payload: 256 KiB. */
export const MAX_CONTROL_JSON_LEN = 256 * 1024;

/** True when `code` is a known frame type. */
export function isFrameType(code: number): code is FrameType {
  return Number.isInteger(code) && code >= 0x01 && code <= 0x0d;
}

/** True when frames of this type carry control JSON (every type but MSG and KEY_UPDATE). */
export function isControlType(type: FrameType): boolean {
  return type !== FrameType.Msg && type !== FrameType.KeyUpdate;
}

/** One CCP-1 frame. */
export interface Frame {
  type: FrameType;
  /** Channel id, u32. */
  channel: number;
  /** Sender's sequence, u32. */
  sequence: number;
  /** Payload bytes (JSON text for control types). */
  payload: Uint8Array;
  /** For control types, set by the decoder: the payload parsed once as JSON. */
  json?: unknown;
}

// ---------------------------------------------------------------------------------------
// Encoding

const utf8Encoder = new TextEncoder();

/** Octets `frame` takes on the wire (validates it like {@link encodeFrame}). */
export function encodedFrameLength(frame: Frame): number {
  const body = bodyLength(frame);
  return varintLength(body) + body;
}

function bodyLength(frame: Frame): number {
  if (!isFrameType(frame.type)) {
    throw new CodecError("Invalid Frame Type", `cannot encode unknown frame type ${frame.type}`);
  }
  assertU32("channel_id", frame.channel);
  assertU32("sequence", frame.sequence);
  const payloadLength = frame.payload.length;
  if (payloadLength > MAX_FRAME_LEN) {
    throw new CodecError(
      "Payload Too Large",
      `payload of ${payloadLength} octets exceeds ${MAX_FRAME_LEN}`,
    );
  }
  if (payloadLength > MAX_CONTROL_JSON_LEN && isControlType(frame.type)) {
    throw new CodecError(
      "Control Payload Too Large",
      `${FRAME_TYPE_NAMES[frame.type]} payload of ${payloadLength} octets exceeds ` +
        `${MAX_CONTROL_JSON_LEN}`,
    );
  }
  const body = 1 + varintLength(frame.channel) + varintLength(frame.sequence) +
    varintLength(payloadLength) + payloadLength;
  if (body > MAX_FRAME_LEN) {
    throw new CodecError("Frame Too Large", `body of ${body} octets exceeds ${MAX_FRAME_LEN}`);
  }
  return body;
}

function writeFrame(target: Uint8Array, offset: number, frame: Frame, body: number): number {
  offset = writeVarint(target, offset, body);
  target[offset++] = frame.type;
  offset = writeVarint(target, offset, frame.channel);
  offset = writeVarint(target, offset, frame.sequence);
  offset = writeVarint(target, offset, frame.payload.length);
  target.set(frame.payload, offset);
  return offset + frame.payload.length;
}

/**
 * Encodes one frame into a single fresh allocation. The payload is used as given (for
 * control types it must already be the JSON text; see {@link encodeControl}).
 * Throws CodecError on a frame that breaks a limit.
 */
export function encodeFrame(frame: Frame): Uint8Array {
  const body = bodyLength(frame);
  const out = new Uint8Array(varintLength(body) + body);
  writeFrame(out, 0, frame, body);
  return out;
}

/**
 * Encodes many frames back to back into one allocation, for one batched write.
 * Either every frame is valid and all are encoded, or it throws before writing anything.
 */
export function encodeFrames(frames: Iterable<Frame>): Uint8Array {
  const list = Array.isArray(frames) ? frames as Frame[] : [...frames];
  const bodies = new Array<number>(list.length);
  let total = 0;
  for (let i = 0; i < list.length; i++) {
    const body = bodyLength(list[i]);
    bodies[i] = body;
    total += varintLength(body) + body;
  }
  const out = new Uint8Array(total);
  let offset = 0;
  for (let i = 0; i < list.length; i++) offset = writeFrame(out, offset, list[i], bodies[i]);
  return out;
}

/**
 * Serialises `value` as compact JSON (UTF-8) — the payload of a control frame.
 * Throws CodecError "Invalid Control Payload" when the value has no JSON form (undefined,
 * a function, a cycle, a BigInt) and "Control Payload Too Large" over 256 KiB.
 */
export function encodeControlPayload(value: unknown): Uint8Array {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (cause) {
    throw new CodecError("Invalid Control Payload", "value cannot be serialised as JSON", {
      cause,
    });
  }
  if (text === undefined) {
    throw new CodecError("Invalid Control Payload", "value has no JSON representation");
  }
  const bytes = utf8Encoder.encode(text);
  if (bytes.length > MAX_CONTROL_JSON_LEN) {
    throw new CodecError(
      "Control Payload Too Large",
      `control JSON of ${bytes.length} octets exceeds ${MAX_CONTROL_JSON_LEN}`,
    );
  }
  return bytes;
}

/** Encodes a control frame whose payload is `value` as JSON. */
export function encodeControl(
  type: FrameType,
  channel: number,
  sequence: number,
  value: unknown,
): Uint8Array {
  if (isFrameType(type) && !isControlType(type)) {
    throw new CodecError(
      "Invalid Frame Type",
      `${FRAME_TYPE_NAMES[type]} carries opaque bytes, not control JSON`,
    );
  }
  return encodeFrame({ type, channel, sequence, payload: encodeControlPayload(value) });
}

/**
 * Encodes an ERROR frame (0x0d) carrying `problem` (ccp1.md §2). `sequence` is the
 * sender's outbound sequence for this frame; the offending inbound sequence, if any,
 * belongs in `problem.sequence` (see `ProtocolError.toProblem`).
 */
export function errorFrame(problem: Problem, channel: number, sequence: number): Uint8Array {
  return encodeControl(FrameType.Error, channel, sequence, problem);
}

// ---------------------------------------------------------------------------------------
// Decoding

const utf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

// Position after the last field read by readBodyVarint; a module-level slot avoids an
// allocation per field on the hot path (decoding is synchronous, so it cannot interleave).
let fieldEnd = 0;

function readBodyVarint(body: Uint8Array, pos: number, field: string): number {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < MAX_VARINT_OCTETS; i++) {
    if (pos >= body.length) {
      throw new CodecError("Truncated Frame", `body ends inside ${field}`);
    }
    const byte = body[pos++];
    const bits = byte & 0x7f;
    if (i === MAX_VARINT_OCTETS - 1 && bits > 1) {
      throw new CodecError("Varint Overflow", `${field} does not fit in 64 bits`);
    }
    value += bits * scale;
    if ((byte & 0x80) === 0) {
      fieldEnd = pos;
      return value;
    }
    scale *= 128;
  }
  throw new CodecError("Varint Overflow", `${field} is longer than ${MAX_VARINT_OCTETS} octets`);
}

/** Parses a complete, non-empty body. The payload is a view into `body`. */
function parseBody(body: Uint8Array): Frame {
  const type = body[0];
  if (!isFrameType(type)) {
    throw new CodecError("Invalid Frame Type", `unknown frame type ${frameTypeText(type)}`);
  }
  const channel = readBodyVarint(body, 1, "channel_id");
  if (channel > MAX_U32) {
    throw new CodecError("Identifier Out Of Range", `channel_id ${channel} exceeds ${MAX_U32}`);
  }
  const sequence = readBodyVarint(body, fieldEnd, "sequence");
  if (sequence > MAX_U32) {
    throw new CodecError("Identifier Out Of Range", `sequence ${sequence} exceeds ${MAX_U32}`);
  }
  const payloadLength = readBodyVarint(body, fieldEnd, "payload_len");
  const start = fieldEnd;
  if (payloadLength > MAX_FRAME_LEN) {
    throw new CodecError(
      "Payload Too Large",
      `payload_len ${payloadLength} exceeds ${MAX_FRAME_LEN}`,
    );
  }
  const room = body.length - start;
  if (payloadLength > room) {
    throw new CodecError(
      "Truncated Frame",
      `payload_len ${payloadLength} runs past the body (${room} octets left)`,
    );
  }
  if (payloadLength < room) {
    throw new CodecError(
      "Truncated Frame",
      `body has ${room - payloadLength} octets after the payload`,
    );
  }
  const payload = body.subarray(start);
  if (!isControlType(type)) return { type, channel, sequence, payload };
  if (type === FrameType.Ack) {
    // Every delivered frame's receipt: `{"ack":N}` read without a string and JSON.parse.
    const acked = plainAck(payload);
    if (acked >= 0) return { type, channel, sequence, payload, json: { ack: acked } };
  }
  return { type, channel, sequence, payload, json: parseControlJson(type, payload) };
}

/** `{"ack":` as octets. */
const PLAIN_ACK_PREFIX = [0x7b, 0x22, 0x61, 0x63, 0x6b, 0x22, 0x3a];

/**
 * N when `payload` is exactly `{"ack":N}` (N a JSON integer of at most 10 digits, no sign, no
 * leading zero, no white space): what JSON.parse would read, as `{ ack: N }`. -1 for anything
 * else, which takes the full parser (and its errors).
 */
export function plainAck(payload: Uint8Array): number {
  const n = payload.length;
  if (n < 9 || n > 18 || payload[n - 1] !== 0x7d) return -1;
  for (let i = 0; i < 7; i++) if (payload[i] !== PLAIN_ACK_PREFIX[i]) return -1;
  if (payload[7] === 0x30 && n !== 9) return -1;
  let value = 0;
  for (let i = 7; i < n - 1; i++) {
    const digit = payload[i] - 0x30;
    if (digit < 0 || digit > 9) return -1;
    value = value * 10 + digit;
  }
  return value;
}

function parseControlJson(type: FrameType, payload: Uint8Array): unknown {
  const name = FRAME_TYPE_NAMES[type];
  if (payload.length > MAX_CONTROL_JSON_LEN) {
    throw new CodecError(
      "Control Payload Too Large",
      `${name} payload of ${payload.length} octets exceeds ${MAX_CONTROL_JSON_LEN}`,
    );
  }
  let text: string;
  try {
    text = utf8Decoder.decode(payload);
  } catch (cause) {
    throw new CodecError("Invalid Control Payload", `${name} payload is not valid UTF-8`, {
      cause,
    });
  }
  try {
    return JSON.parse(text);
  } catch (cause) {
    throw new CodecError("Invalid Control Payload", `${name} payload is not valid JSON`, {
      cause,
    });
  }
}

/** A frame type as messages name it: `0x0a`. */
export function frameTypeText(type: number): string {
  return `0x${type.toString(16).padStart(2, "0")}`;
}

/** Options for {@link FrameDecoder}. */
export interface FrameDecoderOptions {
  /** A lower body limit than the protocol's 16 MiB (never higher). */
  maxFrameLength?: number;
}

/**
 * Incremental decoder over a CCP-1 byte stream: chunks of any size, frames split anywhere
 * or many per chunk. Every byte is examined once (O(total bytes)).
 *
 * Buffer ownership:
 * - `push(chunk)` keeps a reference to `chunk` instead of copying it; the caller must not
 *   modify it afterwards. Chunks from a `ReadableStream` are fresh and fine; a transport
 *   that reads into one reused buffer must push a copy (`buf.slice(0, n)`).
 * - A returned `payload` is a view into a pushed chunk when the frame arrived inside one
 *   chunk (zero copies), or into a buffer allocated for that one frame when it spanned
 *   chunks (exactly one copy). The decoder never writes to either after returning, so
 *   payloads stay valid indefinitely. A view keeps its whole chunk alive: copy small
 *   payloads you keep for long.
 *
 * Errors: `next()` throws {@link CodecError}; the stream cannot be resynchronised, so the
 * decoder stays failed and every later `next()` throws the same error. An oversize
 * `frame_len` is rejected as soon as its octets show it, before any body is buffered.
 */
export class FrameDecoder {
  #chunks: Uint8Array[] = [];
  #head = 0; // index of the first chunk still holding unread bytes
  #offset = 0; // read position inside #chunks[#head]
  #available = 0; // unread bytes across chunks
  #maxFrameLength: number;
  // frame_len state, kept across calls so no byte is read twice.
  #lenValue = 0;
  #lenScale = 1;
  #lenOctets = 0;
  #bodyLength = -1; // -1 while frame_len is still being read
  #error: CodecError | null = null;

  /** Creates a decoder; see {@link FrameDecoderOptions}. */
  constructor(options: FrameDecoderOptions = {}) {
    const max = options.maxFrameLength ?? MAX_FRAME_LEN;
    if (!Number.isInteger(max) || max < 1 || max > MAX_FRAME_LEN) {
      throw new RangeError(`maxFrameLength must be an integer in 1..${MAX_FRAME_LEN}`);
    }
    this.#maxFrameLength = max;
  }

  /** The largest frame body accepted (a lower limit than the protocol's, e.g. during a handshake). */
  get maxFrameLength(): number {
    return this.#maxFrameLength;
  }

  /** Changes the limit for frames not yet started (1..16 MiB), e.g. once a peer authenticated. */
  set maxFrameLength(max: number) {
    if (!Number.isInteger(max) || max < 1 || max > MAX_FRAME_LEN) {
      throw new RangeError(`maxFrameLength must be an integer in 1..${MAX_FRAME_LEN}`);
    }
    this.#maxFrameLength = max;
  }

  /** Octets received and not yet returned as part of a frame. */
  get buffered(): number {
    return this.#available + this.#lenOctets;
  }

  /** Appends bytes from the stream (kept by reference; see the class notes). */
  push(chunk: Uint8Array): void {
    if (this.#error !== null || chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#available += chunk.length;
  }

  /**
   * Removes and returns every octet received but not yet returned in a frame, in stream order,
   * and resets the decoder to a frame boundary. Used when the byte stream changes meaning, as
   * when the v2 secure stream begins right after the handshake.
   */
  drain(): Uint8Array {
    if (this.#error !== null) throw this.#error;
    const out = new Uint8Array(this.buffered);
    // The frame_len octets read so far, rebuilt from their value (exact: it never exceeds the
    // frame limit): each carries 7 bits, all but a completed one's last the continuation bit.
    // (Not kept as they arrive: one buffer fewer per decoder, i.e. per connection.)
    const complete = this.#bodyLength >= 0;
    for (let k = 0, v = this.#lenValue; k < this.#lenOctets; k++, v = Math.floor(v / 128)) {
      out[k] = (v % 128) | (complete && k === this.#lenOctets - 1 ? 0 : 0x80);
    }
    let filled = this.#lenOctets;
    for (let i = this.#head; i < this.#chunks.length; i++) {
      const chunk = i === this.#head ? this.#chunks[i].subarray(this.#offset) : this.#chunks[i];
      out.set(chunk, filled);
      filled += chunk.length;
    }
    this.#chunks = [];
    this.#head = this.#offset = this.#available = 0;
    this.#lenValue = 0;
    this.#lenScale = 1;
    this.#lenOctets = 0;
    this.#bodyLength = -1;
    return out;
  }

  /**
   * The next complete frame, or `null` when more bytes are needed.
   * Throws CodecError on bad input (and on every call after that).
   */
  next(): Frame | null {
    if (this.#error !== null) throw this.#error;
    try {
      return this.#next();
    } catch (error) {
      if (error instanceof CodecError) {
        this.#error = error;
        this.#chunks = [];
        this.#head = this.#offset = this.#available = 0;
      }
      throw error;
    }
  }

  #next(): Frame | null {
    if (this.#bodyLength < 0 && !this.#readFrameLength()) return null;
    const length = this.#bodyLength;
    if (this.#available < length) return null;
    const body = this.#take(length);
    this.#bodyLength = -1;
    this.#lenValue = 0;
    this.#lenScale = 1;
    this.#lenOctets = 0;
    return parseBody(body);
  }

  /** Reads frame_len octets as they arrive; true once it is complete and acceptable. */
  #readFrameLength(): boolean {
    while (this.#available > 0) {
      const byte = this.#readByte();
      const octet = this.#lenOctets++;
      const bits = byte & 0x7f;
      if (octet === MAX_VARINT_OCTETS - 1 && bits > 1) {
        throw new CodecError("Varint Overflow", "frame_len does not fit in 64 bits");
      }
      this.#lenValue += bits * this.#lenScale;
      this.#lenScale *= 128;
      // Later octets only add high bits, so the value can only grow: reject at once.
      if (this.#lenValue > this.#maxFrameLength) {
        throw new CodecError(
          "Frame Too Large",
          `frame_len ${
            this.#lenValue > Number.MAX_SAFE_INTEGER ? "≥ 2^53" : this.#lenValue
          } exceeds ${this.#maxFrameLength}`,
        );
      }
      if ((byte & 0x80) === 0) {
        if (this.#lenValue === 0) throw new CodecError("Truncated Frame", "empty body");
        this.#bodyLength = this.#lenValue;
        return true;
      }
      if (this.#lenOctets === MAX_VARINT_OCTETS) {
        throw new CodecError(
          "Varint Overflow",
          `frame_len longer than ${MAX_VARINT_OCTETS} octets`,
        );
      }
    }
    return false;
  }

  #readByte(): number {
    const chunk = this.#chunks[this.#head];
    const byte = chunk[this.#offset++];
    this.#available--;
    if (this.#offset === chunk.length) this.#dropHead();
    return byte;
  }

  /** Removes `length` (≤ available) bytes: a view when contiguous, else one copy. */
  #take(length: number): Uint8Array {
    const chunk = this.#chunks[this.#head];
    const inHead = chunk.length - this.#offset;
    if (inHead >= length) {
      const view = chunk.subarray(this.#offset, this.#offset + length);
      this.#offset += length;
      this.#available -= length;
      if (this.#offset === chunk.length) this.#dropHead();
      return view;
    }
    const out = new Uint8Array(length);
    let filled = 0;
    while (filled < length) {
      const current = this.#chunks[this.#head];
      const n = Math.min(current.length - this.#offset, length - filled);
      out.set(current.subarray(this.#offset, this.#offset + n), filled);
      filled += n;
      this.#offset += n;
      if (this.#offset === current.length) this.#dropHead();
    }
    this.#available -= length;
    return out;
  }

  #dropHead(): void {
    this.#offset = 0;
    this.#head++;
    if (this.#head === this.#chunks.length) {
      this.#chunks.length = 0;
      this.#head = 0;
    } else if (this.#head >= 64 && this.#head * 2 >= this.#chunks.length) {
      // Amortised compaction: consumed chunk references are released in O(1) per chunk.
      this.#chunks = this.#chunks.slice(this.#head);
      this.#head = 0;
    }
  }
}

/**
 * Decodes one frame from the start of `bytes` (at `offset`). Returns the frame and the
 * octets it took, or `null` when `bytes` ends before the frame does. Throws CodecError.
 * The payload is a view into `bytes`.
 */
export function decodeFrame(
  bytes: Uint8Array,
  offset = 0,
): { frame: Frame; length: number } | null {
  const decoder = new FrameDecoder();
  const input = bytes.subarray(offset);
  decoder.push(input);
  const frame = decoder.next();
  if (frame === null) return null;
  return { frame, length: input.length - decoder.buffered };
}
