/** The console's frame analytics page and CSV export over real embedded storage. */
import assert from "node:assert/strict";
import { harness, signIn, testConfig } from "./helpers.ts";
import { openStorage } from "../../storage/mod.ts";

Deno.test({
  name: "console: analytics per hour and day, grouped or totals, CSV export",
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "commucat-console-analytics-" });
    const storage = await openStorage({ postgresDsn: null, redisUrl: null, dataDir: dir });
    try {
      const hour = new Date(Math.floor(Date.now() / 3_600_000) * 3_600_000);
      const row = (frameType: string, conversation: string, peerDomain: string, sent: number) => ({
        bucket: hour,
        frameType,
        conversation,
        peerDomain,
        sent,
        delivered: sent,
        queued: 0,
        expired: 0,
        redelivered: 0,
      });
      await storage.analytics.add(
        [
          row("MSG", "direct", "", 7),
          row("MSG", "group", "peer.example", 2),
          row("TYPING", "direct", "", 3),
        ],
        [{ bucket: hour, slot: 2, count: 4, sumMs: 80 }],
      );
      const h = await harness({ config: testConfig(), seed: false, ctx: { storage } });
      const c = await signIn(h);
      let res = await c.get("/analytics");
      assert.equal(res.status, 200);
      let html = await res.text();
      assert.match(html, /aria-current="page">Analytics</);
      assert.match(html, /peer\.example/);
      assert.match(html, /\(this domain\)/);
      assert.match(html, /≤ 25 ms/, "p50 of the latency histogram");
      res = await c.get("/analytics?granularity=day&by=");
      html = await res.text();
      assert.match(html, /<td>12<\/td>/, "totals per day: 7 + 2 + 3 sent");
      res = await c.get("/analytics/export.csv?granularity=hour&by=type");
      assert.equal(res.headers.get("content-type"), "text/csv; charset=utf-8");
      const csv = await res.text();
      assert.ok(csv.includes(`${hour.toISOString()},MSG,*,*,9,9,0,0,0`), csv);
      assert.ok(csv.includes(`${hour.toISOString()},TYPING,*,*,3,3,0,0,0`));
      assert.match(csv, /bucket,acknowledged,mean_ms,p50_ms,p90_ms,p99_ms\r\n.*,4,20,25,25,25/);
    } finally {
      await storage.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
