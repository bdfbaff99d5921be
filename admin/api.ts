/**
 * The admin HTTP API, `/api/v1/…` on the console listener: JSON in and out, a bearer admin
 * token (compared in constant time), no cookies (so no CSRF), wrong tokens counted per client
 * address with a growing wait (the right token always works), RFC 9457 problem documents for
 * every error, and an OpenAPI document at /api/v1/openapi.json. Every action goes through the
 * operator-actions module (LocalAdmin), audited as `api:<label>`.
 */
import { Hono } from "hono";
import type { Context } from "hono";
import { bearerAuth } from "hono/bearer-auth";
import { bodyLimit } from "hono/body-limit";
import { HTTPException } from "hono/http-exception";
import { secureHeaders } from "hono/secure-headers";
import type { PeerStatus, Storage } from "../storage/types.ts";
import type { Ledger } from "../storage/ledger.ts";
import { StorageError } from "../storage/errors.ts";
import type { DeviceStatus } from "../storage/types.ts";
import { LocalAdmin, PEER_STATUSES } from "./local.ts";
import { CSV_HEADER, csvLine, exportFileName, toJson as eventsJson } from "./export.ts";
import { openApiDocument } from "./openapi.ts";

/** The largest request body the API reads (a peer or a user is far smaller). */
export const API_BODY_LIMIT = 64 * 1024;

/** Failure counting the API shares with the console's sign-in (console/middleware/rate_limit.ts). */
export interface FailureLimiter {
  waitFor(address: string): number;
  fail(address: string): number;
}

export interface ApiDeps {
  storage: Storage;
  /** The admin token (or the start-up token); null refuses every request. */
  token: () => string | null;
  tokenMatches(given: string, expected: string): boolean;
  limiter: FailureLimiter;
  staticPeerDomains: () => Iterable<string>;
  now: () => number;
  /** Where rotate-key is recorded (the server's ledger), like the CLI's rotate-keys. */
  ledger?: Pick<Ledger, "record"> | null;
}

type ApiEnv = { Bindings: { remoteAddr?: string }; Variables: { actor: string } };

/** A request the API refuses, as an RFC 9457 problem. */
export class ApiProblem extends Error {
  constructor(
    readonly status: number,
    readonly title: string,
    detail: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(detail);
  }
}

/** An RFC 9457 problem response. */
export function problem(
  status: number,
  title: string,
  detail: string,
  instance?: string,
  headers: Record<string, string> = {},
): Response {
  const body: Record<string, unknown> = { type: "about:blank", title, status, detail };
  if (instance) body.instance = instance;
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/problem+json", ...headers },
  });
}

/** Who the audit log names for an API call: `api:<label>`; the label comes from the caller. */
export function apiActor(label: string | undefined): string {
  const clean = (label ?? "").trim();
  return /^[A-Za-z0-9._:@-]{1,64}$/.test(clean) ? `api:${clean}` : "api:token";
}

const bad = (detail: string) => new ApiProblem(400, "invalid request", detail);

function intParam(value: string | undefined, name: string): number | undefined {
  if (value === undefined || value === "") return undefined;
  if (!/^\d{1,4}$/.test(value)) {
    throw bad(`${name} must be a whole number, got ${JSON.stringify(value)}`);
  }
  return Number(value);
}

function timeParam(value: string | undefined, name: string): Date | undefined {
  if (value === undefined || value === "") return undefined;
  const date = new Date(value);
  if (!/^\d{4}-\d{2}-\d{2}/.test(value) || Number.isNaN(date.getTime())) {
    throw bad(`${name} must be an RFC 3339 time or a date, got ${JSON.stringify(value)}`);
  }
  return date;
}

function oneOf<T extends string>(value: string | undefined, name: string, allowed: readonly T[]) {
  if (value === undefined || value === "") return undefined;
  if (!(allowed as readonly string[]).includes(value)) {
    throw bad(`${name} must be one of ${allowed.join(", ")}, got ${JSON.stringify(value)}`);
  }
  return value as T;
}

async function jsonBody(c: Context<ApiEnv>): Promise<Record<string, unknown>> {
  const type = c.req.header("content-type") ?? "";
  if (!/^application\/json\b/i.test(type)) {
    throw new ApiProblem(415, "unsupported media type", "send the body as application/json");
  }
  let body: unknown;
  try {
    body = await c.req.json();
  } catch {
    throw bad("the body is not valid JSON");
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw bad("the body must be a JSON object");
  }
  return body as Record<string, unknown>;
}

