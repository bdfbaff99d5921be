/**
 * The ephemeral store: the contract suite against memory (always) and Redis (when
 * COMMUCAT_TEST_REDIS_URL is set), plus what is specific to each implementation.
 */
import assert from "node:assert/strict";
import { Redis } from "ioredis";
import { RedisFailure } from "../../storage/errors.ts";
import {
  MemoryEphemeralStore,
  MemoryHub,
  openEphemeral,
  RedisEphemeralStore,
} from "../../storage/ephemeral/mod.ts";
import { registerEphemeralContract, waitFor } from "./ephemeral_contract.ts";

const REDIS_URL = Deno.env.get("COMMUCAT_TEST_REDIS_URL") ?? null;
/** Unique per run, so concurrent runs on one Redis never see each other's keys or channels. */
const RUN = `commucat-test:${crypto.randomUUID()}:`;
let harnesses = 0;

registerEphemeralContract("memory", () => {
  const hub = new MemoryHub();
  return { open: (o) => openEphemeral(null, { hub, ...o }) };
});

registerEphemeralContract("redis", () => {
  const keyPrefix = `${RUN}${harnesses++}:`;
  return {
    open: (o) => openEphemeral(REDIS_URL!, { keyPrefix, warn: o?.warn ?? (() => {}) }),
  };
}, { ignore: REDIS_URL === null });

/** A plain ioredis client for looking behind the store; closed with `end`. */
async function rawClient(url: string): Promise<{ r: Redis; end: () => Promise<void> }> {
  const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  r.on("error", () => {});
  await r.connect();
  return {
    r,
    end: async () => {
      const ended = new Promise((resolve) => r.once("end", resolve));
      await r.quit();
      await ended;
    },
  };
}

Deno.test("memory: openEphemeral(null) gives independent private stores", async () => {
  const a = await openEphemeral(null);
  const b = await openEphemeral("");
  assert.equal(a.kind, "memory");
  await a.setRoute("d", { nodeId: "n", sessionId: "s" }, 60);
  assert.equal(await b.getRoute("d"), null);
  await Promise.all([a.close(), b.close()]);
});

Deno.test("memory: expired entries are swept, not kept", async () => {
  const hub = new MemoryHub();
  const s = new MemoryEphemeralStore({ hub });
  await s.setInterrupt("d1", "kick", 0.001); // rounds up to 1 s
  await s.setInterrupt("d2", "kick", 60);
  assert.equal(hub.size(), 2);
  assert.equal(hub.sweep(Date.now() + 2000), 1);
  assert.equal(hub.size(), 1);
  await s.close();
});

Deno.test("redis: a malformed URL is refused with RedisFailure naming the problem", async () => {
  await assert.rejects(openEphemeral("http://127.0.0.1:6379"), /redis failure: .*scheme "http:"/);
  await assert.rejects(openEphemeral("redis://[::1"), /redis failure: .*not a valid URL/);
  await assert.rejects(openEphemeral("redis://127.0.0.1:6379/x"), /database "x"/);
});

Deno.test("redis: unreachable Redis fails every call promptly with RedisFailure", async () => {
  const warnings: string[] = [];
  const s = await openEphemeral("redis://:topsecret@127.0.0.1:1/3", {
    warn: (w) => warnings.push(w),
  });
  assert.equal(s.kind, "redis");
  const calls: [string, () => Promise<unknown>][] = [
    ["ping", () => s.ping()],
    ["setPresence", () =>
      s.setPresence("d", {
        entity: "d",
        state: "online",
        expires_at: new Date().toISOString(),
        user: { id: "u", handle: "h", display_name: null, avatar_url: null },
      }, 10)],
    ["getPresence", () => s.getPresence("d")],
    ["setRoute", () => s.setRoute("d", { nodeId: "n", sessionId: "s" }, 10)],
    ["getRoute", () => s.getRoute("d")],
    ["clearRoute", () => s.clearRoute("d", "s")],
    ["setInterrupt", () => s.setInterrupt("d", "kick", 10)],
    ["getInterrupt", () => s.getInterrupt("d")],
    ["publish", () => s.publish("c", Uint8Array.of(1))],
    ["publishControl", () => s.publishControl({ kind: "device-approved", deviceId: "d" })],
    ["subscribe", () => s.subscribe("c", () => {})],
    ["subscribeControl", () => s.subscribeControl(() => {})],
  ];
  for (const [name, call] of calls) {
    await assert.rejects(call(), (err: unknown) => {
      assert.ok(err instanceof RedisFailure, `${name}: ${err}`);
      assert.equal(err.title, "Redis Failure");
      assert.match(err.message, /^redis failure: .*127\.0\.0\.1:1/, name);
      assert.match(err.message, /ECONNREFUSED/, name);
      assert.doesNotMatch(err.message, /topsecret/, name);
      return true;
    });
  }
  assert.ok(warnings.length > 0);
  assert.ok(warnings.every((w) => !w.includes("topsecret")));
  await s.close();
});

