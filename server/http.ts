/**
 * The HTTP listener (`[server] bind`): `POST /connect` (CCP-1 over a duplex HTTP/1.1 or HTTP/2
 * stream), `GET /connect` upgraded to a WebSocket (server/websocket.ts), the web chat at `/chat/`
 * (web/mod.ts), `GET /healthz`, `GET /readyz`, `GET /metrics` (ccp1.md §8), and federation's
 * `POST /federation/events` (ccp1.md §7).
 *
 * @module
 */
import { CATALOG_PATH, keyCatalog } from "./noise_keys.ts";
import { tokenMatches } from "../protocol/crypto.ts";
import { problemResponse } from "../protocol/errors.ts";
import type { RelayNode } from "./node.ts";
import { formatAddr, HttpStreamTransport } from "./transport.ts";
import type { FrontInfo } from "./http_front.ts";
import { isWebSocketUpgrade, upgradeToWebSocket } from "./websocket.ts";
import { chatResponse, isChatPath } from "../web/mod.ts";

/** Builds the request handler of the HTTP listener. */
export function httpHandler(
  node: RelayNode,
  isTls: boolean,
): (request: Request, info: Deno.ServeHandlerInfo) => Promise<Response> | Response {
  const { storage, config, metrics } = node.ctx;
  return async (request, info) => {
    const url = new URL(request.url);
    switch (url.pathname) {
      case CATALOG_PATH:
        // The signed catalog of this server's Noise keys (server/noise_keys.ts).
        if (request.method !== "GET" && request.method !== "HEAD") return methodNotAllowed("GET");
        return Response.json(keyCatalog(config), { headers: { "cache-control": "max-age=300" } });
      case "/healthz":
        if (request.method !== "GET" && request.method !== "HEAD") return methodNotAllowed("GET");
        return Response.json({ status: "ok", node: node.ctx.nodeId });
      case "/readyz": {
        if (request.method !== "GET" && request.method !== "HEAD") return methodNotAllowed("GET");
        const readiness = await storage.readiness();
        if (readiness.ok) return Response.json({ status: "ready", ...readiness });
        const failing = [
          readiness.postgres.ok
            ? null
            : `${readiness.postgres.kind}: ${readiness.postgres.error ?? "not reachable"}`,
          readiness.redis.ok
            ? null
            : `${readiness.redis.kind}: ${readiness.redis.error ?? "not reachable"}`,
        ].filter((part) => part !== null);
        return problemResponse(503, "Not Ready", failing.join("; "), {
          postgres: readiness.postgres,
          redis: readiness.redis,
        });
      }
      case "/metrics": {
        if (request.method !== "GET") return methodNotAllowed("GET");
        const token = config.admin.token;
        if (token) {
          const header = request.headers.get("authorization") ?? "";
          const match = /^Bearer\s+(.+)$/i.exec(header);
          if (!match || !tokenMatches(match[1].trim(), token)) {
            return problemResponse(
              401,
              "Unauthorized",
              "GET /metrics needs Authorization: Bearer <admin token>",
              {},
              { "www-authenticate": 'Bearer realm="commucat"' },
            );
          }
        }
        return new Response(await metrics.exposition(), {
          headers: { "content-type": metrics.contentType },
        });
      }
      case "/connect": {
        if (isWebSocketUpgrade(request)) {
          return upgradeToWebSocket(node, request, info, isTls, problemResponse);
        }
        if (request.method !== "POST") return methodNotAllowed("POST");
        const addr = info.remoteAddr as Deno.NetAddr;
        // Closing the stream (a fatal ERROR, the end of the session) also closes the client's
        // connection, so a client that keeps trickling bytes holds nothing (server/http_front.ts).
        const finish = (info as Partial<FrontInfo>).finish;
        const transport = new HttpStreamTransport(
          request,
          formatAddr(addr),
          addr.hostname,
          isTls,
          finish,
        );
        node.accept(transport).catch((err) => {
          node.ctx.log.warn("connect stream failed", { error: err });
        });
        return transport.response;
      }
      default:
        if (isChatPath(url.pathname)) {
          const { crypto } = config;
          return chatResponse(request, {
            serverKey: crypto.noisePublic,
            domain: config.server.domain,
            prologue: crypto.prologue,
            warn: (message, fields) => node.ctx.log.warn(message, fields),
          }, isTls);
        }
        if (url.pathname === node.federation.inboundPath) {
          // Federation events from peers: checks and answers of its own (docs/FEDERATION.md),
          // within the body deadline ([limits] http_body_timeout).
          return withinDeadline(
            node.federation.handleInbound(request, formatAddr(info.remoteAddr as Deno.NetAddr)),
            config.limits.httpBodyTimeout,
            info as Partial<FrontInfo>,
          );
        }
        return problemResponse(404, "Not Found", `no route for ${request.method} ${url.pathname}`);
    }
  };
}

/** The handler's answer, or a 408 (and the connection closed) when it takes longer. */
async function withinDeadline(
  answer: Promise<Response>,
  seconds: number,
  info: Partial<FrontInfo>,
): Promise<Response> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<null>((
    resolve,
  ) => (timer = setTimeout(() => resolve(null), seconds * 1000)));
  try {
    const first = await Promise.race([answer, late]);
    if (first !== null) return first;
  } finally {
    clearTimeout(timer);
  }
  answer.catch(() => {}); // it fails once its connection is closed
  info.completed?.then(() => info.finish?.(), () => info.finish?.());
  return problemResponse(
    408,
    "Request Timeout",
    `the request was not received and handled within ${seconds} s ([limits] http_body_timeout)`,
  );
}

function methodNotAllowed(allowed: string): Response {
  return problemResponse(405, "Method Not Allowed", `use ${allowed}`, {}, { allow: allowed });
}
