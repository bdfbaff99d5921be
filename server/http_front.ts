/**
 * The public side of the HTTP listener (docs/OPERATIONS.md "HTTP listener"): it accepts the
 * TCP (or TLS) connections itself and relays their bytes to `Deno.serve` on a private loopback
 * port, so that it can enforce what `Deno.serve` cannot: a cap on connections per client address
 * and in total, a deadline for the TLS handshake and the first request's headers, an idle
 * timeout, and closing one client's connection on demand (a `/connect` stream after a fatal
 * ERROR, a `/federation/events` body past its deadline). The handler sees the client's real
 * address. HTTP/2 (by ALPN under TLS) reaches `Deno.serve` as prior-knowledge h2c.
 *
 * @module
 */
import type { Logger } from "./log.ts";

/** What the handler learns about the client connection behind a request. */
export interface FrontInfo {
  /** The client's address as the public listener saw it. */
  remoteAddr: Deno.NetAddr;
  /** Resolves when the response was sent (as Deno.ServeHandlerInfo.completed). */
  completed: Promise<void>;
  /**
   * Ends the client's connection once what was already answered has left: the client's further
   * bytes are ignored and the connection closes (within a 2 s grace at most).
   */
  finish(): void;
}

export type FrontHandler = (request: Request, info: FrontInfo) => Response | Promise<Response>;

export interface FrontOptions {
  hostname: string;
  port: number;
  tls?: { cert: string; key: string };
  /** Connections one client address may hold open. */
  perAddress: number;
  /** Connections the listener holds open. */
  total: number;
  /** Seconds for the TLS handshake plus the first request's headers. */
  headerTimeout: number;
  /** Seconds without a byte in either direction before a connection is closed. */
  idleTimeout: number;
  log: Logger;
  /** Called with the reason of every refused or timed-out connection. */
  onRefused?: (reason: string) => void;
}

/** Most octets of a first request's headers (beyond: 431 and close). */
const MAX_HEADER_BYTES = 64 * 1024;
const HTTP2_PREFACE = "PRI * HTTP/2.0";
const FINISH_GRACE_MS = 2000;
const SWEEP_MS = 500;

const REFUSAL = (status: number, reason: string, text: string) =>
  new TextEncoder().encode(
    `HTTP/1.1 ${status} ${reason}\r\ncontent-type: text/plain\r\ncontent-length: ${
      text.length + 1
    }\r\nconnection: close\r\n\r\n${text}\n`,
  );

/** One client connection relayed to the inner server. */
class Link {
  lastActivity = Date.now();
  headersDone = false;
  /** Client bytes are dropped from here on (finish()). */
  discard = false;
  closed = false;
  inner: Deno.Conn | null = null;
  #graceTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(readonly client: Deno.Conn, readonly remote: Deno.NetAddr, readonly opened: number) {}

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.#graceTimer);
    for (const c of [this.client, this.inner]) {
      try {
        c?.close();
      } catch {
        // already closed
      }
    }
  }

  finish(): void {
    if (this.closed || this.discard) return;
    this.discard = true;
    // The inner server sees the request stream end, finishes its response and closes.
    this.inner?.closeWrite().catch(() => this.close());
    this.#graceTimer = setTimeout(() => this.close(), FINISH_GRACE_MS);
  }
}

/** The public HTTP listener in front of an inner `Deno.serve`. */
export class HttpFront {
  readonly #listener: Deno.Listener;
  readonly #inner: Deno.HttpServer;
  readonly #innerPort: number;
  /** Inner connections by the local port of their socket to the inner server. */
  readonly #byInnerPort = new Map<number, Link>();
  readonly #links = new Set<Link>();
  readonly #perAddress = new Map<string, number>();
  readonly #sweeper: ReturnType<typeof setInterval>;
  #stopping = false;
  #accepting: Promise<void>;

  private constructor(
    private readonly options: FrontOptions,
    listener: Deno.Listener,
    inner: Deno.HttpServer,
  ) {
    this.#listener = listener;
    this.#inner = inner;
    this.#innerPort = (inner.addr as Deno.NetAddr).port;
    this.#sweeper = setInterval(() => this.#sweep(), SWEEP_MS);
    this.#accepting = this.#acceptLoop();
  }