Deno.test({
  name: "redis: keys use the guide's names, JSON values and EX TTLs",
  ignore: REDIS_URL === null,
  fn: async () => {
    const device = `ephemeral-test-${crypto.randomUUID()}`;
    const s = await openEphemeral(REDIS_URL!); // no prefix: the production key names
    const { r, end } = await rawClient(REDIS_URL!);
    try {
      const p = {
        entity: device,
        state: "online" as const,
        expires_at: "2030-01-01T00:00:00Z",
        user: { id: "u", handle: "h", display_name: null, avatar_url: null },
      };
      await s.setPresence(device, p, 30);
      await s.setRoute(device, { nodeId: "node-1", sessionId: "s-1" }, 40);
      await s.setInterrupt(device, "revoked", 5);
      assert.deepEqual(JSON.parse((await r.get(`presence:${device}`))!), p);
      assert.deepEqual(JSON.parse((await r.get(`route:${device}`))!), {
        nodeId: "node-1",
        sessionId: "s-1",
      });
      assert.equal(await r.get(`interrupt:${device}`), "revoked");
      const ttls = [
        await r.ttl(`presence:${device}`),
        await r.ttl(`route:${device}`),
        await r.ttl(`interrupt:${device}`),
      ];
      assert.ok(ttls[0] > 25 && ttls[0] <= 30, `presence ttl ${ttls[0]}`);
      assert.ok(ttls[1] > 35 && ttls[1] <= 40, `route ttl ${ttls[1]}`);
      assert.ok(ttls[2] > 0 && ttls[2] <= 5, `interrupt ttl ${ttls[2]}`);
      // A corrupt value reads as absent rather than throwing.
      await r.set(`route:${device}`, "{not json", "EX", 10);
      assert.equal(await s.getRoute(device), null);
      await s.clearRoute(device, "s-1"); // the script tolerates it too
    } finally {
      await r.del(`presence:${device}`, `route:${device}`, `interrupt:${device}`);
      await end();
      await s.close();
    }
  },
});

Deno.test({
  name: "redis: a database index Redis refuses fails every call instead of using database 0",
  ignore: REDIS_URL === null,
  fn: async () => {
    const url = new URL(REDIS_URL!);
    url.pathname = "/9999";
    const s = await openEphemeral(url.href, { warn: () => {} });
    await assert.rejects(s.ping(), /redis failure: ping: .*\/9999: .*DB index is out of range/);
    await assert.rejects(s.setRoute("d", { nodeId: "n", sessionId: "s" }, 5), RedisFailure);
    await assert.rejects(s.subscribe("c", () => {}), /DB index/);
    await s.close();
  },
});

Deno.test({
  name: "redis: connections killed by the server come back; subscriptions are restored",
  ignore: REDIS_URL === null,
  fn: async () => {
    const name = `commucat-test-${crypto.randomUUID().slice(0, 8)}`;
    const keyPrefix = `${RUN}reconnect:`;
    const warnings: string[] = [];
    const s = await RedisEphemeralStore.open(REDIS_URL!, {
      keyPrefix,
      connectionName: name,
      warn: (w) => warnings.push(w),
    });
    const { r, end } = await rawClient(REDIS_URL!);
    try {
      const got: number[] = [];
      const off = await s.subscribe("resub", (m) => got.push(m[0]));
      await s.publish("resub", Uint8Array.of(1));
      await waitFor(() => got.length === 1, "the first message");

      // Kill both of this store's connections from the server side.
      const list = String(await r.call("CLIENT", "LIST"));
      const ids = list.split("\n").filter((l) => l.includes(`name=${name}:`))
        .map((l) => /id=(\d+)/.exec(l)![1]);
      assert.equal(ids.length, 2, list);
      for (const id of ids) await r.call("CLIENT", "KILL", "ID", id);

      // Calls may fail while reconnecting (that is the contract), then succeed again.
      await waitFor(() => warnings.some((w) => w.includes("connected again")), "reconnection");
      let delivered = false;
      const deadline = Date.now() + 5000;
      let n = 2;
      while (!delivered && Date.now() < deadline) {
        try {
          await s.publish("resub", Uint8Array.of(n++));
        } catch (err) {
          assert.ok(err instanceof RedisFailure, String(err));
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
        delivered = got.length > 1;
      }
      assert.ok(delivered, "a message after the reconnection");
      await off();
    } finally {
      await end();
      await s.close();
    }
  },
});

Deno.test({
  name: "redis: stores on different databases of one server never hear each other's bus",
  ignore: REDIS_URL === null,
  fn: async () => {
    // Pub/sub is global to a Redis server; keys are per database. Same key prefix on purpose.
    const keyPrefix = `${RUN}databases:`;
    const here = new URL(REDIS_URL!);
    const db = Number(here.pathname.replace(/^\//, "") || "0");
    const there = new URL(REDIS_URL!);
    there.pathname = `/${db === 15 ? 14 : db + 1}`;
    const a = await RedisEphemeralStore.open(here.href, { keyPrefix, warn: () => {} });
    const a2 = await RedisEphemeralStore.open(here.href, { keyPrefix, warn: () => {} });
    const b = await RedisEphemeralStore.open(there.href, { keyPrefix, warn: () => {} });
    try {
      const onA2: number[] = [];
      const onB: number[] = [];
      const offA2 = await a2.subscribe("bus", (m) => onA2.push(m[0]));
      const offB = await b.subscribe("bus", (m) => onB.push(m[0]));
      const controlB: string[] = [];
      const offControl = await b.subscribeControl((e) => controlB.push(e.kind));
      await a.publish("bus", Uint8Array.of(1));
      await a.publishControl({ kind: "device-revoked", deviceId: "d" });
      await b.publish("bus", Uint8Array.of(2));
      await waitFor(() => onA2.length === 1 && onB.length === 1, "each database's own message");
      // A round trip on b's subscriber connection: anything from a would have arrived by now.
      await b.publish("bus", Uint8Array.of(3));
      await waitFor(() => onB.length === 2, "b's second message");
      assert.deepEqual(onA2, [1]);
      assert.deepEqual(onB, [2, 3]);
      assert.deepEqual(controlB, []);
      await Promise.all([offA2(), offB(), offControl()]);
    } finally {
      await Promise.all([a.close(), a2.close(), b.close()]);
    }
  },
});
