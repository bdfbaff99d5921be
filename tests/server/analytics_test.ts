/**
 * Frame analytics: the counting rules and their bounds (units), and the whole path in a
 * running server — frames sent live and to an offline device, its replay and ACK, an expired
 * envelope — into the hourly and daily rollups and the latency histogram, on PGlite + memory and
 * on Postgres (a scratch schema, COMMUCAT_TEST_PG_DSN).
 */
import assert from "node:assert/strict";
import { scratchTests } from "../helpers/scratch_storage.ts";
import { FrameType } from "../../protocol/frame.ts";
import {
  FrameAnalytics,
  LATENCY_BOUNDS_MS,
  latencySlot,
  MAX_KEYS,
  percentile,
} from "../../server/analytics.ts";
import { RelayMetrics } from "../../server/metrics.ts";
import type { Conversation } from "../../server/routing/conversations.ts";
import { type Storage } from "../../storage/mod.ts";
import type { AnalyticsRepo, FrameRollupDelta, LatencyDelta } from "../../storage/types.ts";
import { clientOptions, TestClient } from "./helpers/client.ts";
import { LogCapture, startServer, testConfig, uid, waitFor } from "./helpers/server.ts";

function memoryRepo(): AnalyticsRepo & {
  rows: FrameRollupDelta[];
  lat: LatencyDelta[];
  fail: number;
} {
  const repo = {
    rows: [] as FrameRollupDelta[],
    lat: [] as LatencyDelta[],
    fail: 0,
    add(rows: FrameRollupDelta[], lat: LatencyDelta[]) {
      if (repo.fail > 0) {
        repo.fail--;
        return Promise.reject(new Error("injected: database down"));
      }
      repo.rows.push(...rows);
      repo.lat.push(...lat);
      return Promise.resolve();
    },
    rollups: () => Promise.resolve([]),
    latency: () => Promise.resolve([]),
    purge: () => Promise.resolve(0),
  };
  return repo;
}

const route = (members: string[], groupId: string | null = null): Conversation => ({
  id: "d:test",
  members: new Set(members),
  relay: true,
  groupId,
  users: new Set(),
  entries: members,
  expandedAt: 0,
});

Deno.test("latency slots and percentiles", () => {
  assert.equal(latencySlot(0), 0);
  assert.equal(latencySlot(5), 0);
  assert.equal(latencySlot(6), 1);
  assert.equal(latencySlot(10 ** 12), LATENCY_BOUNDS_MS.length);
  const slots = new Map([[0, 50], [3, 40], [6, 10]]);
  assert.equal(percentile(slots, 0.5), LATENCY_BOUNDS_MS[0]);
  assert.equal(percentile(slots, 0.9), LATENCY_BOUNDS_MS[3]);
  assert.equal(percentile(slots, 0.99), LATENCY_BOUNDS_MS[6]);
  assert.equal(percentile(new Map(), 0.5), null);
});

Deno.test("counting rules: sent once, copies per peer domain, live vs queued, ACK latency", async () => {
  const repo = memoryRepo();
  let now = Date.UTC(2026, 0, 1, 10, 30);
  const a = new FrameAnalytics(repo, "here.example", new RelayMetrics("n"), () => now);
  a.routed(FrameType.Msg, route(["alice", "bob", "carol", "dave@there.example"], "g1"), 3, 1);
  a.routed(FrameType.Typing, route(["alice", "bob"]), 1, 1);
  a.acknowledged([
    { enqueuedAt: new Date(now - 3), attempts: 1 },
    { enqueuedAt: new Date(now - 2000), attempts: 2 },
  ]);
  a.expired(4);
  await a.flush();
  const by = (t: string, c: string, p: string) =>
    repo.rows.find((r) => r.frameType === t && r.conversation === c && r.peerDomain === p);
  assert.deepEqual(
    { ...by("MSG", "group", ""), bucket: undefined },
    {
      bucket: undefined,
      frameType: "MSG",
      conversation: "group",
      peerDomain: "",
      sent: 1,
      delivered: 1,
      queued: 1,
      expired: 0,
      redelivered: 0,
    },
  );
  assert.equal(by("MSG", "group", "there.example")!.sent, 1);
  assert.equal(by("TYPING", "direct", "")!.delivered, 1);
  const all = by("*", "*", "")!;
  assert.deepEqual([all.delivered, all.redelivered, all.expired], [2, 1, 4]);
  assert.equal(all.bucket.toISOString(), "2026-01-01T10:00:00.000Z");
  assert.deepEqual(repo.lat.map((l) => [l.slot, l.count]).sort(), [[0, 1], [latencySlot(2000), 1]]);

  // A failed flush keeps the counts for the next one.
  now += 3_600_000;
  a.expired(1);
  repo.fail = 1;
  await assert.rejects(a.flush(), /database down/);
  a.expired(2);
  repo.rows = [];
  await a.flush();
  assert.equal(repo.rows.find((r) => r.frameType === "*")!.expired, 3);
});

