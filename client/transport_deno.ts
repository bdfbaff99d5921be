/**
 * The Deno-only transports: plain TCP, TLS, and the HTTP `POST /connect` duplex stream
 * (HTTP/2 under TLS, HTTP/1.1 chunked in the clear). Importing this module registers them
 * with client/transport.ts; client/mod.ts does.
 *
 * @module
 */
import {
  connectUrl,
  isLoopbackHost,
  registerPlatformTransports,
  type Transport,
  type TransportKind,
  type TransportOptions,
} from "./transport.ts";
import { ConnStream } from "../protocol/conn_stream.ts";

/** Opens a tcp, tls or http transport as described by `options`. */
export async function openDenoTransport(options: TransportOptions): Promise<Transport> {
  switch (options.transport) {
    case "tcp": {
      const hostname = options.host ?? "127.0.0.1";
      const conn = await Deno.connect({ hostname, port: options.port ?? 9443 });
      conn.setNoDelay(true);
      return new ConnTransport("tcp", conn, false, isLoopbackHost(hostname));
    }
    case "tls": {
      const hostname = options.host ?? "127.0.0.1";
      const conn = await Deno.connectTls({
        hostname: options.serverName ?? hostname,
        port: options.port ?? 9443,
        caCerts: options.caCerts,
      });
      await conn.handshake();
      return new ConnTransport("tls", conn, true, isLoopbackHost(hostname));
    }
    case "http":
      return openHttpTransport(options);
    default:
      throw new TypeError(
        `transport must be "tcp", "tls" or "http", got ${JSON.stringify(options.transport)}`,
      );
  }
}

/** A `Deno.Conn` (TCP or TLS) as a transport. */
class ConnTransport extends ConnStream implements Transport {
  constructor(
    readonly kind: TransportKind,
    conn: Deno.Conn,
    readonly tls: boolean,
    readonly loopback: boolean,
  ) {
    super(conn);
  }
}

/**
 * `POST /connect`: the request body is a stream we write into, the response body the
 * stream we read. The request starts at once and is not awaited here, so a server that
 * answers only after the first bytes (HELLO) cannot deadlock the client.
 */
function openHttpTransport(options: TransportOptions): Transport {
  const url = connectUrl(options);
  const client = options.caCerts?.length
    ? Deno.createHttpClient({ caCerts: options.caCerts })
    : undefined;
  const abort = new AbortController();
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      controller = c;
    },
  });
  const response = fetch(url, {
    method: "POST",
    body,
    // Deno's fetch is full duplex over h2 and HTTP/1.1 chunked despite the name.
    duplex: "half",
    headers: { "content-type": "application/octet-stream" },
    signal: abort.signal,
    client,
  } as RequestInit);
  return new HttpTransport(
    url,
    response,
    controller,
    abort,
    client,
    isLoopbackHost(url.hostname),
  );
}

class HttpTransport implements Transport {
  readonly kind = "http" as const;
  readonly tls: boolean;
  #reader: Promise<ReadableStreamDefaultReader<Uint8Array>>;
  #controller: ReadableStreamDefaultController<Uint8Array>;
  #abort: AbortController;
  #client: Deno.HttpClient | undefined;
  #closed = false;

  constructor(
    url: URL,
    response: Promise<Response>,
    controller: ReadableStreamDefaultController<Uint8Array>,
    abort: AbortController,
    client: Deno.HttpClient | undefined,
    readonly loopback: boolean,
  ) {
    this.tls = url.protocol === "https:";
    this.#controller = controller;
    this.#abort = abort;
    this.#client = client;
    this.#reader = response.then(async (res) => {
      if (!res.ok || res.body === null) {
        const text = await res.text().catch(() => "");
        throw new Error(`POST ${url.pathname} answered ${res.status}: ${text.slice(0, 200)}`);
      }
      return res.body.getReader();
    });
    // Keep an early rejection from going unhandled when nobody reads yet.
    this.#reader.catch(() => {});
  }

  async read(): Promise<Uint8Array | null> {
    if (this.#closed) return null;
    try {
      const reader = await this.#reader;
      const { value, done } = await reader.read();
      if (done) return null;
      return value;
    } catch (error) {
      if (this.#closed) return null;
      throw error;
    }
  }

  write(bytes: Uint8Array): Promise<void> {
    if (this.#closed) return Promise.reject(new Error("transport is closed"));
    // The body stream owns the chunk from here on: hand it a copy the caller cannot mutate.
    this.#controller.enqueue(bytes.slice());
    return Promise.resolve();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#controller.close();
    } catch {
      // Stream already errored or closed.
    }
    this.#abort.abort();
    this.#reader.then((r) => r.cancel().catch(() => {}), () => {});
    this.#client?.close();
  }
}

registerPlatformTransports(openDenoTransport);
