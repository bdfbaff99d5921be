/**
 * The OpenAPI 3.1 document of the admin API, served at /api/v1/openapi.json. A test checks that
 * it lists exactly the routes the API serves.
 */

type Param = { name: string; in: "path" | "query"; required?: boolean; description: string };

const page: Param[] = [
  { name: "limit", in: "query", description: "page size, 1..500 (default 50)" },
  { name: "cursor", in: "query", description: "nextCursor of the previous page" },
];
const path = (name: string, description: string): Param => ({
  name,
  in: "path",
  required: true,
  description,
});
const query = (name: string, description: string): Param => ({ name, in: "query", description });

const problem = { $ref: "#/components/responses/Problem" };
const json = (description: string, schema: Record<string, unknown> = { type: "object" }) => ({
  description,
  content: { "application/json": { schema } },
});
const pageOf = (ref: string) => ({
  type: "object",
  required: ["items", "nextCursor"],
  properties: {
    items: { type: "array", items: { $ref: `#/components/schemas/${ref}` } },
    nextCursor: { type: ["string", "null"] },
  },
});
const itemsOf = (ref: string) => ({
  type: "object",
  required: ["items"],
  properties: { items: { type: "array", items: { $ref: `#/components/schemas/${ref}` } } },
});
const body = (properties: Record<string, unknown>, required: string[]) => ({
  required: true,
  content: { "application/json": { schema: { type: "object", required, properties } } },
});
const str = { type: "string" };
const op = (
  summary: string,
  parameters: Param[],
  ok: Record<string, unknown>,
  extra: Record<string, unknown> = {},
) => ({
  summary,
  parameters,
  responses: { "200": ok, "4XX": problem, "5XX": problem },
  ...extra,
});

const deviceId = path("id", "device id");

