/**
 * The admin HTTP API on the console app, against real storage: every route, the bearer token
 * and its failure counting, no cookies, RFC 9457 errors, and the OpenAPI document checked
 * against the routes the API serves.
 */
import assert from "node:assert/strict";
import { buildConsole } from "../../console/server.ts";
import { createAdminApi } from "../../admin/api.ts";
import { openApiDocument } from "../../admin/openapi.ts";
import { SignInLimiter } from "../../console/middleware/rate_limit.ts";
import { tokenMatches } from "../../console/auth.ts";
import { ADMIN_TOKEN, testConfig } from "../console/helpers.ts";
import { realStorage } from "./storage.ts";

const real = await realStorage();
const storage = real.storage;
const clock = { now: Date.parse("2026-01-01T00:00:00Z") };
const ledgered: { kind: string; metadata: Record<string, unknown> }[] = [];
const consoleApp = buildConsole({
  config: testConfig(),
  storage,
  nodeId: "node-test",
  now: () => clock.now,
  // Records what the API's rotate-key writes to the server's ledger.
  ledger: {
    record: (kind, metadata) => {
      ledgered.push({ kind, metadata });
      return Promise.resolve({} as never);
    },
  },
});
const run = crypto.randomUUID().slice(0, 6);
const key = (n: number) => new Uint8Array(32).fill(n);
const hexKey = (n: number) => n.toString(16).padStart(2, "0").repeat(32);

async function call(
  method: string,
  path: string,
  options: { token?: string | null; body?: unknown; address?: string; headers?: HeadersInit } = {},
) {
  const headers = new Headers(options.headers);
  const token = options.token === undefined ? ADMIN_TOKEN : options.token;
  if (token !== null) headers.set("authorization", `Bearer ${token}`);
  let body: string | undefined;
  if (options.body !== undefined) {
    headers.set("content-type", "application/json");
    body = typeof options.body === "string" ? options.body : JSON.stringify(options.body);
  }
  const res = await consoleApp.app.fetch(
    new Request(`http://console.test/api/v1${path}`, { method, headers, body }),
    { remoteAddr: options.address ?? "127.0.0.1" },
  );
  const type = res.headers.get("content-type") ?? "";
  const data = type.includes("json") ? await res.json() : await res.text();
  return { status: res.status, headers: res.headers, type, data };
}

function assertProblem(r: Awaited<ReturnType<typeof call>>, status: number, detail?: RegExp) {
  assert.equal(r.status, status, JSON.stringify(r.data));
  assert.match(r.type, /^application\/problem\+json/);
  assert.equal(r.data.type, "about:blank");
  assert.equal(r.data.status, status);
  assert.equal(typeof r.data.title, "string");
  if (detail) assert.match(r.data.detail, detail);
}

// Seed: a user with a pending device and an active one, a group, a peer with outbox entries.
const alice = await storage.users.create({ handle: `alice-${run}` });
const pending = `pending-${run}`;
const active = `active-${run}`;
const other = `other-${run}`;
await storage.devices.register(
  { id: pending, userId: alice.id, publicKey: key(1), status: "pending" },
  "handshake",
);
await storage.devices.register(
  { id: active, userId: alice.id, publicKey: key(2), status: "active" },
  "handshake",
);
await storage.devices.register(
  { id: other, userId: alice.id, publicKey: key(3), status: "active" },
  "handshake",
);
const group = await storage.groups.create(
  { id: `grp-${run}`, ownerDeviceId: active, relay: true },
  "test",
);
await storage.groups.addMember(group.id, other, "member", "test");
const peerDomain = `peer-${run}.test`;
await storage.peers.upsert(
  { domain: peerDomain, endpoint: `https://${peerDomain}/federation`, publicKey: key(9) },
  "test",
);
const waiting = await storage.outbox.enqueue({
  eventId: `ev-wait-${run}`,
  peerDomain,
  endpoint: `https://${peerDomain}/federation`,
  body: { kind: "test" },
});
// Six failed attempts: the entry waits 2^6 = 64 s, so it is still backing off when the peers
// step asks for "retry now", however slowly the steps before it run.
for (let i = 0; i < 6; i++) await storage.outbox.markFailed(waiting.id, "connection refused");
const dead = await storage.outbox.enqueue({
  eventId: `ev-dead-${run}`,
  peerDomain,
  endpoint: `https://${peerDomain}/federation`,
  body: { kind: "dead" },
});
await storage.outbox.markDead(dead.id, "peer rejected the event");
await storage.ephemeral.setNodeHeartbeat({
  nodeId: "node-test",
  address: "tcp://127.0.0.1:9443",
  version: "commucat test",
  startedAt: new Date(Date.now() - 60_000).toISOString(),
  connections: 3,
  framesPerSecond: 120,
  at: new Date().toISOString(),
}, 60);

