/**
 * The byte transports the client SDK speaks CCP-1 over, behind one interface: plain TCP, TLS
 * and the HTTP `POST /connect` duplex stream (Deno only: client/transport_deno.ts), and the
 * WebSocket upgrade of `/connect` (Deno and browsers: client/transport_ws.ts).
 *
 * A transport only moves bytes; framing, the handshake and the v2 secure stream live above it.
 * This module imports nothing platform-specific: the SDK core built on it runs unchanged in
 * Deno and in a browser.
 *
 * @module
 */
import { isLoopbackHost } from "../protocol/net.ts";
import { openWebSocketTransport } from "./transport_ws.ts";

export { websocketUrl } from "./transport_ws.ts";

/** How the client reaches the server. */
export type TransportKind = "tcp" | "tls" | "http" | "ws";

/** A connected, full-duplex byte stream. */
export interface Transport {
  /** Which kind of transport this is. */
  readonly kind: TransportKind;
  /** True when the bytes travel inside TLS (tls, https, wss). */
  readonly tls: boolean;
  /** True when the peer is on the loopback interface. */
  readonly loopback: boolean;
  /**
   * The next chunk received, as a fresh array the caller may keep, or `null` at end of
   * stream.
   */
  read(): Promise<Uint8Array | null>;
  /** Writes every byte of `bytes` (looping over partial writes). */
  write(bytes: Uint8Array): Promise<void>;
  /** Closes the stream; pending reads end with `null`. Idempotent. */
  close(): void;
}

/** Where and how to connect. */
export interface TransportOptions {
  transport: TransportKind;
  /** Host name or address, for tcp and tls (default 127.0.0.1). */
  host?: string;
  /** Port, for tcp and tls (default 9443, the server's `tcp_bind`). */
  port?: number;
  /**
   * For http and ws: the URL of the server's `bind` listener, e.g.
   * `https://localhost:8443/connect` or `wss://localhost:8443/connect` (a URL without a path
   * gets `/connect`; for ws an http(s) URL is taken as its ws(s) twin). Default
   * `http://<host>:<port ?? 8443>/connect`, and in a browser page the page's own origin.
   */
  url?: string;
  /** PEM certificates to trust in addition to the system roots (Deno: tls, http, ws). */
  caCerts?: string[];
  /** Server name for TLS certificate checks when `host` is an address (tls only). */
  serverName?: string;
}

/** Opens a transport of one kind; a platform registers the kinds it can open. */
export type TransportOpener = (options: TransportOptions) => Promise<Transport>;

export { isLoopbackHost };

let platformOpener: TransportOpener | null = null;

/**
 * Registers the opener for the kinds only a platform provides (tcp, tls, http);
 * client/transport_deno.ts calls it when imported.
 */
export function registerPlatformTransports(opener: TransportOpener): void {
  platformOpener = opener;
}

/** The module holding the Deno transports; a variable so browser bundles leave it out. */
const DENO_TRANSPORTS = "./transport_deno.ts";

/** Opens a transport as described by `options`. */
export async function openTransport(options: TransportOptions): Promise<Transport> {
  const kind = options.transport;
  if (kind === "ws") return await openWebSocketTransport(options);
  if (kind !== "tcp" && kind !== "tls" && kind !== "http") {
    throw new TypeError(
      `transport must be "tcp", "tls", "http" or "ws", got ${JSON.stringify(kind)}`,
    );
  }
  if (platformOpener === null && "Deno" in globalThis) {
    // Programs that import client/sdk.ts directly (rather than client/mod.ts) still get them.
    await import(DENO_TRANSPORTS);
  }
  if (platformOpener === null) {
    throw new TypeError(
      `transport "${kind}" needs Deno (raw sockets or a duplex fetch); in a browser use "ws"`,
    );
  }
  return await platformOpener(options);
}

/** Builds the `/connect` URL from the options (http: or https:). */
export function connectUrl(options: TransportOptions): URL {
  const raw = options.url ??
    `http://${options.host ?? "127.0.0.1"}:${options.port ?? 8443}/connect`;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new TypeError(`url ${JSON.stringify(raw)} is not a valid URL`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new TypeError(`url ${JSON.stringify(raw)} must be http: or https:`);
  }
  if (url.pathname === "/" || url.pathname === "") url.pathname = "/connect";
  return url;
}
