/**
 * One byte-stream interface for every way a client reaches the relay: raw TCP, TLS, the
 * `POST /connect` HTTP stream (HTTP/1.1 chunked or HTTP/2) and the WebSocket upgrade of
 * `/connect` (server/ws_transport.ts). The connection code above it never knows which one it
 * is talking to.
 *
 * @module
 */

import { isLoopbackHost } from "../protocol/net.ts";
import { ConnStream } from "../protocol/conn_stream.ts";

/** A duplex byte stream to one client. */
export interface Transport {
  /** "tcp", "tls", "http" (the /connect stream) or "ws" (the /connect WebSocket). */
  readonly kind: "tcp" | "tls" | "http" | "ws";
  /** `host:port` of the peer as observed by this node. */
  readonly remoteAddr: string;
  /** True when the bytes travel inside TLS (a TLS listener or HTTPS). */
  readonly isTls: boolean;
  /** True when the peer connected from a loopback address. */
  readonly isLoopback: boolean;
  /** The next chunk of bytes (fresh, owned by the caller), or null at end of stream. */
  read(): Promise<Uint8Array | null>;
  /** Writes all of `bytes`; resolves when the transport accepted them (backpressure). */
  write(bytes: Uint8Array): Promise<void>;
  /**
   * True when a resolved write() no longer reads the array it was given, so the caller may
   * reuse it; absent or false when the transport may still hold it (a stream's queue).
   */
  readonly writtenBytesReusable?: boolean;
  /** Closes both directions; safe to call more than once. */
  close(): void;
}

export { isLoopbackHost };

/** Formats a Deno network address as `host:port` (IPv6 in brackets). */
export function formatAddr(addr: Deno.Addr): string {
  if (addr.transport === "tcp" || addr.transport === "udp") {
    const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
    return `${host}:${addr.port}`;
  }
  return addr.transport;
}

/** A `Deno.Conn` (TCP or TLS) as a Transport. */
export class ConnTransport extends ConnStream implements Transport {
  readonly kind: "tcp" | "tls";
  /** Deno.Conn.write has handed the octets to the socket when it resolves. */
  readonly writtenBytesReusable = true;
  readonly remoteAddr: string;
  readonly isLoopback: boolean;

  constructor(conn: Deno.Conn, readonly isTls: boolean) {
    super(conn);
    this.kind = isTls ? "tls" : "tcp";
    const addr = conn.remoteAddr as Deno.NetAddr;
    this.remoteAddr = formatAddr(addr);
    this.isLoopback = isLoopbackHost(addr.hostname);
    if (!isTls) {
      try {
        (conn as Deno.TcpConn).setNoDelay(true);
      } catch {
        // Not every platform allows it; latency is only a little worse without.
      }
    }
  }
}

/**
 * The `POST /connect` stream: the request body is the inbound byte stream, the response body
 * the outbound one. `response` is what the HTTP handler returns.
 */
export class HttpStreamTransport implements Transport {
  readonly kind = "http" as const;
  readonly response: Response;
  readonly isLoopback: boolean;
  #reader: ReadableStreamDefaultReader<Uint8Array> | null;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #closed = false;

  constructor(
    request: Request,
    readonly remoteAddr: string,
    remoteHost: string,
    readonly isTls: boolean,
    /** Called once the stream is closed: ends the client's HTTP connection too. */
    private readonly onClose?: () => void,
  ) {
    this.isLoopback = isLoopbackHost(remoteHost);
    this.#reader = request.body ? request.body.getReader() : null;
    // An identity stream: writes resolve once the response side takes them (backpressure).
    const pipe = new TransformStream<Uint8Array, Uint8Array>(
      undefined,
      { highWaterMark: 1 },
      { highWaterMark: 1 },
    );
    this.#writer = pipe.writable.getWriter();
    this.#writer.closed.catch(() => {});
    this.response = new Response(pipe.readable, {
      status: 200,
      headers: { "content-type": "application/octet-stream", "cache-control": "no-store" },
    });
  }

  async read(): Promise<Uint8Array | null> {
    if (this.#closed || this.#reader === null) return null;
    try {
      const { value, done } = await this.#reader.read();
      if (done) return null;
      return value;
    } catch (err) {
      if (this.#closed) return null;
      throw err;
    }
  }

  async write(bytes: Uint8Array): Promise<void> {
    if (this.#closed) throw new Deno.errors.BrokenPipe("transport closed");
    await this.#writer.ready;
    await this.#writer.write(bytes);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#writer.close().catch(() => {});
    this.#reader?.cancel().catch(() => {});
    this.onClose?.();
  }
}