Deno.test("at most MAX_KEYS rows are held between flushes", () => {
  const a = new FrameAnalytics(memoryRepo(), "here.example", new RelayMetrics("n"));
  for (let i = 0; i < MAX_KEYS + 5; i++) {
    a.routed(FrameType.Msg, route(["a", `b@d${i}.example`]), 1, 0);
  }
  assert.ok(a.dropped >= 5);
});

async function endToEnd(storage: Storage) {
  const config = testConfig({ limits: { relayTtl: 3600 } });
  const logs = new LogCapture().start();
  const server = await startServer(config, { storage });
  const clients: TestClient[] = [];
  try {
    const aliceId = uid("an-alice");
    const bobId = uid("an-bob");
    const alice = await TestClient.connect(clientOptions(server, config, aliceId));
    clients.push(alice);
    assert.equal((await alice.join(31, [bobId])).type, FrameType.Ack);
    for (let i = 0; i < 3; i++) {
      assert.equal((await alice.reply(alice.msg(31, `q${i}`))).type, FrameType.Ack);
    }
    const bob = await TestClient.connect(clientOptions(server, config, bobId));
    clients.push(bob);
    for (let i = 0; i < 3; i++) await bob.nextOfType(FrameType.Msg);
    await waitFor(async () => (await storage.relay.depth(bobId)).depth === 0);
    assert.equal((await bob.join(31, [aliceId])).type, FrameType.Ack);
    for (let i = 0; i < 2; i++) {
      assert.equal((await alice.reply(alice.msg(31, `live${i}`))).type, FrameType.Ack);
      await bob.nextOfType(FrameType.Msg);
    }
    // An envelope nobody collects, expired and purged.
    await storage.relay.enqueue([{
      deviceId: uid("an-gone"),
      channelId: 1,
      payload: new Uint8Array(8),
    }], 1);
    await new Promise((r) => setTimeout(r, 1100));
    await server.node.purgeNow();
  } finally {
    for (const c of clients) await c.close();
    await server.stop(); // flushes the counts
    logs.stop();
  }
  const from = new Date(Date.now() - 2 * 3_600_000);
  const to = new Date(Date.now() + 3_600_000);
  const hours = await storage.analytics.rollups({ granularity: "hour", from, to });
  const msg = hours.filter((r) => r.frameType === "MSG" && r.conversation === "direct");
  assert.equal(msg.reduce((n, r) => n + r.sent, 0), 5);
  assert.equal(msg.reduce((n, r) => n + r.queued, 0), 3);
  assert.equal(msg.reduce((n, r) => n + r.delivered, 0), 2, "live copies");
  const acked = hours.filter((r) => r.frameType === "*");
  assert.equal(acked.reduce((n, r) => n + r.delivered, 0), 3, "queued copies acknowledged");
  assert.equal(acked.reduce((n, r) => n + r.expired, 0), 1);
  const days = await storage.analytics.rollups({ granularity: "day", from, to, by: [] });
  assert.ok(days.length >= 1 && days.every((d) => d.frameType === "*" && d.peerDomain === "*"));
  assert.equal(days.reduce((n, d) => n + d.sent, 0), hours.reduce((n, r) => n + r.sent, 0));
  const lat = await storage.analytics.latency({ granularity: "day", from, to });
  const total = lat.reduce((n, d) => n + [...d.slots.values()].reduce((a, b) => a + b, 0), 0);
  assert.equal(total, 3);
  assert.ok(percentile(lat[0].slots, 0.5)! > 0);
}

scratchTests(
  {
    pglite: "frame analytics end to end (PGlite + memory)",
    postgres: "frame analytics end to end (Postgres)",
  },
  ({ storage }) => endToEnd(storage),
  { sanitizeResources: false, sanitizeOps: false },
);
