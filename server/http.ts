/**
 * The HTTP listener (`[server] bind`): `POST /connect` (CCP-1 over a duplex HTTP/1.1 or HTTP/2
 * stream), `GET /connect` upgraded to a WebSocket (server/websocket.ts), the web chat at `/chat/`
 * (web/mod.ts), `GET /healthz`, `GET /readyz`, `GET /metrics` (ccp1.md §8), and federation's
 * `POST /federation/events` (ccp1.md §7). `/connect` is answered before routing (the stream is
 * the request's own body and response); the rest are Hono routes, `/metrics` behind
 * `hono/bearer-auth`. `/connect` is a stream whose frames the codec bounds (no body limit);
 * the federation handler bounds its body with `hono/body-limit` itself, after its method and
 * media-type checks and within the body deadline.
 *
 * @module
 */
import { Hono, type MiddlewareHandler } from "hono";
import { bearerAuth } from "hono/bearer-auth";
import { HTTPException } from "hono/http-exception";
import { CATALOG_PATH, keyCatalog } from "./noise_keys.ts";
import { tokenMatches } from "../protocol/crypto.ts";
import { problemResponse } from "../protocol/errors.ts";
import type { RelayNode } from "./node.ts";
import { formatAddr, HttpStreamTransport } from "./transport.ts";
import type { FrontInfo } from "./http_front.ts";
import { isWebSocketUpgrade, upgradeToWebSocket } from "./websocket.ts";
import { CHAT_IMG_SRC, chatResponse } from "../web/mod.ts";
import { strictSecurityHeaders } from "./secure_headers.ts";

/** What the handler learns about the connection: Deno's info and, behind the front, its own. */
type Info = Deno.ServeHandlerInfo & Partial<Pick<FrontInfo, "completed" | "finish">>;
type Env = { Bindings: Info };

/**
 * Builds the request handler of the HTTP listener. `/connect` (the CCP-1 stream and the
 * WebSocket upgrade) is answered before any routing, so a session's stream is the request's
 * own; every other route is a Hono route.
 */
export function httpHandler(
  node: RelayNode,
  isTls: boolean,
): (request: Request, info: Deno.ServeHandlerInfo) => Promise<Response> | Response {
  const app = routes(node, isTls);
  return (request, info) => {
    if (new URL(request.url).pathname === "/connect") return connect(node, isTls, request, info);
    return app.fetch(request, info);
  };
}

/** `POST /connect` (a duplex stream) or `GET /connect` upgraded to a WebSocket. */
function connect(
  node: RelayNode,
  isTls: boolean,
  request: Request,
  info: Info,
): Response {
  if (isWebSocketUpgrade(request)) {
    return upgradeToWebSocket(node, request, info, isTls, problemResponse);
  }
  if (request.method !== "POST") return methodNotAllowed("POST");
  const addr = info.remoteAddr as Deno.NetAddr;
  // Closing the stream (a fatal ERROR, the end of the session) also closes the client's
  // connection, so a client that keeps trickling bytes holds nothing (server/http_front.ts).
  const transport = new HttpStreamTransport(
    request,
    formatAddr(addr),
    addr.hostname,
    isTls,
    info.finish,
  );
  node.accept(transport).catch((err) => {
    node.ctx.log.warn("connect stream failed", { error: err });
  });
  return transport.response;
}

/** The listener's other routes; a refusal is an RFC 9457 problem, as everywhere. */
function routes(node: RelayNode, isTls: boolean): Hono<Env> {
  const { storage, config, metrics } = node.ctx;
  const app = new Hono<Env>();
  const only = (...methods: string[]): MiddlewareHandler<Env> => async (c, next) => {
    if (!methods.includes(c.req.method)) return methodNotAllowed(methods[0]);
    await next();
  };

  // The signed catalog of this server's Noise keys (server/noise_keys.ts).
  app.use(CATALOG_PATH, only("GET", "HEAD"));
  app.get(
    CATALOG_PATH,
    () => Response.json(keyCatalog(config), { headers: { "cache-control": "max-age=300" } }),
  );

  app.use("/healthz", only("GET", "HEAD"));
  app.get("/healthz", () => Response.json({ status: "ok", node: node.ctx.nodeId }));

  app.use("/readyz", only("GET", "HEAD"));
  app.get("/readyz", async () => {
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
  });

  app.use("/metrics", only("GET"));
  const token = config.admin.token;
  if (token) {
    // Every way of not presenting the token (none, malformed, wrong) gets the same answer.
    const refusal = {
      wwwAuthenticateHeader: 'Bearer realm="commucat"',
      message: () =>
        problemResponse(
          401,
          "Unauthorized",
          "GET /metrics needs Authorization: Bearer <admin token>",
          {},
          { "www-authenticate": 'Bearer realm="commucat"' },
        ),
    };
    app.use(
      "/metrics",
      bearerAuth({
        verifyToken: (presented) => tokenMatches(presented, token),
        noAuthenticationHeader: refusal,
        invalidAuthenticationHeader: refusal,
        invalidToken: refusal,
      }),
    );
  }
  app.get("/metrics", async () =>
    new Response(await metrics.exposition(), {
      headers: { "content-type": metrics.contentType },
    }));

  // The web chat (web/mod.ts), under the security headers every HTML surface gets.
  app.use("/chat/*", strictSecurityHeaders({ tls: isTls, imgSrc: CHAT_IMG_SRC }));
  app.all("/chat/*", (c) =>
    chatResponse(c.req.raw, {
      serverKey: config.crypto.noisePublic,
      domain: config.server.domain,
      prologue: config.crypto.prologue,
      warn: (message, fields) => node.ctx.log.warn(message, fields),
    }));

  app.all("*", (c) => {
    const { pathname } = new URL(c.req.url);
    if (node.federation.isUserQuery(pathname)) {
      return node.federation.handleUserQuery(c.req.raw);
    }
    if (pathname === node.federation.inboundPath) {
      // Federation events from peers: checks and answers of its own (docs/FEDERATION.md),
      // within the body deadline ([limits] http_body_timeout).
      return withinDeadline(
        node.federation.handleInbound(c.req.raw, formatAddr(c.env.remoteAddr as Deno.NetAddr)),
        config.limits.httpBodyTimeout,
        c.env,
      );
    }
    return problemResponse(404, "Not Found", `no route for ${c.req.method} ${pathname}`);
  });
  // A refusal of bearer-auth is its answer; anything else goes on to the server's error handler.
  app.onError((err) => {
    if (err instanceof HTTPException) return err.getResponse();
    throw err;
  });
  return app;
}

/** The handler's answer, or a 408 (and the connection closed) when it takes longer. */
async function withinDeadline(
  answer: Promise<Response>,
  seconds: number,
  info: Partial<Pick<FrontInfo, "completed" | "finish">>,
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