  /** Starts the inner server and the public listener. */
  static start(options: FrontOptions, handler: FrontHandler): HttpFront {
    let front: HttpFront | null = null;
    const inner = Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      onListen: () => {},
      onError: (err) => {
        options.log.error("http handler failed", { error: err });
        return new Response("internal error", { status: 500 });
      },
    }, (request, info) => {
      const link = front === null
        ? undefined
        : front.#byInnerPort.get((info.remoteAddr as Deno.NetAddr).port);
      if (!link) {
        // Someone on this machine reached the inner port directly, around every limit.
        return new Response("connect through the public listener\n", { status: 403 });
      }
      return handler(request, {
        remoteAddr: link.remote,
        // Read lazily: Deno creates this promise on first access, and an unobserved one that
        // rejects (a response cut short) would be reported as unhandled.
        get completed() {
          return info.completed;
        },
        finish: () => link.finish(),
      });
    });
    const { hostname, port, tls } = options;
    let listener: Deno.Listener;
    try {
      listener = tls
        ? Deno.listenTls({
          hostname,
          port,
          cert: tls.cert,
          key: tls.key,
          alpnProtocols: ["h2", "http/1.1"],
        })
        : Deno.listen({ hostname, port, transport: "tcp" });
    } catch (err) {
      inner.shutdown().catch(() => {});
      throw err;
    }
    front = new HttpFront(options, listener, inner);
    return front;
  }

  /** The public address. */
  get addr(): Deno.NetAddr {
    return this.#listener.addr as Deno.NetAddr;
  }

  /** Client connections open now. */
  get open(): number {
    return this.#links.size;
  }

  async #acceptLoop(): Promise<void> {
    try {
      for await (const conn of this.#listener) this.#serve(conn);
    } catch (err) {
      if (!this.#stopping && !(err instanceof Deno.errors.BadResource)) {
        this.options.log.warn("http listener stopped", { error: err });
      }
    }
  }

  #refuse(conn: Deno.Conn, reason: string, status: number, text: string): void {
    this.options.onRefused?.(reason);
    // A plain-text client gets a readable answer; under TLS there is no channel yet.
    const write = this.options.tls
      ? Promise.resolve(0)
      : conn.write(REFUSAL(status, "Refused", text));
    write.catch(() => 0).finally(() => {
      try {
        conn.close();
      } catch {
        // gone
      }
    });
  }

  #serve(conn: Deno.Conn): void {
    const remote = conn.remoteAddr as Deno.NetAddr;
    const host = remote.hostname;
    const held = this.#perAddress.get(host) ?? 0;
    if (this.#links.size >= this.options.total) {
      this.#refuse(conn, "http_total", 503, "too many connections to this server; try again later");
      return;
    }
    if (held >= this.options.perAddress) {
      this.#refuse(conn, "http_per_address", 429, `too many connections from ${host}`);
      return;
    }
    const link = new Link(conn, remote, Date.now());
    this.#links.add(link);
    this.#perAddress.set(host, held + 1);
    this.#relay(link).finally(() => {
      link.close();
      this.#links.delete(link);
      if (link.inner) this.#byInnerPort.delete((link.inner.localAddr as Deno.NetAddr).port);
      const left = (this.#perAddress.get(host) ?? 1) - 1;
      if (left <= 0) this.#perAddress.delete(host);
      else this.#perAddress.set(host, left);
    });
  }

  async #relay(link: Link): Promise<void> {
    try {
      if (this.options.tls) await (link.client as Deno.TlsConn).handshake();
      if (link.closed) return;
      // The inner connection is opened on the client's first bytes: a connection that sends
      // nothing costs one socket until the header timeout.
      const first = new Uint8Array(64 * 1024);
      const n = await link.client.read(first);
      if (n === null || link.closed) return;
      link.lastActivity = Date.now();
      const inner = await Deno.connect({ hostname: "127.0.0.1", port: this.#innerPort });
      link.inner = inner;
      if (link.closed) return;
      try {
        inner.setNoDelay(true);
        (link.client as Deno.TcpConn).setNoDelay?.(true);
      } catch {
        // latency only
      }
      this.#byInnerPort.set((inner.localAddr as Deno.NetAddr).port, link);
      await Promise.all([
        this.#upstream(link, inner, first.subarray(0, n)),
        this.#downstream(link, inner),
      ]);
    } catch {
      // A reset or a failed TLS handshake: the connection simply ends.
    }
  }

  /** Client → inner server, watching the first request's headers. */
  async #upstream(link: Link, inner: Deno.Conn, first: Uint8Array): Promise<void> {
    const buf = new Uint8Array(64 * 1024);
    let head = "";
    let pending: Uint8Array | null = first;
    try {
      for (;;) {
        let chunk: Uint8Array;
        if (pending !== null) {
          chunk = pending;
          pending = null;
        } else {
          const n = await link.client.read(buf);
          if (n === null) break;
          link.lastActivity = Date.now();
          chunk = buf.subarray(0, n);
        }
        if (link.discard) continue;
        if (!link.headersDone) {
          head += new TextDecoder().decode(chunk.subarray(0, MAX_HEADER_BYTES));
          if (head.startsWith(HTTP2_PREFACE) || head.includes("\r\n\r\n")) {
            link.headersDone = true;
          } else if (head.length > MAX_HEADER_BYTES) {
            await link.client.write(
              REFUSAL(431, "Request Header Fields Too Large", "headers too large"),
            )
              .catch(() => 0);
            link.close();
            return;
          }
        }
        await writeAll(inner, chunk);
      }
      if (!link.discard) await inner.closeWrite().catch(() => {});
    } catch {
      link.close();
    }
  }

  /** Inner server → client; the end of it ends the link. */
  async #downstream(link: Link, inner: Deno.Conn): Promise<void> {
    const buf = new Uint8Array(64 * 1024);
    try {
      for (;;) {
        const n = await inner.read(buf);
        if (n === null) break;
        link.lastActivity = Date.now();
        await writeAll(link.client, buf.subarray(0, n));
      }
    } catch {
      // client gone
    } finally {
      link.close();
    }
  }

  #sweep(): void {
    const now = Date.now();
    const headerMs = this.options.headerTimeout * 1000;
    const idleMs = this.options.idleTimeout * 1000;
    for (const link of this.#links) {
      if (!link.headersDone && now - link.opened > headerMs) {
        this.options.onRefused?.("http_header_timeout");
        link.close();
      } else if (now - link.lastActivity > idleMs) {
        this.options.onRefused?.("http_idle_timeout");
        link.close();
      }
    }
  }

  /** Stops accepting, lets the inner server finish its responses, closes what is left. */
  async shutdown(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    clearInterval(this.#sweeper);
    try {
      this.#listener.close();
    } catch {
      // closed
    }
    await this.#accepting;
    const inner = this.#inner.shutdown();
    // Links end when the inner server closes its side; a stuck client is cut after a grace.
    const grace = setTimeout(() => {
      for (const link of this.#links) link.close();
    }, FINISH_GRACE_MS);
    await inner;
    for (const link of this.#links) link.finish();
    while (this.#links.size > 0) await new Promise((r) => setTimeout(r, 20));
    clearTimeout(grace);
  }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) offset += await conn.write(bytes.subarray(offset));
}