/** The document (a fresh object each call). */
export function openApiDocument(): Record<string, unknown> {
  return {
    openapi: "3.1.0",
    info: {
      title: "CommuCat admin API",
      version: "1",
      description:
        "Operator actions and listings. Authenticate with `Authorization: Bearer <admin token>`; " +
        "no cookies are read, so there is no CSRF. Wrong tokens are counted per client address " +
        "with a growing wait (429 with Retry-After); the right token always works. Errors are " +
        "RFC 9457 problem documents. An optional `CommuCat-Actor` header names the operator in " +
        "the audit log (`api:<label>`).",
    },
    servers: [{ url: "/api/v1" }],
    security: [{ bearer: [] }],
    paths: {
      "/openapi.json": {
        get: { ...op("this document", [], json("the OpenAPI document")), security: [] },
      },
      "/users": {
        get: op(
          "list users",
          [query("search", "handle prefix"), ...page],
          json("users", pageOf("User")),
        ),
        post: {
          ...op("register a user", [], json("unused")),
          requestBody: body({ handle: str, displayName: str, avatarUrl: str }, ["handle"]),
          responses: {
            "201": json("the user", { $ref: "#/components/schemas/User" }),
            "4XX": problem,
          },
        },
      },
      "/users/{id}/device-limit": {
        get: op(
          "a user's device limit (maxDevices null: [limits] max_devices_per_user) and count",
          [path("id", "user id or handle")],
          json("the limit"),
        ),
        put: {
          ...op(
            "set a user's device limit; maxDevices null restores the default",
            [path("id", "user id or handle")],
            json("the limit"),
          ),
          requestBody: body({ maxDevices: { type: ["integer", "null"] } }, ["maxDevices"]),
        },
      },
      "/devices": {
        get: op("list devices", [
          query("status", "pending, active or revoked"),
          query("awaiting", "true: only devices (or new keys) waiting for approval"),
          query("user", "owner's user id"),
          query("search", "device id or handle prefix"),
          ...page,
        ], json("devices", pageOf("Device"))),
      },
      "/devices/{id}": {
        get: op(
          "one device",
          [deviceId],
          json("the device", { $ref: "#/components/schemas/Device" }),
        ),
      },
      "/devices/{id}/queue": {
        get: op("the device's delivery view: queue depth, oldest, in flight, redelivered", [
          deviceId,
        ], json("delivery")),
      },
      "/devices/{id}/approve": {
        post: op(
          "approve a pending device or its pending key",
          [deviceId],
          json("device and key event"),
        ),
      },
      "/devices/{id}/reject": {
        post: op(
          "reject a pending device or its pending key",
          [deviceId],
          json("device and key event"),
        ),
      },
      "/devices/{id}/revoke": {
        post: op(
          "revoke a device and end its connections",
          [deviceId],
          json("device and key event"),
        ),
      },
      "/rotate-key": {
        post: {
          ...op(
            "generate a device key (new device, or re-key one); the private key is shown once",
            [],
            json("unused"),
          ),
          requestBody: body({ userId: str, handle: str, deviceId: str }, []),
          responses: { "201": json("the new key pair and key event"), "4XX": problem },
        },
      },
      "/key-events": {
        get: op("key events, oldest first (export)", [
          query("device", "device id (all devices when absent)"),
          query("from", "RFC 3339 time, inclusive"),
          query("to", "RFC 3339 time, exclusive"),
          query("format", "json (default) or csv"),
          query("export", "1: a bare JSON array of export rows"),
        ], {
          description: "the events",
          content: {
            "application/json": { schema: itemsOf("KeyEvent") },
            "text/csv": { schema: str },
          },
        }),
      },
      "/peers": {
        get: op("federation peers with outbox backoff state", [], json("peers", itemsOf("Peer"))),
        post: {
          ...op("add or update a database peer", [], json("the peer")),
          requestBody: body(
            {
              domain: str,
              endpoint: str,
              publicKey: str,
              status: { enum: ["active", "pending", "blocked"] },
            },
            ["domain", "endpoint", "publicKey"],
          ),
        },
      },
      "/peers/{domain}/status": {
        post: {
          ...op("set a database peer's status", [path("domain", "peer domain")], json("the peer")),
          requestBody: body({ status: { enum: ["active", "pending", "blocked"] } }, ["status"]),
        },
      },
      "/peers/{domain}/retry": {
        post: op("retry now: the peer's pending outbox entries become due", [
          path("domain", "peer domain"),
        ], json("how many became due")),
      },
      "/dead-letters": {
        get: op("outbox entries given up, newest first", [
          query("peer", "peer domain"),
          query("limit", "1..500 (default 100)"),
        ], json("entries", itemsOf("OutboxEntry"))),
      },
      "/dead-letters/{id}/replay": {
        post: op(
          "replay a dead entry (pending again, due now)",
          [path("id", "outbox entry id")],
          json("the entry"),
        ),
      },
      "/groups": {
        get: op(
          "list groups",
          [query("search", "group id prefix"), ...page],
          json("groups", pageOf("Group")),
        ),
      },
      "/groups/{id}": {
        get: op(
          "a group with its roster and membership history",
          [path("id", "group id")],
          json("the group"),
        ),
      },
      "/groups/{id}/members/{device}": {
        delete: op(
          "remove a member",
          [path("id", "group id"), path("device", "device id")],
          json("notes"),
        ),
      },
      "/audit": {
        get: op("the operator audit log, newest first", [
          query("actor", "exact actor"),
          query("action", "exact action"),
          query("target", "exact target"),
          ...page,
        ], json("entries", pageOf("AuditEntry"))),
      },
      "/nodes": {
        get: op("running nodes (from their heartbeats)", [], json("nodes", itemsOf("Node"))),
      },
    },
    components: {
      securitySchemes: { bearer: { type: "http", scheme: "bearer" } },
      responses: {
        Problem: {
          description: "an RFC 9457 problem",
          content: {
            "application/problem+json": {
              schema: {
                type: "object",
                required: ["type", "title", "status", "detail"],
                properties: {
                  type: str,
                  title: str,
                  status: { type: "integer" },
                  detail: str,
                  instance: str,
                },
              },
            },
          },
        },
      },
      schemas: {
        User: { type: "object", required: ["id", "handle"], properties: { id: str, handle: str } },
        Device: {
          type: "object",
          required: ["id", "userId", "status", "publicKey"],
          properties: { id: str, userId: str, status: str, publicKey: str },
        },
        KeyEvent: { type: "object", required: ["eventId", "deviceId", "kind"], properties: {} },
        Peer: {
          type: "object",
          required: ["domain", "status", "pending", "nextRetryAt"],
          properties: {},
        },
        OutboxEntry: {
          type: "object",
          required: ["id", "peerDomain", "lastError"],
          properties: {},
        },
        Group: { type: "object", required: ["id", "ownerDeviceId"], properties: {} },
        AuditEntry: {
          type: "object",
          required: ["id", "actor", "action", "target"],
          properties: {},
        },
        Node: {
          type: "object",
          required: [
            "nodeId",
            "address",
            "version",
            "uptimeSeconds",
            "connections",
            "framesPerSecond",
          ],
          properties: {},
        },
      },
    },
  };
}