function str(body: Record<string, unknown>, key: string, required: true): string;
function str(body: Record<string, unknown>, key: string, required?: false): string | undefined;
function str(body: Record<string, unknown>, key: string, required = false) {
  const v = body[key];
  if (v === undefined || v === null) {
    if (required) throw bad(`${key} is required`);
    return undefined;
  }
  if (typeof v !== "string") throw bad(`${key} must be a string`);
  return v;
}

/** The API's Hono app, to be mounted at /api/v1. */
export function createAdminApi(deps: ApiDeps): Hono<ApiEnv> {
  const api = new Hono<ApiEnv>();
  api.use(secureHeaders({ crossOriginResourcePolicy: "same-origin" }));
  api.use(async (c, next) => {
    await next();
    c.header("cache-control", "no-store");
  });

  // The document describes the API; it holds no data, so it needs no token.
  api.get("/openapi.json", (c) => c.json(openApiDocument()));

  // Bearer token: wrong ones are counted per address; the right one always works, even while
  // that address waits (so nobody can lock the operator out by sending wrong tokens).
  const challenge = 'Bearer realm="commucat-admin"';
  api.use(bearerAuth<ApiEnv>({
    realm: "commucat-admin",
    verifyToken: (token, c: Context<ApiEnv>) => {
      const address = c.env?.remoteAddr ?? "unknown";
      const expected = deps.token();
      if (expected !== null && deps.tokenMatches(token, expected)) {
        // Like the sign-in page: a success does not clear the address's failures.
        c.set("actor", apiActor(c.req.header("commucat-actor")));
        return true;
      }
      const waiting = deps.limiter.waitFor(address);
      if (waiting > 0) {
        const seconds = Math.ceil(waiting / 1000);
        throw new ApiProblem(
          429,
          "too many wrong tokens",
          `too many wrong tokens from this address; try again in ${seconds} s`,
          { "retry-after": String(seconds), "www-authenticate": challenge },
        );
      }
      deps.limiter.fail(address);
      return false;
    },
    noAuthenticationHeader: {
      message: (c: Context) =>
        problem(401, "unauthorized", "send Authorization: Bearer <admin token>", c.req.path),
    },
    invalidAuthenticationHeader: {
      message: (c: Context) =>
        problem(
          400,
          "invalid authorization header",
          "expected Authorization: Bearer <token> (letters, digits and -._~+/ only)",
          c.req.path,
        ),
    },
    invalidToken: {
      message: (c: Context) =>
        problem(401, "unauthorized", "the bearer token is not the admin token", c.req.path),
    },
  }));
  api.use(bodyLimit({
    maxSize: API_BODY_LIMIT,
    onError: (c) =>
      problem(
        413,
        "body too large",
        `request bodies are limited to ${API_BODY_LIMIT} bytes`,
        c.req.path,
      ),
  }));

  const admin = (c: Context<ApiEnv>) =>
    new LocalAdmin({
      storage: deps.storage,
      actor: c.get("actor"),
      staticPeerDomains: deps.staticPeerDomains(),
      reachesServers: true,
      ledger: deps.ledger ?? null,
    });
  const page = (c: Context<ApiEnv>) => ({
    limit: intParam(c.req.query("limit"), "limit"),
    cursor: c.req.query("cursor") || undefined,
  });

  api.get(
    "/users",
    async (c) =>
      c.json(await admin(c).users({ search: c.req.query("search") || undefined, ...page(c) })),
  );
  api.post("/users", async (c) => {
    const body = await jsonBody(c);
    const user = await admin(c).registerUser({
      handle: str(body, "handle", true),
      displayName: str(body, "displayName") ?? null,
      avatarUrl: str(body, "avatarUrl") ?? null,
    });
    return c.json(user, 201);
  });

  api.get(
    "/users/:id/device-limit",
    async (c) => c.json(await admin(c).deviceLimit(c.req.param("id"))),
  );
  api.put("/users/:id/device-limit", async (c) => {
    const body = await jsonBody(c);
    const limit = body.maxDevices;
    if (limit !== null && !Number.isInteger(limit)) {
      throw bad("maxDevices must be an integer 1..10000, or null for the server's default");
    }
    return c.json(await admin(c).setDeviceLimit(c.req.param("id"), limit as number | null));
  });

  api.get("/devices", async (c) => {
    const awaiting = c.req.query("awaiting");
    return c.json(
      await admin(c).devices({
        status: oneOf<DeviceStatus>(c.req.query("status"), "status", [
          "pending",
          "active",
          "revoked",
        ]),
        awaitingApproval: awaiting === "true" || awaiting === "1",
        userId: c.req.query("user") || undefined,
        search: c.req.query("search") || undefined,
        ...page(c),
      }),
    );
  });
  api.get("/devices/:id", async (c) => c.json(await admin(c).device(c.req.param("id"))));
  api.get("/devices/:id/queue", async (c) => c.json(await admin(c).delivery(c.req.param("id"))));
  api.post(
    "/devices/:id/approve",
    async (c) => c.json(await admin(c).approveDevice(c.req.param("id"))),
  );
  api.post(
    "/devices/:id/reject",
    async (c) => c.json(await admin(c).rejectDevice(c.req.param("id"))),
  );
  api.post(
    "/devices/:id/revoke",
    async (c) => c.json(await admin(c).revokeDevice(c.req.param("id"))),
  );
  api.post("/rotate-key", async (c) => {
    const body = await jsonBody(c);
    const result = await admin(c).rotateKey({
      userId: str(body, "userId"),
      handle: str(body, "handle"),
      deviceId: str(body, "deviceId"),
    });
    return c.json(result, 201);
  });

  api.get("/key-events", async (c) => {
    const device = c.req.query("device") || null;
    const format = oneOf(c.req.query("format"), "format", ["json", "csv"] as const) ?? "json";
    const events = await admin(c).keyEvents(device, {
      from: timeParam(c.req.query("from"), "from"),
      to: timeParam(c.req.query("to"), "to"),
    });
    if (format === "csv") {
      return c.body(CSV_HEADER + events.map(csvLine).join(""), 200, {
        "content-type": "text/csv; charset=utf-8",
        "content-disposition": `attachment; filename="${
          exportFileName(device, new Date(deps.now()), "csv")
        }"`,
      });
    }
    if (c.req.query("export") === "1") {
      return c.body(eventsJson(events), 200, { "content-type": "application/json; charset=utf-8" });
    }
    return c.json({ items: events });
  });

  api.get("/peers", async (c) => c.json({ items: await admin(c).peers() }));
  api.post("/peers", async (c) => {
    const body = await jsonBody(c);
    const result = await admin(c).addPeer({
      domain: str(body, "domain", true),
      endpoint: str(body, "endpoint", true),
      publicKey: str(body, "publicKey", true),
      status: oneOf<PeerStatus>(str(body, "status"), "status", PEER_STATUSES),
    });
    return c.json(result);
  });
  api.post("/peers/:domain/status", async (c) => {
    const body = await jsonBody(c);
    const status = oneOf<PeerStatus>(str(body, "status", true), "status", PEER_STATUSES)!;
    return c.json(await admin(c).setPeerStatus(c.req.param("domain"), status));
  });
  api.post(
    "/peers/:domain/retry",
    async (c) => c.json(await admin(c).retryPeer(c.req.param("domain"))),
  );
  api.get("/dead-letters", async (c) =>
    c.json({
      items: await admin(c).deadLetters({
        peerDomain: c.req.query("peer") || undefined,
        limit: intParam(c.req.query("limit"), "limit"),
      }),
    }));
  api.post(
    "/dead-letters/:id/replay",
    async (c) => c.json(await admin(c).replayDeadLetter(c.req.param("id"))),
  );

  api.get(
    "/groups",
    async (c) =>
      c.json(await admin(c).groups({ search: c.req.query("search") || undefined, ...page(c) })),
  );
  api.get("/groups/:id", async (c) => c.json(await admin(c).group(c.req.param("id"))));
  api.delete(
    "/groups/:id/members/:device",
    async (c) => c.json(await admin(c).removeGroupMember(c.req.param("id"), c.req.param("device"))),
  );

  api.get("/audit", async (c) =>
    c.json(
      await admin(c).audit({
        actor: c.req.query("actor") || undefined,
        action: c.req.query("action") || undefined,
        target: c.req.query("target") || undefined,
        ...page(c),
      }),
    ));
  api.get("/nodes", async (c) => c.json({ items: await admin(c).nodes() }));

  // Mounted in the console app, a sub-app's notFound is not consulted: catch the rest here.
  api.all(
    "*",
    (c) =>
      problem(404, "not found", `there is no API route ${c.req.method} ${c.req.path}`, c.req.path),
  );
  api.onError((err, c) => {
    if (err instanceof ApiProblem) {
      return problem(err.status, err.title, err.message, c.req.path, err.headers);
    }
    if (err instanceof HTTPException) return err.getResponse();
    if (err instanceof StorageError) {
      return problem(err.status, err.title, err.message, c.req.path);
    }
    return problem(
      500,
      "internal error",
      "the request failed; the server log has details",
      c.req.path,
    );
  });
  return api;
}
