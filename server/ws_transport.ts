/**
 * The server side of the WebSocket transport: a socket from `Deno.upgradeWebSocket` as a
 * {@link Transport}. Each binary message is a piece of the CCP-1 byte stream (v1 frames, or the
 * v2 secure stream after the handshake), exactly the bytes a TCP connection would carry;
 * message boundaries mean nothing.
 *
 * Bad input is answered with the codec's titles, through the connection's own ERROR path
 * (inside the secure stream once there is one): a text message is `Invalid Frame Type`, a
 * message over {@link WS_MAX_MESSAGE_BYTES} is `Frame Too Large`, and more than
 * {@link WS_MAX_BACKLOG_BYTES} received ahead of processing is `Payload Too Large`.
 *
 * @module
 */
import { CodecError } from "../protocol/errors.ts";
import { isLoopbackHost, type Transport } from "./transport.ts";

/** Largest WebSocket message accepted (1 MiB); a frame may span many messages. */
export const WS_MAX_MESSAGE_BYTES = 1024 * 1024;
/** Bytes received but not yet read by the connection before the peer is cut off (16 MiB). */
export const WS_MAX_BACKLOG_BYTES = 16 * 1024 * 1024;
/** Unsent bytes the socket may hold before `write` waits for it to drain. */
const SEND_HIGH_WATER = 1024 * 1024;
const DRAIN_POLL_MS = 5;

/** WebSocket close codes (RFC 6455 §7.4.1) used when the server ends a socket. */
const CLOSE_NORMAL = 1000;
const CLOSE_UNSUPPORTED_DATA = 1003;
const CLOSE_TOO_BIG = 1009;

type Item = Uint8Array | CodecError;

/** An upgraded WebSocket as a byte-stream Transport. */
export class WebSocketTransport implements Transport {
  readonly kind = "ws" as const;
  readonly isLoopback: boolean;
  #socket: WebSocket;
  #queue: Item[] = [];
  #queuedBytes = 0;
  #waiter: ((item: Item | null) => void) | null = null;
  #ended = false;
  #closed = false;
  #closeCode = CLOSE_NORMAL;

  constructor(
    socket: WebSocket,
    readonly remoteAddr: string,
    remoteHost: string,
    readonly isTls: boolean,
  ) {
    this.#socket = socket;
    this.isLoopback = isLoopbackHost(remoteHost);
    socket.binaryType = "arraybuffer";
    socket.addEventListener("message", (event) => this.#onMessage(event.data));
    socket.addEventListener("close", () => this.#end());
    socket.addEventListener("error", () => this.#end());
  }

  #onMessage(data: unknown): void {
    if (this.#ended) return;
    if (!(data instanceof ArrayBuffer)) {
      this.#refuse(
        CLOSE_UNSUPPORTED_DATA,
        new CodecError(
          "Invalid Frame Type",
          "a text WebSocket message: CCP-1 travels in binary messages only",
        ),
      );
      return;
    }
    if (data.byteLength > WS_MAX_MESSAGE_BYTES) {
      this.#refuse(
        CLOSE_TOO_BIG,
        new CodecError(
          "Frame Too Large",
          `a WebSocket message of ${data.byteLength} bytes; the limit is ${WS_MAX_MESSAGE_BYTES}`,
        ),
      );
      return;
    }
    if (data.byteLength === 0) return;
    this.#queuedBytes += data.byteLength;
    if (this.#queuedBytes > WS_MAX_BACKLOG_BYTES) {
      this.#refuse(
        CLOSE_TOO_BIG,
        new CodecError(
          "Payload Too Large",
          `more than ${WS_MAX_BACKLOG_BYTES} bytes sent ahead of the server reading them`,
        ),
      );
      return;
    }
    this.#push(new Uint8Array(data));
  }

  /** Queues a refusal behind what came before it; nothing after it is read. */
  #refuse(code: number, error: CodecError): void {
    this.#closeCode = code;
    this.#push(error);
    this.#ended = true;
  }

  #push(item: Item): void {
    const waiter = this.#waiter;
    if (waiter) {
      this.#waiter = null;
      if (item instanceof Uint8Array) this.#queuedBytes -= item.length;
      waiter(item);
    } else {
      this.#queue.push(item);
    }
  }

  #end(): void {
    this.#ended = true;
    const waiter = this.#waiter;
    this.#waiter = null;
    waiter?.(null);
  }

  async read(): Promise<Uint8Array | null> {
    let item: Item | null | undefined = this.#queue.shift();
    if (item === undefined) {
      if (this.#ended || this.#closed) return null;
      item = await new Promise<Item | null>((resolve) => (this.#waiter = resolve));
    } else if (item instanceof Uint8Array) {
      this.#queuedBytes -= item.length;
    }
    if (item instanceof CodecError) throw item;
    return item;
  }

  async write(bytes: Uint8Array): Promise<void> {
    const socket = this.#socket;
    if (this.#closed || socket.readyState !== WebSocket.OPEN) {
      throw new Deno.errors.BrokenPipe("transport closed");
    }
    socket.send(bytes);
    while (socket.bufferedAmount > SEND_HIGH_WATER) {
      await new Promise((resolve) => setTimeout(resolve, DRAIN_POLL_MS));
      if (this.#closed || socket.readyState !== WebSocket.OPEN) {
        throw new Deno.errors.BrokenPipe("transport closed");
      }
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#queue = [];
    this.#queuedBytes = 0;
    try {
      if (this.#socket.readyState === WebSocket.OPEN) this.#socket.close(this.#closeCode);
    } catch {
      // Already closing.
    }
    this.#end();
  }
}
