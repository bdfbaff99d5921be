/**
 * Frame I/O over a transport: a reader that can switch from the plaintext handshake to the
 * v2 secure stream exactly at a frame boundary, and a writer that coalesces the frames
 * queued in one tick into one socket write (sealed as one secure-stream run under v2).
 *
 * @module
 */

import { concatBytes, concatChunks } from "../protocol/bytes.ts";
import { decodeFrame, type Frame, FrameDecoder, FrameType } from "../protocol/frame.ts";
import type { CipherState } from "../protocol/noise.ts";
import { SecureStreamReader, SecureStreamWriter } from "../protocol/secure_stream.ts";
import { CommuCatError } from "./errors.ts";
import type { Transport } from "./transport.ts";

/**
 * Reads frames. During the handshake, bytes are kept raw and cut one frame at a time, so
 * that whatever follows the last handshake frame (the start of the v2 secure stream) is
 * never fed to a plaintext decoder; {@link startStream} then hands those bytes on.
 */
export class FrameReader {
  #transport: Transport;
  #raw: Uint8Array = new Uint8Array(0);
  #decoder: FrameDecoder | null = null;
  #secure: SecureStreamReader | null = null;
  /**
   * v2 only: the raw bytes received since the switch, until the first secure frame is
   * decoded. A server that refuses the handshake after the client's last message may answer
   * with a plaintext ERROR instead of opening the secure stream; this lets us still read it.
   */
  #probe: Uint8Array[] | null = null;
  /** A plaintext ERROR recovered from the probe, returned by the next `next()`. */
  #probeFrame: Frame | null = null;
  #eof = false;

  constructor(transport: Transport) {
    this.#transport = transport;
  }

  /** The next handshake frame (plaintext), or null at end of stream. */
  async nextHandshakeFrame(): Promise<Frame | null> {
    for (;;) {
      if (this.#raw.length > 0) {
        const decoded = decodeFrame(this.#raw);
        if (decoded !== null) {
          // Copy: the payload is a view into #raw, which is about to be re-sliced.
          const frame = { ...decoded.frame, payload: decoded.frame.payload.slice() };
          this.#raw = this.#raw.subarray(decoded.length);
          return frame;
        }
      }
      const chunk = await this.#read();
      if (chunk === null) return null;
      this.#raw = concatBytes(this.#raw, chunk);
    }
  }

  /**
   * Ends the handshake phase: from here on frames come from a streaming decoder, behind
   * the secure stream when `recv` is given (v2). Bytes already received pass through it.
   */
  startStream(recv: CipherState | null): void {
    this.#decoder = new FrameDecoder();
    const leftover = this.#raw;
    this.#raw = new Uint8Array(0);
    if (recv !== null) {
      this.#secure = new SecureStreamReader(recv);
      this.#probe = [];
    }
    if (leftover.length > 0) this.#feed(leftover);
  }

  /** The next frame after the handshake, or null at end of stream. Throws on bad input. */
  async next(): Promise<Frame | null> {
    const decoder = this.#decoder;
    if (decoder === null) throw new Error("FrameReader.next() before startStream()");
    for (;;) {
      const frame = this.#probeFrame ?? decoder.next();
      if (this.#probeFrame) this.#probeFrame = null;
      if (frame !== null) {
        this.#probe = null;
        return frame;
      }
      if (this.#eof) return null;
      const chunk = await this.#read();
      if (chunk === null) {
        // The stream ended inside what looked like a secure chunk: maybe a plaintext ERROR.
        const plain = this.#plaintextError();
        this.#probe = null;
        return plain;
      }
      this.#feed(chunk);
    }
  }

  #feed(chunk: Uint8Array): void {
    const decoder = this.#decoder!;
    if (this.#secure === null) {
      decoder.push(chunk);
      return;
    }
    this.#probe?.push(chunk);
    let pieces: Uint8Array[];
    try {
      pieces = this.#secure.push(chunk);
    } catch (cause) {
      const plain = this.#plaintextError();
      if (plain !== null) {
        this.#probeFrame = plain;
        this.#eof = true;
        return;
      }
      throw new CommuCatError(
        "Decrypt Failed",
        400,
        "a secure-stream chunk from the server failed to decrypt",
        { cause },
      );
    }
    for (const piece of pieces) decoder.push(piece);
  }

  /** A plaintext ERROR frame at the very start of the would-be secure stream, if that is it. */
  #plaintextError(): Frame | null {
    if (this.#probe === null) return null;
    try {
      const decoded = decodeFrame(concatChunks(this.#probe));
      if (decoded !== null && decoded.frame.type === FrameType.Error) return decoded.frame;
    } catch {
      // Not a frame either: report the decrypt failure.
    }
    return null;
  }

  async #read(): Promise<Uint8Array | null> {
    if (this.#eof) return null;
    const chunk = await this.#transport.read();
    if (chunk === null) this.#eof = true;
    return chunk;
  }
}

/**
 * Queues encoded frames and writes them in batches: everything queued before the writer's
 * next turn goes out in one `write` (one secure-stream seal under v2). Write failures are
 * reported once through `onError`.
 */
export class FrameWriter {
  #transport: Transport;
  #secure: SecureStreamWriter | null;
  #queue: Uint8Array[] = [];
  #queuedBytes = 0;
  #running: Promise<void> | null = null;
  #failed = false;
  #onError: (error: unknown) => void;

  constructor(
    transport: Transport,
    send: CipherState | null,
    onError: (error: unknown) => void,
  ) {
    this.#transport = transport;
    this.#secure = send === null ? null : new SecureStreamWriter(send);
    this.#onError = onError;
  }

  /** Bytes queued and not yet handed to the transport. */
  get queuedBytes(): number {
    return this.#queuedBytes;
  }

  /** Queues one or more encoded frames (kept by reference until written). */
  enqueue(bytes: Uint8Array): void {
    if (this.#failed) return;
    this.#queue.push(bytes);
    this.#queuedBytes += bytes.length;
    // Defer to a microtask so that frames queued by the same synchronous run coalesce.
    this.#running ??= Promise.resolve().then(() => this.#drain());
  }

  /** Resolves once everything queued so far has been written (or writing failed). */
  async flushed(): Promise<void> {
    while (this.#running !== null) await this.#running;
  }

  async #drain(): Promise<void> {
    try {
      while (this.#queue.length > 0 && !this.#failed) {
        const batch = this.#queue.length === 1 ? this.#queue[0] : concatChunks(this.#queue);
        this.#queue = [];
        this.#queuedBytes = 0;
        const wire = this.#secure === null ? batch : this.#secure.seal(batch);
        await this.#transport.write(wire);
      }
    } catch (error) {
      this.#failed = true;
      this.#queue = [];
      this.#queuedBytes = 0;
      this.#onError(error);
    } finally {
      this.#running = null;
    }
  }
}
