/**
 * A reader that stops reading while its queue is being replayed: the replay waits for the
 * outbound queue to drain (it is the server's own burst), and frames for the device that keep
 * arriving meanwhile go to the relay queue. Once more of them piled up than the outbound queue
 * may hold, the reader is disconnected like any slow reader, and nothing is lost.
 */
import assert from "node:assert/strict";
import { encodeControl, FrameType } from "../../protocol/frame.ts";
import { generateKeypair, type Keypair } from "../../protocol/crypto.ts";
import { silentClient, TestClient } from "./helpers/client.ts";
import { LogCapture, openTestStorage, startServer, testConfig, uid } from "./helpers/server.ts";

Deno.test({
  name: "a reader that stops reading during its replay is disconnected as a slow reader",
  sanitizeResources: true,
  sanitizeOps: true,
}, async () => {
  const logs = new LogCapture().start();
  const { storage, close } = await openTestStorage("embedded");
  const limits = { outboundQueueFrames: 64, outboundQueueBytes: 256 * 1024, maxInflight: 8192 };
  const config = testConfig({ limits });
  const server = await startServer(config, { storage });
  let silent: Deno.Conn | null = null;
  let alice: TestClient | null = null;
  try {
    const slowId = uid("rs-slow");
    const slowKeys = generateKeypair();
    const opts = (deviceId: string, keypair?: Keypair) => ({
      port: server.ports.tcp,
      serverStatic: config.crypto.noisePublic,
      deviceId,
      keypair,
      user: { handle: deviceId },
    });
    // Register the device, then leave it offline with a backlog larger than the socket buffers.
    await (await TestClient.connect(opts(slowId, slowKeys))).close();
    const channel = 71;
    const size = 32 * 1024;
    const backlog = 320; // 10 MiB
    await storage.relay.enqueue(
      Array.from({ length: backlog }, () => ({
        deviceId: slowId,
        channelId: channel,
        payload: encodeControl(FrameType.GroupEvent, channel, 0, { pad: "x".repeat(size) }),
      })),
      3600,
    );
    alice = await TestClient.connect(opts(uid("rs-alice")));
    assert.equal((await alice.join(channel, [slowId])).type, FrameType.Ack);

    silent = await silentClient(server.ports.tcp, config.crypto.noisePublic, slowId, slowKeys);
    const disconnected = () => logs.has("slow reader disconnected", { device: slowId });
    // Live frames while the replay is stuck behind the unread socket: each is queued (and
    // acknowledged to the sender); the reader is cut once more than 64 have piled up.
    let sent = 0;
    while (!disconnected() && sent < 1024) {
      const seq = alice.opaque(FrameType.Msg, channel, new Uint8Array(16));
      assert.equal((await alice.reply(seq)).type, FrameType.Ack);
      sent++;
    }
    assert.ok(disconnected(), `still connected after ${sent} frames`);
    const line = logs.lines.find((l) =>
      l.msg === "slow reader disconnected" && l.device === slowId
    )!;
    // The outbound queue itself never went past half its limits.
    assert.ok(Number(line.queued_frames) <= limits.outboundQueueFrames / 2 + 1);
    assert.ok(Number(line.queued_bytes) <= limits.outboundQueueBytes / 2 + size + 64);
    // Nothing is lost: after the disconnect, the backlog and the live frames are all queued.
    await (async () => {
      for (let i = 0; i < 200 && server.node.localConnection(slowId) !== undefined; i++) {
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    assert.equal(server.node.localConnection(slowId), undefined);
    assert.equal((await storage.relay.depth(slowId)).depth, backlog + sent);
  } finally {
    silent?.close();
    await alice?.close();
    await server.stop();
    await close();
    logs.stop();
  }
});
