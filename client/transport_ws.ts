/**
 * The WebSocket transport: the server's `/connect` upgraded to a WebSocket, each binary
 * message a piece of the same CCP-1 byte stream the other transports carry (message
 * boundaries mean nothing; frames may span messages). Uses only the standard `WebSocket`
 * global, so it runs in Deno and in browsers alike.
 *
 * @module
 */
import { isLoopbackHost, type Transport, type TransportOptions } from "./transport.ts";

/** Bytes the socket may hold unsent before `write` waits for it to drain. */
const SEND_HIGH_WATER = 1024 * 1024;
/** How often a waiting `write` looks at the socket's unsent bytes again. */
const DRAIN_POLL_MS = 5;

/**
 * Builds the WebSocket `/connect` URL (ws: or wss:): `options.url` (http(s) URLs become
 * ws(s)), else the current page's origin in a browser, else `ws://<host>:<port ?? 8443>`.
 */
export function websocketUrl(options: Pick<TransportOptions, "url" | "host" | "port">): URL {
  const page = (globalThis as { location?: { href?: string } }).location?.href;
  const raw = options.url ??
    (page && options.host === undefined
      ? new URL("/connect", page).href
      : `ws://${options.host ?? "127.0.0.1"}:${options.port ?? 8443}/connect`);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new TypeError(`url ${JSON.stringify(raw)} is not a valid URL`);
  }
  if (url.protocol === "http:") url.protocol = "ws:";
  else if (url.protocol === "https:") url.protocol = "wss:";
  if (url.protocol !== "ws:" && url.protocol !== "wss:") {
    throw new TypeError(`url ${JSON.stringify(raw)} must be ws:, wss:, http: or https:`);
  }
  if (url.pathname === "/" || url.pathname === "") url.pathname = "/connect";
  return url;
}

/** Opens a WebSocket to the server's `/connect` and resolves once it is open. */
export function openWebSocketTransport(options: TransportOptions): Promise<Transport> {
  const url = websocketUrl(options);
  if (typeof WebSocket !== "function") {
    return Promise.reject(new TypeError("this runtime has no WebSocket"));
  }
  // Deno's WebSocket takes an HTTP client trusting extra certificates (a self-signed server);
  // a browser trusts what the browser trusts.
  const deno = (globalThis as {
    Deno?: { createHttpClient?: (o: { caCerts: string[] }) => { close(): void } };
  }).Deno;
  const client = options.caCerts?.length && deno?.createHttpClient
    ? deno.createHttpClient({ caCerts: options.caCerts })
    : null;
  const socket = client
    ? new (WebSocket as unknown as new (url: string, options: unknown) => WebSocket)(url.href, {
      client,
    })
    : new WebSocket(url.href);
  socket.binaryType = "arraybuffer";
  const transport = new WebSocketTransport(socket, url, () => client?.close());
  return new Promise((resolve, reject) => {
    const onOpen = () => {
      cleanup();
      resolve(transport);
    };
    const onClose = (event: CloseEvent) => {
      cleanup();
      const why = event.reason ? `: ${event.reason}` : "";
      reject(
        new Error(
          `WebSocket ${url.origin}${url.pathname} did not open (close code ${event.code}${why}); ` +
            "a refused origin or an unreachable server looks like this",
        ),
      );
    };
    const cleanup = () => {
      socket.removeEventListener("open", onOpen);
      socket.removeEventListener("close", onClose);
    };
    socket.addEventListener("open", onOpen);
    socket.addEventListener("close", onClose);
  });
}

/** A WebSocket as a byte stream. */
class WebSocketTransport implements Transport {
  readonly kind = "ws" as const;
  readonly tls: boolean;
  readonly loopback: boolean;
  #socket: WebSocket;
  #queue: Uint8Array[] = [];
  #waiter: ((chunk: Uint8Array | null | Error) => void) | null = null;
  #ended = false;
  #failure: Error | null = null;
  #closed = false;

  #release: () => void;

  constructor(socket: WebSocket, url: URL, release: () => void) {
    this.#socket = socket;
    this.#release = release;
    this.tls = url.protocol === "wss:";
    this.loopback = isLoopbackHost(url.hostname);
    socket.addEventListener("message", (event: MessageEvent) => {
      const data = event.data;
      if (data instanceof ArrayBuffer) {
        this.#push(new Uint8Array(data));
      } else {
        this.#fail(new TypeError("the server sent a text WebSocket message; CCP-1 is binary"));
      }
    });
    socket.addEventListener("close", () => {
      this.#end();
      this.#release();
    });
  }

  #push(chunk: Uint8Array): void {
    if (this.#ended) return;
    const waiter = this.#waiter;
    if (waiter) {
      this.#waiter = null;
      waiter(chunk);
    } else {
      this.#queue.push(chunk);
    }
  }

  #fail(error: Error): void {
    this.#failure ??= error;
    this.close();
    this.#end();
  }

  #end(): void {
    this.#ended = true;
    const waiter = this.#waiter;
    this.#waiter = null;
    waiter?.(this.#failure ?? null);
  }

  read(): Promise<Uint8Array | null> {
    const next = this.#queue.shift();
    if (next !== undefined) return Promise.resolve(next);
    if (this.#failure) return Promise.reject(this.#failure);
    if (this.#ended || this.#closed) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      this.#waiter = (value) => value instanceof Error ? reject(value) : resolve(value);
    });
  }

  async write(bytes: Uint8Array): Promise<void> {
    const socket = this.#socket;
    if (this.#closed || socket.readyState !== WebSocket.OPEN) {
      throw new Error("transport is closed");
    }
    // send() copies the bytes; bufferedAmount is what is still waiting for the network.
    socket.send(bytes);
    while (socket.bufferedAmount > SEND_HIGH_WATER) {
      await new Promise((resolve) => setTimeout(resolve, DRAIN_POLL_MS));
      if (socket.readyState !== WebSocket.OPEN) throw new Error("transport is closed");
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#socket.close(1000);
    } catch {
      // Already closing.
    }
    this.#end();
  }
}
