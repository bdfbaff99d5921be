/**
 * At-least-once delivery where it is hardest: a frame for a device on a node that died before
 * delivering it, and a client that stops reading its socket while frames keep coming (it is
 * disconnected when its outbound queue passes the limits, and gets everything on reconnect).
 *
 * Runs on the embedded defaults always, and on Postgres + Redis when the environment names them.
 */
import assert from "node:assert/strict";
import { encodeFrame, type Frame, FrameType } from "../../protocol/frame.ts";
import { generateKeypair } from "../../protocol/crypto.ts";
import { clientOptions, silentClient, TestClient } from "../server/helpers/client.ts";
import {
  LogCapture,
  openTestStorage,
  realServices,
  startServer,
  storageKinds,
  testConfig,
  uid,
  waitFor,
  withSharedNodes,
} from "../server/helpers/server.ts";

const text = (f: Frame) => new TextDecoder().decode(f.payload);

for (const kind of storageKinds()) {
  const label = kind === "real" ? "Postgres + Redis" : "PGlite + memory";

  Deno.test({
    name: `a frame for a device on a node that died is not lost (${label})`,
    sanitizeResources: true,
    sanitizeOps: true,
  }, () =>
    withSharedNodes(kind, 2, async ({ nodes, storage, track }) => {
      const [{ server: nodeA, config }, { server: nodeB, config: configB }] = nodes;
      const aliceId = uid("dn-alice");
      const bobId = uid("dn-bob");
      const bobKeys = generateKeypair();
      const alice = track(await TestClient.connect(clientOptions(nodeA, config, aliceId)));
      assert.equal((await alice.join(61, [bobId])).type, FrameType.Ack);

      // The state a crashed node leaves: bob's route still names it (until presence_ttl), and
      // a frame it had claimed and handed to bob was never acknowledged.
      await storage.relay.enqueue(
        [{ deviceId: bobId, channelId: 61, payload: encodeFrameBytes(61, "claimed by the dead") }],
        3600,
      );
      const stale = await storage.relay.claim(bobId, "session-of-the-dead", 10, {
        firstSequence: 1,
      });
      assert.equal(stale.length, 1);
      await storage.ephemeral.setRoute(bobId, { nodeId: "node-dead", sessionId: "s-dead" }, 30);

      // The sender's ACK means the frame is stored, not thrown at a node nobody listens for.
      const seq = alice.msg(61, "sent after the crash");
      assert.equal((await alice.reply(seq)).type, FrameType.Ack);
      assert.equal((await storage.relay.depth(bobId)).depth, 2);

      // Bob comes back on a live node (either works: both replay the shared queue).
      const bob = track(
        await TestClient.connect(
          clientOptions(nodeB, configB, bobId, { keypair: bobKeys }),
        ),
      );
      const first = await bob.nextOfType(FrameType.Msg);
      const second = await bob.nextOfType(FrameType.Msg);
      assert.deepEqual([text(first), text(second)], [
        "claimed by the dead",
        "sent after the crash",
      ]);
      await waitFor(async () => (await storage.relay.depth(bobId)).depth === 0);

      // Live across nodes: the envelope is queued, node B is nudged over the bus and delivers.
      const live = alice.msg(61, "live across nodes");
      assert.equal((await alice.reply(live)).type, FrameType.Ack);
      assert.equal(text(await bob.nextOfType(FrameType.Msg)), "live across nodes");
      await waitFor(async () => (await storage.relay.depth(bobId)).depth === 0);
      assert.ok(nodeB.metricsSnapshot().busMessages > 0);
    }));

  Deno.test({
    name: `a reader that stops reading is disconnected and loses nothing (${label})`,
    sanitizeResources: true,
    sanitizeOps: true,
  }, async () => {
    const logs = new LogCapture().start();
    const { storage, close } = await openTestStorage(kind);
    const limits = { outboundQueueFrames: 64, outboundQueueBytes: 256 * 1024, maxInflight: 8192 };
    const config = testConfig({ limits });
    const server = await startServer(config, { storage });
    const clients: TestClient[] = [];
    let silent: Deno.Conn | null = null;
    try {
      const aliceId = uid("sr-alice");
      const slowId = uid("sr-slow");
      const slowKeys = generateKeypair();
      const alice = await TestClient.connect(clientOptions(server, config, aliceId));
      clients.push(alice);
      silent = await silentClient(server.ports.tcp, config.crypto.noisePublic, slowId, slowKeys);
      assert.equal((await alice.join(62, [slowId])).type, FrameType.Ack);

      // 32 KiB frames until the kernel buffers are full and the server's queue passes its
      // limits; bounded at 64 MiB in all.
      const size = 32 * 1024;
      let sent = 0;
      const disconnected = () => logs.has("slow reader disconnected", { device: slowId });
      // Sent in windows of 64: each frame's ACK waits until the reader ACKs it or it is queued
      // durably (ccp1.md §5), so the sender pipelines as a real client does.
      while (!disconnected() && sent < 2048) {
        const window: number[] = [];
        for (let i = 0; i < 64 && sent < 2048; i++, sent++) {
          const payload = new Uint8Array(size);
          new DataView(payload.buffer).setUint32(0, sent);
          window.push(alice.opaque(FrameType.Msg, 62, payload));
        }
        for (const seq of window) {
          assert.equal((await alice.reply(seq, 20_000)).type, FrameType.Ack);
        }
      }
      assert.ok(disconnected(), `still connected after ${sent} frames`);
      // What the server held for it stayed within the limits (plus the frame that crossed them).
      const line = logs.lines.find((l) =>
        l.msg === "slow reader disconnected" && l.device === slowId
      )!;
      assert.ok(Number(line.queued_frames) <= limits.outboundQueueFrames + 1);
      assert.ok(Number(line.queued_bytes) <= limits.outboundQueueBytes + size + 64);
      // Frames sent after the disconnect wait in the queue.
      for (let i = 0; i < 5; i++) {
        const payload = new Uint8Array(size);
        new DataView(payload.buffer).setUint32(0, sent);
        const seq = alice.opaque(FrameType.Msg, 62, payload);
        assert.equal((await alice.reply(seq)).type, FrameType.Ack);
        sent++;
      }
      await waitFor(() => server.node.localConnection(slowId) === undefined);
      silent.close();
      silent = null;

      // It reconnects and reads: every frame arrives (at least once), none is missing.
      const back = await TestClient.connect(
        clientOptions(server, config, slowId, { keypair: slowKeys }),
      );
      clients.push(back);
      const seen = new Set<number>();
      while (seen.size < sent) {
        const frame = await back.nextOfType(FrameType.Msg, 10_000);
        assert.equal(frame.payload.length, size);
        seen.add(new DataView(frame.payload.buffer, frame.payload.byteOffset).getUint32(0));
      }
      assert.deepEqual([...seen].sort((a, b) => a - b), [...Array(sent).keys()]);
      await waitFor(async () => (await storage.relay.depth(slowId)).depth === 0, 10_000);
    } finally {
      silent?.close();
      for (const c of clients) await c.close();
      await server.stop();
      await close();
      logs.stop();
    }
  });

  Deno.test({
    name: `frames an old session put back reach the device's newer session elsewhere (${label})`,
    sanitizeResources: true,
    sanitizeOps: true,
  }, () =>
    withSharedNodes(kind, 2, async ({ nodes, storage, track }) => {
      const [{ server: nodeA, config }, { server: nodeB, config: configB }] = nodes;
      const aliceId = uid("rq-alice");
      const bobId = uid("rq-bob");
      const bobKeys = generateKeypair();
      const alice = track(await TestClient.connect(clientOptions(nodeA, config, aliceId)));
      const oldBob = track(
        await TestClient.connect(
          clientOptions(nodeA, config, bobId, { keypair: bobKeys, autoAck: false }),
        ),
      );
      assert.equal((await alice.join(63, [bobId])).type, FrameType.Ack);
      assert.equal((await oldBob.join(63, [aliceId])).type, FrameType.Ack);

      // The old session gets the frame live and never acknowledges it (alice's ACK waits: the
      // copy is neither acknowledged nor queued yet, ccp1.md §5).
      const seq = alice.msg(63, "handed over, never acknowledged");
      assert.equal(text(await oldBob.nextOfType(FrameType.Msg)), "handed over, never acknowledged");

      // Bob comes back on node B while the old session still holds the frame: the new session's
      // replay finds an empty queue.
      const newBob = track(
        await TestClient.connect(
          clientOptions(nodeB, configB, bobId, { keypair: bobKeys }),
        ),
      );
      assert.equal((await storage.relay.depth(bobId)).depth, 0);

      // The old session ends and puts the frame back; its node wakes the newer session.
      await oldBob.close();
      const again = await newBob.nextOfType(FrameType.Msg, 10_000);
      assert.equal(text(again), "handed over, never acknowledged");
      // Queued durably by the old session's teardown: now the sender hears its ACK.
      assert.equal((await alice.reply(seq)).type, FrameType.Ack);
    }, { limits: { liveAckTimeoutMs: 60_000 } }));
}

if (realServices() === null) {
  for (
    const name of [
      "a frame for a device on a node that died is not lost (Postgres + Redis)",
      "a reader that stops reading is disconnected and loses nothing (Postgres + Redis)",
      "frames an old session put back reach the device's newer session elsewhere (Postgres + Redis)",
    ]
  ) {
    Deno.test({ name, ignore: true, fn() {} });
  }
}

/** An encoded MSG as the relay queue stores it (sequence 0: replaced on delivery). */
function encodeFrameBytes(channel: number, body: string): Uint8Array {
  return encodeFrame({
    type: FrameType.Msg,
    channel,
    sequence: 0,
    payload: new TextEncoder().encode(body),
  });
}
