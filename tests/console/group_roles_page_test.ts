/** Console group roles over real embedded storage: co-owner, transfer, the last owner kept. */
import assert from "node:assert/strict";
import { harness, signIn, testConfig } from "./helpers.ts";
import { openStorage } from "../../storage/mod.ts";

Deno.test({
  name: "console: promote to co-owner, transfer ownership, the last owner cannot be removed",
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "commucat-console-roles-" });
    const storage = await openStorage({ postgresDsn: null, redisUrl: null, dataDir: dir });
    try {
      const g = await storage.groups.create({ id: "team", ownerDeviceId: "ann", relay: true }, "t");
      await storage.groups.addMember(g.id, "bob", "member", "t");
      const h = await harness({ config: testConfig(), seed: false, ctx: { storage } });
      const c = await signIn(h);

      let res = await c.get("/groups/team");
      let html = await res.text();
      assert.match(html, /href="\/groups\/team\/members\/ann\/role"/);
      res = await c.get("/groups/team/members/ann/role");
      html = await res.text();
      assert.match(html, /The last owner keeps the role/);
      assert.match(html, /Transfer ownership/);

      // The last owner cannot be removed or demoted; nothing changes.
      res = await c.post("/groups/team/members/ann/remove", { confirm: "yes" });
      assert.equal(res.status, 303);
      html = await (await c.get("/groups/team")).text();
      assert.match(html, /Nothing was removed: .*last owner/);
      res = await c.post("/groups/team/members/ann/role", { role: "admin" });
      html = await (await c.get(res.headers.get("location")!)).text();
      assert.match(html, /Nothing changed: .*last owner/);
      assert.equal(await storage.groups.role("team", "ann"), "owner");

      // Co-owner, then the first owner steps down; both audited.
      res = await c.post("/groups/team/members/bob/role", { role: "owner" });
      assert.equal(res.headers.get("location"), "/groups/team");
      assert.equal(await storage.groups.role("team", "bob"), "owner");
      res = await c.post("/groups/team/members/ann/role", { role: "admin" });
      assert.equal(await storage.groups.role("team", "ann"), "admin");
      html = await (await c.get("/groups/team")).text();
      assert.match(html, /owner → admin/);
      assert.match(html, /member → owner/);

      // Transfer back and leave.
      res = await c.post("/groups/team/members/bob/transfer", { successor: "ann", leave: "yes" });
      assert.equal(res.headers.get("location"), "/groups/team");
      assert.equal(await storage.groups.role("team", "ann"), "owner");
      assert.equal(await storage.groups.role("team", "bob"), null);
      const audit = await storage.audit.list({ target: "group:team", limit: 10 });
      assert.deepEqual(
        audit.items.map((e) => e.action).sort(),
        ["group.set-role", "group.set-role", "group.transfer-ownership"],
      );
      // Without the CSRF token nothing happens.
      res = await c.post("/groups/team/members/ann/role", { role: "member" }, { csrf: null });
      assert.equal(res.status, 403);
      await res.body?.cancel();
      assert.equal(await storage.groups.role("team", "ann"), "owner");
    } finally {
      await storage.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
