/**
 * Rate limits (server/limits.ts) against the memory store and real Redis, and the limits a
 * running node applies before authentication: handshakes and registrations per address,
 * connections in their handshake per address, the memory budget, the pre-handshake frame size.
 */
import assert from "node:assert/strict";
import { Redis } from "ioredis";
import { Limits } from "../../server/limits.ts";
import { Admission, hostOf } from "../../server/admission.ts";
import {
  LIMITED_STREAM,
  MemoryEphemeralStore,
  MemoryHub,
  openEphemeral,
} from "../../storage/ephemeral/mod.ts";
import type { EphemeralStore } from "../../storage/types.ts";
import { encodeControl, FrameType } from "../../protocol/frame.ts";
import { encodeVarint } from "../../protocol/varint.ts";
import {
  LogCapture,
  openTestStorage,
  startServer,
  storageKinds,
  testConfig,
  uid,
  waitFor,
} from "./helpers/server.ts";
import {
  clientOptions,
  HandshakeRefused,
  openRaw,
  readFrames,
  TestClient,
  withTimeout,
} from "./helpers/client.ts";

const REDIS_URL = Deno.env.get("COMMUCAT_TEST_REDIS_URL") ?? null;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type Backing = { name: string; open: () => Promise<EphemeralStore[]>; ignore: boolean };

const backings: Backing[] = [
  {
    name: "memory",
    open: () => {
      const hub = new MemoryHub();
      return Promise.resolve([
        new MemoryEphemeralStore({ hub }),
        new MemoryEphemeralStore({ hub }),
      ]);
    },
    ignore: false,
  },
  {
    name: "redis",
    open: async () => {
      const keyPrefix = `commucat-test:${crypto.randomUUID()}:`;
      return [
        await openEphemeral(REDIS_URL!, { keyPrefix, warn: () => {} }),
        await openEphemeral(REDIS_URL!, { keyPrefix, warn: () => {} }),
      ];
    },
    ignore: REDIS_URL === null,
  },
];

const LIMITS = {
  ...testConfig().limits,
  handshakesPerMinute: 3,
  messagesBurst: 5,
  messagesPerMinute: 60,
};

for (const backing of backings) {
  Deno.test({
    name: `limits (${backing.name}): shared between nodes, a burst then refusals with retry_after`,
    ignore: backing.ignore,
    fn: async () => {
      const [a, b] = await backing.open();
      try {
        const refused: string[] = [];
        const one = new Limits(a, LIMITS, { limited: (k) => refused.push(k) });
        const two = new Limits(b, LIMITS);
        assert.deepEqual(await one.consume("handshake", "192.0.2.1"), { ok: true });
        assert.deepEqual(await two.consume("handshake", "192.0.2.1"), { ok: true });
        assert.deepEqual(await one.consume("handshake", "192.0.2.1"), { ok: true });
        const no = await one.consume("handshake", "192.0.2.1");
        assert.equal(no.ok, false);
        // One handshake drains every 20 s: whole seconds, at least 1.
        assert.ok(!no.ok && no.retryAfter >= 1 && no.retryAfter <= 20, JSON.stringify(no));
        assert.equal((await two.check("handshake", "192.0.2.1")).ok, false);
        assert.deepEqual(await two.consume("handshake", "192.0.2.2"), { ok: true });
        assert.deepEqual(refused, ["handshake"]);
        assert.deepEqual(one.recent().map((e) => [e.kind, e.key, e.count]), [
          ["handshake", "192.0.2.1", 1],
        ]);
        // The sender→recipient bucket: 5 at once, then refused.
        for (let i = 0; i < 5; i++) assert.equal((await one.consume("message", "s>r")).ok, true);
        assert.equal((await two.consume("message", "s>r")).ok, false);
        assert.equal((await two.consume("message", "s>other")).ok, true);
      } finally {
        await a.close();
        await b.close();
      }
    },
  });
}

