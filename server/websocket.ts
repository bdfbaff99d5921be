/**
 * `GET /connect` with `Upgrade: websocket` on the HTTP listener (and so under TLS when it is
 * configured): the checks before the upgrade, then the socket handed to the node like any other
 * connection (server/ws_transport.ts carries the bytes).
 *
 * Checks, in order, each refused with an RFC 9457 problem before any upgrade:
 * - `Origin` (sent by every browser): allowed when it is the listener's own origin (scheme,
 *   host and port of the request) or listed in `[server] allowed_origins` (`"*"` allows any).
 *   A request without `Origin` is not from a browser page and is let through: the origin
 *   check protects browser users from other sites' scripts (cross-site WebSocket hijacking);
 *   the Noise handshake authenticates every client either way. → 403 `Origin Not Allowed`.
 * - at most {@link WS_CONNECTIONS_PER_ADDRESS} open WebSockets per remote address
 *   → 429 `Too Many Connections`.
 *
 * @module
 */
import { Counter, type Registry } from "prom-client";
import type { RelayNode } from "./node.ts";
import { formatAddr } from "./transport.ts";
import { WebSocketTransport } from "./ws_transport.ts";

/** Open WebSockets one remote address may hold at once. */
export const WS_CONNECTIONS_PER_ADDRESS = 64;

/** True when `request` asks for a WebSocket upgrade. */
export function isWebSocketUpgrade(request: Request): boolean {
  return (request.headers.get("upgrade") ?? "").toLowerCase() === "websocket";
}

/**
 * Whether a request's `Origin` may open a WebSocket: absent (not a browser page), the
 * listener's own origin, or one of `allowed` (exact origins, or `"*"`).
 */
export function originAllowed(
  origin: string | null,
  request: Request,
  isTls: boolean,
  allowed: readonly string[],
): boolean {
  if (origin === null) return true;
  if (allowed.includes("*")) return true;
  let parsed: URL;
  try {
    parsed = new URL(origin);
  } catch {
    return false; // "null" (sandboxed pages, file:) and anything malformed
  }
  if (allowed.includes(parsed.origin)) return true;
  const host = request.headers.get("host");
  if (host === null) return false;
  return parsed.protocol === (isTls ? "https:" : "http:") && parsed.host === host.toLowerCase();
}

const upgradeCounters = new WeakMap<Registry, Counter<"result">>();

function upgrades(registry: Registry): Counter<"result"> {
  let counter = upgradeCounters.get(registry);
  if (!counter) {
    counter = new Counter({
      name: "commucat_websocket_upgrades_total",
      help: "WebSocket upgrades of /connect, by result (accepted, origin, per_address, invalid)",
      labelNames: ["result"],
      registers: [registry],
    });
    upgradeCounters.set(registry, counter);
  }
  return counter;
}

/** The per-address count of open WebSockets, per node. */
const openByNode = new WeakMap<RelayNode, Map<string, number>>();

/** Handles `/connect` with `Upgrade: websocket`: checks, upgrade, connection. */
export function upgradeToWebSocket(
  node: RelayNode,
  request: Request,
  info: Deno.ServeHandlerInfo,
  isTls: boolean,
  problem: (status: number, title: string, detail: string) => Response,
): Response {
  const { config, metrics, log } = node.ctx;
  const counter = upgrades(metrics.registry);
  const addr = info.remoteAddr as Deno.NetAddr;
  const remote = formatAddr(addr);
  if (request.method !== "GET") {
    counter.inc({ result: "invalid" });
    return problem(405, "Method Not Allowed", "a WebSocket upgrade of /connect uses GET");
  }
  const origin = request.headers.get("origin");
  if (!originAllowed(origin, request, isTls, config.server.allowedOrigins)) {
    counter.inc({ result: "origin" });
    log.warn("websocket origin refused", { remote, origin, transport: "ws" });
    return problem(
      403,
      "Origin Not Allowed",
      `origin ${JSON.stringify(origin)} may not open /connect; ` +
        "add it to [server] allowed_origins to allow it",
    );
  }
  let open = openByNode.get(node);
  if (!open) openByNode.set(node, open = new Map());
  const held = open.get(addr.hostname) ?? 0;
  if (held >= WS_CONNECTIONS_PER_ADDRESS) {
    counter.inc({ result: "per_address" });
    log.warn("websocket refused: too many from one address", {
      remote,
      open: held,
      transport: "ws",
    });
    return problem(
      429,
      "Too Many Connections",
      `${addr.hostname} already holds ${held} WebSocket connections (limit ${WS_CONNECTIONS_PER_ADDRESS})`,
    );
  }
  let upgraded;
  try {
    // idleTimeout: Deno pings an idle socket and closes it when no pong comes back.
    upgraded = Deno.upgradeWebSocket(request, { idleTimeout: config.server.keepalive });
  } catch (err) {
    counter.inc({ result: "invalid" });
    return problem(400, "Bad Request", `not a valid WebSocket upgrade: ${String(err)}`);
  }
  counter.inc({ result: "accepted" });
  open.set(addr.hostname, held + 1);
  const transport = new WebSocketTransport(upgraded.socket, remote, addr.hostname, isTls);
  node.accept(transport)
    .catch((err) => log.warn("websocket connection failed", { error: err, transport: "ws" }))
    .finally(() => {
      const left = (open.get(addr.hostname) ?? 1) - 1;
      if (left <= 0) open.delete(addr.hostname);
      else open.set(addr.hostname, left);
    });
  return upgraded.response;
}
