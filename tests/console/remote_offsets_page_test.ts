/**
 * The console's delivery receipts (remote offsets) on /peers, over real embedded storage: what a
 * peer reported is listed per device and channel, markup in a remote device id is escaped, and
 * the repository refuses a report naming a frame it did not send.
 */
import assert from "node:assert/strict";
import { harness, signIn, testConfig } from "./helpers.ts";
import { openStorage } from "../../storage/mod.ts";
import { bytesToHex } from "../../protocol/hex.ts";
import { encodeFrame, FrameType } from "../../protocol/frame.ts";

Deno.test({
  name: "console: /peers lists delivery receipts from peers; reports of unknown frames refused",
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "commucat-console-offsets-" });
    const storage = await openStorage({ postgresDsn: null, redisUrl: null, dataDir: dir });
    try {
      const config = testConfig();
      const domain = config.server.domain;
      const remote = "<b>bob</b>@b.example";
      const frame = encodeFrame({
        type: FrameType.Msg,
        channel: 7,
        sequence: 0,
        payload: new Uint8Array(3),
      });
      for (const id of ["ev-1", "ev-2"]) {
        await storage.outbox.enqueue({
          eventId: id,
          peerDomain: "b.example",
          endpoint: "http://127.0.0.1:9/federation/events",
          body: {
            event: {
              event_id: id,
              origin: domain,
              scope: "b.example",
              created_at: new Date().toISOString(),
              payload: {
                channel: 7,
                sequence: 0,
                payload: bytesToHex(frame),
                sender: `alice@${domain}`,
                target: remote,
              },
            },
            signature: "00".repeat(64),
          },
        });
      }
      const input = {
        peerDomain: "b.example",
        recipient: remote,
        sender: `alice@${domain}`,
        channel: 7,
        ackedAt: new Date(),
      };
      const none = () => ({ items: [], ttlSeconds: 3600 });
      const refused = await storage.remoteOffsets.record(
        { ...input, eventIds: ["ev-1", "ev-unknown"] },
        none,
      );
      assert.equal(refused.ok, false);
      assert.equal(refused.ok === false && refused.eventId, "ev-unknown");
      const other = await storage.remoteOffsets.record(
        { ...input, channel: 8, eventIds: ["ev-1"] },
        none,
      );
      assert.equal(other.ok, false);
      assert.deepEqual(await storage.remoteOffsets.list(), [], "nothing recorded");

      const ok = await storage.remoteOffsets.record({ ...input, eventIds: ["ev-1", "ev-2"] }, none);
      assert.ok(ok.ok && ok.fresh.length === 2);
      const again = await storage.remoteOffsets.record({ ...input, eventIds: ["ev-2"] }, none);
      assert.ok(again.ok && again.fresh.length === 0 && again.already === 1);

      const h = await harness({ config, seed: false, ctx: { storage } });
      const c = await signIn(h);
      const res = await c.get("/peers");
      assert.equal(res.status, 200);
      const html = await res.text();
      assert.match(html, /Delivery receipts from peers/);
      assert.ok(html.includes("<code>&lt;b>bob&lt;/b>@b.example</code>"), "the id is escaped");
      assert.ok(!html.includes("<b>bob</b>"));
      assert.match(html, /ev-2/);
      assert.ok(html.includes('<td class="num">2</td>'), "two frames acknowledged");
      h.close?.();
    } finally {
      await storage.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