Deno.test("limits: a failing store falls back to this node's own buckets, warning once", async () => {
  const store = new MemoryEphemeralStore();
  await store.close(); // every call now fails like an unreachable Redis
  const warnings: string[] = [];
  const limits = new Limits(store, LIMITS, { warn: (m) => warnings.push(m) });
  for (let i = 0; i < 3; i++) assert.equal((await limits.consume("handshake", "x")).ok, true);
  assert.equal((await limits.consume("handshake", "x")).ok, false);
  assert.deepEqual(warnings, ["rate limits fall back to this node's buckets"]);
});

Deno.test("limits: local buckets refill at their rate", async () => {
  const limits = new Limits(new MemoryEphemeralStore(), { ...LIMITS, framesPerSecond: 20 });
  assert.equal(limits.consumeLocal("frames", "d", 20).ok, true);
  const no = limits.consumeLocal("frames", "d", 1);
  assert.deepEqual(no, { ok: false, retryAfter: 1 });
  await sleep(120); // 50 ms per frame: at least two drained
  assert.equal(limits.consumeLocal("frames", "d", 2).ok, true);
});

Deno.test("admission: caps per address and in total, memory budget, release once", () => {
  let rss = 10;
  const admission = new Admission(
    { ...LIMITS, unauthenticatedPerAddress: 2, unauthenticatedTotal: 3, memoryBudget: 100 },
    () => rss,
  );
  const a1 = admission.admit("a");
  const a2 = admission.admit("a");
  const a3 = admission.admit("a");
  assert.ok("release" in a1 && "release" in a2);
  assert.ok("refusal" in a3 && a3.refusal.status === 429 && a3.refusal.fatal);
  const b1 = admission.admit("b");
  const b2 = admission.admit("b");
  assert.ok("release" in b1);
  assert.ok("refusal" in b2 && b2.refusal.status === 503, "the total cap");
  a1.release();
  a1.release(); // twice is harmless
  assert.equal(admission.unauthenticated, 2);
  const a4 = admission.admit("a");
  assert.ok("release" in a4);
  assert.equal(hostOf("[::1]:9000"), "::1");
  assert.equal(hostOf("192.0.2.7:443"), "192.0.2.7");
  rss = 1000;
  const over = new Admission({ ...LIMITS, memoryBudget: 100 }, () => rss).admit("c");
  assert.ok("refusal" in over && over.refusal.status === 503);
  assert.match(over.refusal.detail, /memory budget/);
});

/** Runs on one Redis share the buckets of 127.0.0.1: start from empty ones. */
async function forgetBuckets(kind: string, name: string): Promise<void> {
  if (kind !== "real") return;
  const r = new Redis(REDIS_URL!, { lazyConnect: true, maxRetriesPerRequest: 1 });
  r.on("error", () => {});
  await r.connect();
  await r.del(`rate:${name}`);
  await r.quit();
}

