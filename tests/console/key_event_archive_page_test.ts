/** The console's key-event archive page over real embedded storage and a directory archive. */
import assert from "node:assert/strict";
import { join } from "node:path";
import { harness, key, signIn, testConfig } from "./helpers.ts";
import { openStorage } from "../../storage/mod.ts";
import { runRetentionPass } from "../../server/retention.ts";

Deno.test({
  name: "console: archived ranges, a device's archived history, an altered chunk reported",
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "commucat-console-archive-" });
    const storage = await openStorage({ postgresDsn: null, redisUrl: null, dataDir: dir });
    try {
      const base = testConfig();
      const config = {
        ...base,
        retention: {
          ...base.retention,
          keyEventsDays: 30,
          archive: { kind: "dir" as const, path: join(dir, "archive") },
        },
      };
      const user = await storage.users.create({ handle: "carol" });
      await storage.devices.register(
        { id: "dev-c1", userId: user.id, publicKey: key(5), status: "active" },
        "cli:op",
      );
      await storage.devices.rotateKey("dev-c1", key(6), "cli:op");
      const pass = await runRetentionPass(config, storage, { cutoff: new Date(Date.now() + 1000) });
      assert.ok("locked" in pass && pass.locked && pass.archived === 2);

      const h = await harness({ config, seed: false, ctx: { storage } });
      const c = await signIn(h);
      let res = await c.get("/key-events/archive");
      assert.equal(res.status, 200);
      let html = await res.text();
      assert.match(html, /Archived ranges/);
      assert.match(html, /older than 30 days are archived to dir:/);
      assert.ok(html.includes(`<td>2</td>`), "the chunk's event count");

      res = await c.get("/key-events/archive?device=dev-c1");
      html = await res.text();
      assert.equal(res.status, 200);
      assert.match(html, /Archived key events of dev-c1/);
      assert.match(html, /registered/);
      assert.match(html, /rotated/);

      res = await c.get("/key-events/archive?device=nobody");
      assert.match(await res.text(), /No archived key events for nobody/);
      res = await c.get("/key-events/archive?device=" + encodeURIComponent("<bad>"));
      assert.equal(res.status, 400);
      await res.body?.cancel();

      const chunk = join(dir, "archive", "key-events", "0000000001.jsonl");
      await Deno.writeTextFile(chunk, (await Deno.readTextFile(chunk)).replace("cli:op", "cli:xx"));
      res = await c.get("/key-events/archive?device=dev-c1");
      html = await res.text();
      assert.match(html, /Archived history not available/);
      assert.match(html, /was altered/);
      h.close?.();
    } finally {
      await storage.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
