/**
 * A connection's outbound bytes between two flushes: frames are encoded straight into one
 * growing buffer, so a flush is one write (v1) or one seal and one write (v2) with no per-frame
 * allocation and no concatenation. The buffer is handed to the writer at flush time and a new
 * one starts; once the writer is done with it, a buffer of the pooled size goes back to a pool
 * every connection shares and a larger one is kept while the connection stays busy, so idle
 * connections hold no buffer at all.
 *
 * @module
 */
import { encodeFrame, type FrameType } from "../../protocol/frame.ts";
import { varintLength, writeVarint } from "../../protocol/varint.ts";

/**
 * The size of the buffers every connection of a process shares: a connection that was idle
 * takes one for its next batch and gives it back once the batch is written, so idle connections
 * hold no buffer and busy ones allocate none per flush.
 */
const POOLED_SIZE = 16 * 1024;
/** At most this many pooled buffers wait for a taker (4 MiB a process). */
const POOL_MAX = 256;
const pool: Uint8Array[] = [];
/** A flushed buffer larger than a pooled one is kept by its connection for the next batch. */
const RECYCLE_MIN = POOLED_SIZE + 1;
/** A buffer larger than this is never kept (memory per connection stays bounded). */
const RECYCLE_MAX = 1024 * 1024;
/** Payloads up to this size are encoded in place; larger ones go through the full encoder. */
const INLINE_PAYLOAD_MAX = 64 * 1024;

/** `{"ack":` — the fixed prefix of a sequence ACK. */
const ACK_PREFIX = new TextEncoder().encode('{"ack":');
const ACK_PREFIX_LENGTH = ACK_PREFIX.length;

/** Decimal digits of a u32. */
function digitCount(n: number): number {
  if (n < 100_000) return n < 10 ? 1 : n < 100 ? 2 : n < 1000 ? 3 : n < 10_000 ? 4 : 5;
  return n < 1_000_000 ? 6 : n < 10_000_000 ? 7 : n < 100_000_000 ? 8 : n < 1_000_000_000 ? 9 : 10;
}

/**
 * Outbound frames accumulated since the last flush. Not safe to write into while a buffer it
 * returned from {@link take} is still being written: `take` always starts a fresh buffer.
 */
export class OutboundBuffer {
  #buf: Uint8Array | null = null;
  #length = 0;
  #frames = 0;
  #spare: Uint8Array | null = null;

  /** Octets waiting to be flushed. */
  get length(): number {
    return this.#length;
  }

  /** Frames waiting to be flushed. */
  get frames(): number {
    return this.#frames;
  }

  /** Reserves `n` octets at the end; returns the offset to write them at. */
  #reserve(n: number): number {
    const need = this.#length + n;
    let buf = this.#buf;
    if (buf === null) {
      const spare = this.#spare;
      if (spare !== null && spare.length >= need) {
        buf = spare;
        this.#spare = null;
      } else if (need <= POOLED_SIZE) {
        buf = pool.pop() ?? new Uint8Array(POOLED_SIZE);
      } else {
        buf = new Uint8Array(need);
      }
      this.#buf = buf;
    } else if (buf.length < need) {
      const grown = new Uint8Array(Math.max(buf.length * 2, need));
      grown.set(buf.subarray(0, this.#length));
      buf = grown;
      this.#buf = grown;
    }
    const at = this.#length;
    this.#length = need;
    this.#frames++;
    return at;
  }

  /** Appends an already encoded frame. */
  pushEncoded(bytes: Uint8Array): void {
    const at = this.#reserve(bytes.length);
    this.#buf!.set(bytes, at);
  }

  /**
   * Appends a frame, encoded in place; its payload is `prefix ‖ payload` (the sender capability's
   * stamp, ccp1.md §4.2, without copying the payload first). The fields are trusted (they come
   * from a decoded frame and this connection's own sequence counter); large payloads take the
   * validating encoder.
   */
  pushFrame(
    type: FrameType,
    channel: number,
    sequence: number,
    payload: Uint8Array,
    prefix: Uint8Array | null = null,
  ): void {
    const prefixLength = prefix === null ? 0 : prefix.length;
    const payloadLength = prefixLength + payload.length;
    if (payloadLength > INLINE_PAYLOAD_MAX) {
      const whole = prefix === null ? payload : new Uint8Array(payloadLength);
      if (prefix !== null) {
        whole.set(prefix);
        whole.set(payload, prefixLength);
      }
      this.pushEncoded(encodeFrame({ type, channel, sequence, payload: whole }));
      return;
    }
    const body = 1 + varintLength(channel) + varintLength(sequence) +
      varintLength(payloadLength) + payloadLength;
    let at = this.#reserve(varintLength(body) + body);
    const buf = this.#buf!;
    at = writeVarint(buf, at, body);
    buf[at++] = type;
    at = writeVarint(buf, at, channel);
    at = writeVarint(buf, at, sequence);
    at = writeVarint(buf, at, payloadLength);
    if (prefix !== null) {
      buf.set(prefix, at);
      at += prefixLength;
    }
    buf.set(payload, at);
  }

  /**
   * Appends the control frame `ACK {"ack":<ack>}` (byte-identical to encoding the JSON
   * value `{ack}`), without building or serialising an object.
   */
  pushAck(channel: number, sequence: number, ack: number): void {
    const digits = digitCount(ack);
    const payloadLength = ACK_PREFIX_LENGTH + digits + 1;
    const body = 1 + varintLength(channel) + varintLength(sequence) + 1 + payloadLength;
    let at = this.#reserve(varintLength(body) + body);
    const buf = this.#buf!;
    at = writeVarint(buf, at, body);
    buf[at++] = 0x06; // ACK
    at = writeVarint(buf, at, channel);
    at = writeVarint(buf, at, sequence);
    buf[at++] = payloadLength; // < 0x80: one varint octet
    buf.set(ACK_PREFIX, at);
    at += ACK_PREFIX_LENGTH;
    let n = ack;
    for (let i = at + digits - 1; i >= at; i--) {
      buf[i] = 48 + (n % 10);
      n = Math.floor(n / 10);
    }
    buf[at + digits] = 0x7d; // }
  }

  /**
   * Removes everything accumulated and returns it (a view of the internal buffer, which is not
   * written to again until {@link recycle} gives it back). Empty when nothing is waiting.
   */
  take(): Uint8Array {
    const buf = this.#buf;
    const length = this.#length;
    this.#buf = null;
    this.#length = 0;
    this.#frames = 0;
    return buf === null ? new Uint8Array(0) : buf.subarray(0, length);
  }

  /**
   * Gives back a buffer from {@link take} once it was written (nothing may read it after this):
   * a pooled-size one to the shared pool, a larger one kept while the connection is busy.
   */
  recycle(taken: Uint8Array): void {
    if (taken.byteOffset !== 0) return;
    const whole = new Uint8Array(taken.buffer);
    if (whole.length === POOLED_SIZE) {
      if (pool.length < POOL_MAX) pool.push(whole);
    } else if (taken.length >= RECYCLE_MIN && whole.length <= RECYCLE_MAX) this.#spare = whole;
    else if (taken.length < RECYCLE_MIN / 4) this.#spare = null; // calm: hold no memory
  }

  /** Drops everything waiting (a slow reader, a failed write). */
  clear(): void {
    this.#buf = null;
    this.#length = 0;
    this.#frames = 0;
    this.#spare = null;
  }
}