for (const kind of storageKinds()) {
  Deno.test(`limits (${kind}): handshakes per address are refused with a non-fatal 429`, async () => {
    const logs = new LogCapture().start();
    const { storage, close } = await openTestStorage(kind);
    const config = testConfig({ limits: { handshakesPerMinute: 2 } });
    await forgetBuckets(kind, "handshake:2/30000:127.0.0.1");
    const server = await startServer(config, { storage });
    const clients: TestClient[] = [];
    try {
      const options = (id: string) => clientOptions(server, config, id);
      clients.push(await TestClient.connect(options(uid("hs"))));
      clients.push(await TestClient.connect(options(uid("hs"))));
      const refused = await TestClient.connect(options(uid("hs"))).then(
        () => assert.fail("the third handshake must be refused"),
        (err) => err,
      );
      assert.ok(refused instanceof HandshakeRefused, String(refused));
      assert.equal(refused.problem.status, 429);
      assert.equal(refused.problem.title, "Rate Limited");
      assert.equal(refused.problem.fatal, false);
      assert.ok(Number(refused.problem.retry_after) >= 1, JSON.stringify(refused.problem));
      assert.match(String(refused.problem.detail), /handshakes_per_minute/);
      const text = await server.metrics.exposition();
      assert.match(text, /commucat_rate_limited_total\{kind="handshake",node="[^"]+"\} 1/);
      // Established sessions are not affected.
      assert.equal(server.metricsSnapshot().connections, 2);
    } finally {
      for (const c of clients) await c.close();
      await server.stop();
      await close();
      logs.stop();
    }
  });

  Deno.test(`limits (${kind}): new devices per address; a known device still connects`, async () => {
    const logs = new LogCapture().start();
    const { storage, close } = await openTestStorage(kind);
    const config = testConfig({ limits: { registrationsPerHour: 2 } });
    await forgetBuckets(kind, "registration:2/1800000:127.0.0.1");
    const server = await startServer(config, { storage });
    try {
      const options = (id: string, keypair?: TestClient["keypair"]) => ({
        ...clientOptions(server, config, id),
        ...(keypair ? { keypair } : {}),
      });
      const first = await TestClient.connect(options(uid("reg")));
      const id = first.options.deviceId;
      const keypair = first.keypair;
      await first.close();
      await (await TestClient.connect(options(uid("reg")))).close();
      const refused = await TestClient.connect(options(uid("reg"))).then(
        () => assert.fail("a third new device must be refused"),
        (err) => err,
      );
      assert.ok(refused instanceof HandshakeRefused, String(refused));
      assert.equal(refused.problem.status, 429);
      assert.match(String(refused.problem.detail), /registrations_per_hour/);
      // The first device is known: it is not a registration.
      await (await TestClient.connect(options(id, keypair))).close();
    } finally {
      await server.stop();
      await close();
      logs.stop();
    }
  });
}

Deno.test("before the handshake: frames above the control limit and extra connections are refused", async () => {
  const logs = new LogCapture().start();
  const { storage, close } = await openTestStorage("embedded");
  const config = testConfig({ limits: { unauthenticatedPerAddress: 2 } });
  const server = await startServer(config, { storage });
  const raws: Awaited<ReturnType<typeof openRaw>>[] = [];
  try {
    // A frame_len of 1 MiB is refused as soon as its octets arrive, before any body.
    const big = await openRaw({ port: server.ports.tcp });
    await big.write(encodeVarint(1024 * 1024));
    const frames = await readFrames(big, 5000);
    big.close();
    assert.equal(frames.length, 1);
    const problem = frames[0].json as Record<string, unknown>;
    assert.equal(problem.title, "Frame Too Large");
    assert.equal(problem.fatal, true);

    // Two connections in their handshake from this address; the third is refused at once.
    for (let i = 0; i < 2; i++) raws.push(await openRaw({ port: server.ports.tcp }));
    await waitFor(() => server.node.ctx.admission.unauthenticated === 2);
    const third = await openRaw({ port: server.ports.tcp });
    const refused = await readFrames(third, 5000);
    third.close();
    const p = refused[0].json as Record<string, unknown>;
    assert.equal(p.title, "Too Many Connections");
    assert.equal(p.status, 429);
    assert.match(String(p.detail), /unauthenticated_per_address/);
    // A connection that finishes its handshake frees its place.
    raws.shift()!.close();
    await waitFor(() => server.node.ctx.admission.unauthenticated === 1);
    const c = await TestClient.connect(clientOptions(server, config, uid("adm")));
    assert.equal(server.node.ctx.admission.unauthenticated, 1);
    await c.close();
    const text = await server.metrics.exposition();
    assert.match(text, /commucat_connections_refused_total\{reason="unauthenticated_per_address"/);
  } finally {
    for (const r of raws) r.close();
    await server.stop();
    await close();
    logs.stop();
  }
});

Deno.test("a node over its memory budget refuses new connections with a clear 503", async () => {
  const logs = new LogCapture().start();
  const { storage, close } = await openTestStorage("embedded");
  const config = testConfig({ limits: { memoryBudget: 1024 } });
  const server = await startServer(config, { storage });
  try {
    const raw = await openRaw({ port: server.ports.tcp });
    await raw.write(encodeControl(FrameType.Hello, 0, 1, { pattern: "XK" }));
    const frames = await withTimeout(readFrames(raw, 5000), 6000, "refusal");
    raw.close();
    const p = frames[0].json as Record<string, unknown>;
    assert.equal(p.status, 503);
    assert.equal(p.title, "Server Overloaded");
    assert.match(String(p.detail), /memory_budget/);
  } finally {
    await server.stop();
    await close();
    logs.stop();
  }
});

Deno.test("frames per device and JOINs per device are refused with non-fatal 429s", async () => {
  const logs = new LogCapture().start();
  const { storage, close } = await openTestStorage("embedded");
  const config = testConfig({ limits: { framesPerSecond: 6, joinsPerMinute: 2 } });
  const server = await startServer(config, { storage });
  const clients: TestClient[] = [];
  try {
    const a = await TestClient.connect(clientOptions(server, config, uid("fr-a")));
    clients.push(a);
    const b = await TestClient.connect(clientOptions(server, config, uid("fr-b")));
    clients.push(b);
    // Two JOINs are allowed (each a frame too), the third JOIN is over joins_per_minute.
    assert.equal((await a.join(9, [b.options.deviceId])).type, FrameType.Ack);
    assert.equal((await a.join(9, [b.options.deviceId])).type, FrameType.Ack);
    const j = a.control(FrameType.Join, 9, { members: [b.options.deviceId] });
    const joinRefusal = await a.reply(j);
    assert.equal(joinRefusal.type, FrameType.Error);
    assert.equal((joinRefusal.json as Record<string, unknown>).status, 429);
    assert.match(String((joinRefusal.json as Record<string, unknown>).detail), /joins_per_minute/);
    // Three frames used of six: of ten messages sent at once, three pass and seven are refused
    // (one more passes for each sixth of a second the test took since the JOINs).
    const seqs = Array.from({ length: 10 }, (_, i) => a.msg(9, `m${i}`));
    const answers = await Promise.all(seqs.map((s) => a.reply(s)));
    const acked = answers.filter((f) => f.type === FrameType.Ack).length;
    const refused = answers.filter((f) => f.type === FrameType.Error);
    assert.ok(acked >= 3 && acked <= 5, `${acked} acknowledged: the burst left`);
    assert.equal(refused.length, 10 - acked);
    for (const r of refused) {
      const p = r.json as Record<string, unknown>;
      assert.equal(p.status, 429);
      assert.equal(p.fatal, false);
      assert.ok(Number(p.retry_after) >= 1);
      assert.match(String(p.detail), /frames_per_second/);
    }
    const text = await server.metrics.exposition();
    assert.match(
      text,
      new RegExp(`commucat_rate_limited_total\\{kind="frames",node="[^"]+"\\} ${10 - acked}\n`),
    );
    assert.match(text, /commucat_rate_limited_total\{kind="join",node="[^"]+"\} 1/);
    assert.deepEqual(
      server.node.ctx.limits.recent().map((e) => e.kind).sort(),
      ["frames", "join"],
    );
    // Noted for the console (one note per key, not one per refusal).
    await waitFor(async () =>
      (await storage.ephemeral.readEvents(LIMITED_STREAM, "0", 100)).length >= 2
    );
    const notes = (await storage.ephemeral.readEvents(LIMITED_STREAM, "0", 100))
      .map((e) => JSON.parse(new TextDecoder().decode(e.message)));
    assert.deepEqual(notes.map((n) => [n.kind, n.key, n.node]).sort(), [
      ["frames", a.options.deviceId, server.nodeId],
      ["join", a.options.deviceId, server.nodeId],
    ]);
  } finally {
    for (const c of clients) await c.close();
    await server.stop();
    await close();
    logs.stop();
  }
});