const lastAudit = async (action: string) =>
  (await storage.audit.list({ action, limit: 1 })).items[0];

Deno.test({
  name: "admin API",
  sanitizeResources: false, // the embedded database keeps a WASM file handle
  async fn(t) {
    await t.step("the OpenAPI document lists exactly the API's routes", async () => {
      const r = await call("GET", "/openapi.json", { token: null });
      assert.equal(r.status, 200);
      assert.equal(r.data.openapi, "3.1.0");
      const api = createAdminApi({
        storage,
        token: () => "x",
        tokenMatches,
        limiter: new SignInLimiter(Date.now),
        staticPeerDomains: () => [],
        now: Date.now,
      });
      const served = new Set(
        api.routes.filter((r) => r.method !== "ALL").map((r) =>
          `${r.method} ${r.path.replace(/:([a-z]+)/g, "{$1}")}`
        ),
      );
      const documented = new Set<string>();
      for (const [path, ops] of Object.entries(r.data.paths as Record<string, object>)) {
        for (const method of Object.keys(ops)) documented.add(`${method.toUpperCase()} ${path}`);
      }
      assert.deepEqual([...documented].sort(), [...served].sort());
      assert.deepEqual(openApiDocument(), r.data);
    });

    await t.step("no token, a wrong token, a malformed header: RFC 9457 problems", async () => {
      const none = await call("GET", "/devices", { token: null });
      assertProblem(none, 401, /Authorization: Bearer/);
      assert.match(none.headers.get("www-authenticate") ?? "", /^Bearer realm="commucat-admin"/);
      assertProblem(await call("GET", "/devices", { token: "nope" }), 401, /not the admin token/);
      const malformed = await call("GET", "/devices", {
        token: null,
        headers: { authorization: "Basic abc" },
      });
      assertProblem(malformed, 400);
    });

    await t.step("a console session cookie does not authenticate the API", async () => {
      const r = await call("GET", "/devices", {
        token: null,
        headers: { cookie: "commucat_session=anything" },
      });
      assertProblem(r, 401);
    });

    await t.step("wrong tokens are counted per address; the right one always works", async () => {
      const address = "198.51.100.7";
      for (let i = 0; i < 4; i++) {
        assertProblem(await call("GET", "/nodes", { token: `wrong-${i}`, address }), 401);
      }
      const limited = await call("GET", "/nodes", { token: "wrong-again", address });
      assertProblem(limited, 429, /too many wrong tokens/);
      assert.equal(limited.headers.get("retry-after"), "1");
      const right = await call("GET", "/nodes", { address });
      assert.equal(right.status, 200, "the right token works during the wait");
      // A success does not clear the failures (like the sign-in page): wrong ones still wait.
      assertProblem(await call("GET", "/nodes", { token: "wrong", address }), 429);
      // Another address is not affected.
      assert.equal((await call("GET", "/nodes", { address: "198.51.100.8" })).status, 200);
    });

    await t.step("secure headers, no caching, no cookies set", async () => {
      const r = await call("GET", "/users");
      assert.equal(r.headers.get("x-content-type-options"), "nosniff");
      assert.equal(r.headers.get("cache-control"), "no-store");
      assert.equal(r.headers.get("set-cookie"), null);
    });

    await t.step("users: list and register (audited)", async () => {
      const list = await call("GET", `/users?search=alice-${run}`);
      assert.equal(list.status, 200);
      assert.deepEqual(list.data.items.map((u: { id: string }) => u.id), [alice.id]);
      const made = await call("POST", "/users", {
        body: { handle: `bob-${run}`, displayName: "Bob" },
        headers: { "commucat-actor": "cli:ops" },
      });
      assert.equal(made.status, 201);
      assert.equal(made.data.handle, `bob-${run}`);
      const audit = await lastAudit("user.register");
      assert.equal(audit.target, `user:${made.data.id}`);
      assert.equal(audit.actor, "api:cli:ops");
      assertProblem(await call("POST", "/users", { body: { handle: `bob-${run}` } }), 409);
      assertProblem(await call("POST", "/users", { body: {} }), 400, /handle is required/);
    });

    await t.step("device limit: read, set (audited), restore the default, bad input", async () => {
      const path = `/users/${encodeURIComponent(alice.handle)}/device-limit`;
      const before = await call("GET", path);
      assert.equal(before.status, 200, JSON.stringify(before.data));
      assert.deepEqual(before.data, {
        userId: alice.id,
        handle: alice.handle,
        maxDevices: null,
        devices: await storage.pairing.countDevices(alice.id),
      });
      const set = await call("PUT", path, { body: { maxDevices: 12 } });
      assert.equal(set.status, 200, JSON.stringify(set.data));
      assert.equal(set.data.maxDevices, 12);
      assert.equal(await storage.pairing.deviceLimit(alice.id), 12);
      const audit = await lastAudit("user.device-limit");
      assert.equal(audit.target, `user:${alice.id}`);
      const back = await call("PUT", `/users/${alice.id}/device-limit`, {
        body: { maxDevices: null },
      });
      assert.equal(back.data.maxDevices, null);
      assertProblem(await call("PUT", path, { body: { maxDevices: "12" } }), 400, /integer/);
      assertProblem(await call("PUT", path, { body: { maxDevices: 0 } }), 400);
      assertProblem(await call("PUT", path, { body: { maxDevices: 10_001 } }), 400);
      assertProblem(await call("GET", `/users/nobody-${run}/device-limit`), 404);
      assert.equal(await storage.pairing.deviceLimit(alice.id), null, "nothing changed");
    });

    await t.step("devices: list, awaiting, one, delivery view", async () => {
      const awaiting = await call("GET", `/devices?awaiting=true&search=${pending}`);
      assert.deepEqual(awaiting.data.items.map((d: { id: string }) => d.id), [pending]);
      assert.equal(awaiting.data.items[0].publicKey, hexKey(1));
      const byUser = await call("GET", `/devices?user=${alice.id}&status=active&limit=1`);
      assert.equal(byUser.data.items.length, 1);
      assert.equal(typeof byUser.data.nextCursor, "string");
      const one = await call("GET", `/devices/${active}`);
      assert.equal(one.data.status, "active");
      const queue = await call("GET", `/devices/${active}/queue`);
      assert.deepEqual(
        { ...queue.data, oldestAt: null },
        {
          deviceId: active,
          depth: 0,
          oldestAt: null,
          inFlight: 0,
          redelivered: 0,
          online: false,
          nodeId: null,
        },
      );
      assertProblem(await call("GET", `/devices/nobody-${run}`), 404, /not found/);
      assertProblem(await call("GET", "/devices?status=lost"), 400, /status must be one of/);
      assertProblem(await call("GET", "/devices?limit=x"), 400, /limit/);
    });

    await t.step("approve, reject, revoke: changed and audited together", async () => {
      const approved = await call("POST", `/devices/${pending}/approve`);
      assert.equal(approved.status, 200);
      assert.equal(approved.data.device.status, "active");
      assert.equal(approved.data.event.kind, "approved");
      const audit = await lastAudit("device.approve");
      assert.equal(audit.target, `device:${pending}`);
      assert.deepEqual(audit.before, {
        status: "pending",
        publicKey: hexKey(1),
        pendingPublicKey: null,
      });
      assertProblem(await call("POST", `/devices/${pending}/approve`), 409, /cannot go from/);
      assertProblem(await call("POST", `/devices/${active}/reject`), 409);
      const revoked = await call("POST", `/devices/${pending}/revoke`);
      assert.equal(revoked.data.device.status, "revoked");
      assert.equal((await lastAudit("device.revoke")).target, `device:${pending}`);
      assert.equal(await storage.ephemeral.getInterrupt(pending), "device revoked by operator");
    });

    await t.step(
      "rotate-key: new device, then re-key; the private key is returned once",
      async () => {
        const made = await call("POST", "/rotate-key", {
          body: { handle: alice.handle, deviceId: `rot-${run}` },
        });
        assert.equal(made.status, 201);
        assert.equal(made.data.registered, true);
        assert.match(made.data.privateKey, /^[0-9a-f]{64}$/);
        const again = await call("POST", "/rotate-key", {
          body: { userId: alice.id, deviceId: `rot-${run}` },
        });
        assert.equal(again.data.registered, false);
        assert.notEqual(again.data.publicKey, made.data.publicKey);
        assert.equal((await lastAudit("device.rotate-key")).target, `device:rot-${run}`);
        // Both changes reached the server's ledger, like the CLI's rotate-keys.
        assert.deepEqual(ledgered.map((r) => [r.kind, r.metadata.device_id, r.metadata.kind]), [
          ["device_key_event", `rot-${run}`, "registered"],
          ["device_key_event", `rot-${run}`, "rotated"],
        ]);
        assertProblem(await call("POST", "/rotate-key", { body: {} }), 400);
      },
    );

    await t.step("key events: JSON and CSV with the one export format", async () => {
      const json = await call("GET", `/key-events?device=${pending}`);
      assert.deepEqual(json.data.items.map((e: { kind: string }) => e.kind), [
        "pending",
        "approved",
        "revoked",
      ]);
      const csv = await call("GET", `/key-events?device=${pending}&format=csv`);
      assert.match(csv.type, /^text\/csv/);
      const lines = (csv.data as string).split("\r\n");
      assert.equal(lines[0], "event_id,device_id,kind,public_key,actor,recorded_at");
      assert.equal(lines.length, 5); // header, three events, and the empty string after CRLF
      assert.match(lines[1], new RegExp(`^"[^"]+","${pending}","pending","${hexKey(1)}"`));
      assertProblem(await call("GET", "/key-events?from=yesterday"), 400, /RFC 3339/);
    });

    await t.step(
      "peers: list with backoff, add, status, retry now, dead letters, replay",
      async () => {
        const list = await call("GET", "/peers");
        const p = list.data.items.find((x: { domain: string }) => x.domain === peerDomain);
        assert.equal(p.pending, 1);
        assert.equal(p.dead, 1);
        assert.equal(p.attempts, 6);
        assert.ok(Date.parse(p.nextRetryAt) > Date.now() - 1000);
        const retried = await call("POST", `/peers/${peerDomain}/retry`);
        assert.deepEqual(retried.data, { domain: peerDomain, dueNow: 1, notes: [] });
        assert.equal((await lastAudit("peer.retry-now")).target, `peer:${peerDomain}`);
        const deadList = await call("GET", `/dead-letters?peer=${peerDomain}`);
        assert.deepEqual(deadList.data.items.map((e: { id: string }) => e.id), [dead.id]);
        assert.equal(deadList.data.items[0].lastError, "peer rejected the event");
        assert.deepEqual(deadList.data.items[0].body, { kind: "dead" });
        const replayed = await call("POST", `/dead-letters/${dead.id}/replay`);
        assert.equal(replayed.data.entry.deadAt, null);
        assert.equal(replayed.data.entry.attempts, 0);
        assertProblem(await call("POST", `/dead-letters/${dead.id}/replay`), 409, /not dead/);
        assert.equal((await lastAudit("outbox.replay")).target, `peer:${peerDomain}`);

        const added = await call("POST", "/peers", {
          body: {
            domain: `new-${run}.test`,
            endpoint: `https://new-${run}.test/federation`,
            publicKey: hexKey(7),
          },
        });
        assert.equal(added.status, 200, JSON.stringify(added.data));
        assert.equal(added.data.peer.status, "pending");
        const blocked = await call("POST", `/peers/new-${run}.test/status`, {
          body: { status: "blocked" },
        });
        assert.equal(blocked.data.peer.status, "blocked");
        assertProblem(
          await call("POST", `/peers/new-${run}.test/status`, { body: { status: "gone" } }),
          400,
        );
        assertProblem(
          await call("POST", "/peers", {
            body: { domain: "x.test", endpoint: "https://x", publicKey: "zz" },
          }),
          400,
          /64 hex/,
        );
        assertProblem(await call("POST", `/peers/nowhere-${run}.test/retry`), 404);
      },
    );

    await t.step("groups: list, one, remove a member (audited)", async () => {
      const list = await call("GET", `/groups?search=grp-${run}`);
      assert.deepEqual(list.data.items.map((g: { id: string }) => g.id), [group.id]);
      const one = await call("GET", `/groups/${group.id}`);
      assert.deepEqual(
        one.data.roster.map((m: { deviceId: string }) => m.deviceId).sort(),
        [
          active,
          other,
        ].sort(),
      );
      const removed = await call("DELETE", `/groups/${group.id}/members/${other}`);
      assert.equal(removed.status, 200);
      const audit = await lastAudit("group.remove-member");
      assert.equal(audit.target, `group:${group.id}`);
      assert.deepEqual(audit.before, { deviceId: other, role: "member" });
      assertProblem(await call("DELETE", `/groups/${group.id}/members/${other}`), 404);
      assertProblem(await call("DELETE", `/groups/${group.id}/members/${active}`), 409, /owns/);
    });

    await t.step("audit log and nodes", async () => {
      const audit = await call("GET", "/audit?action=device.approve&limit=5");
      assert.ok(audit.data.items.length >= 1);
      assert.equal(audit.data.items[0].action, "device.approve");
      const nodes = await call("GET", "/nodes");
      const node = nodes.data.items.find((n: { nodeId: string }) => n.nodeId === "node-test");
      assert.equal(node.connections, 3);
      assert.equal(node.framesPerSecond, 120);
      assert.ok(node.uptimeSeconds >= 59);
    });

    await t.step("bad bodies and unknown routes", async () => {
      assertProblem(await call("POST", "/users", { body: "{not json" }), 400, /not valid JSON/);
      assertProblem(await call("POST", "/users", { body: "[1]" }), 400, /JSON object/);
      const noType = await consoleApp.app.fetch(
        new Request("http://console.test/api/v1/users", {
          method: "POST",
          headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
          body: "handle=x",
        }),
        { remoteAddr: "127.0.0.1" },
      );
      assert.equal(noType.status, 415);
      await noType.body?.cancel();
      const big = await call("POST", "/users", {
        body: JSON.stringify({ handle: "x".repeat(70_000) }),
      });
      assertProblem(big, 413);
      assertProblem(await call("GET", "/nothing-here"), 404, /no API route GET/);
    });
  },
});

Deno.test({
  name: "admin API: cleanup",
  sanitizeResources: false,
  async fn() {
    consoleApp.close();
    await real.close();
  },
});
