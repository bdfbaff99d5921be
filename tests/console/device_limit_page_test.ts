/**
 * The console's device limit of a user, against real storage (embedded, or Postgres when
 * COMMUCAT_TEST_PG_DSN is set): the user page shows the count against the limit; the form sets
 * the user's own limit (audited) only with the session's CSRF token, refuses bad input without
 * changing anything, and an empty value restores the server's limit. The devices list groups
 * devices by user with their counts.
 */
import assert from "node:assert/strict";
import { openTestStorage, storageKinds, uid } from "../server/helpers/server.ts";
import { harnessOver, signIn } from "./helpers.ts";

for (const kind of storageKinds()) {
  Deno.test({
    name: `console: a user's device limit and the devices grouped by user (${kind})`,
    sanitizeOps: false,
    sanitizeResources: false,
  }, async (t) => {
    const { storage, close } = await openTestStorage(kind);
    try {
      const client = await signIn(harnessOver(storage));
      const user = await storage.users.create({ handle: uid("limited") });
      const devices = [uid("ld-a"), uid("ld-b"), uid("ld-c")];
      for (const [i, id] of devices.entries()) {
        await storage.devices.register(
          {
            id,
            userId: user.id,
            publicKey: new Uint8Array(32).fill(i + 1),
            status: i === 2 ? "pending" : "active",
          },
          "test",
        );
      }
      await storage.devices.revoke(devices[1], "test");
      const page = `/users/${encodeURIComponent(user.id)}`;
      const limitOf = () => storage.pairing.deviceLimit(user.id);

      await t.step("the user page shows the count against the server's limit", async () => {
        const html = await (await client.get(page)).text();
        assert.match(html, /data-device-limit="default"/);
        assert.match(html, /2 of 8 \(pending and active count/);
        assert.match(html, new RegExp(`action="${page}/device-limit"`));
      });

      await t.step("without the CSRF token the form changes nothing", async () => {
        const res = await client.post(`${page}/device-limit`, { limit: "5" }, { csrf: null });
        assert.equal(res.status, 403);
        assert.equal(await limitOf(), null);
      });

      await t.step("with it, the limit is set and audited", async () => {
        const res = await client.post(`${page}/device-limit`, { limit: "5" });
        assert.equal(res.status, 303);
        assert.equal(await limitOf(), 5);
        const audit = await storage.audit.list({ target: `user:${user.id}` });
        const entry = audit.items.find((e) => e.action === "user.device-limit");
        assert.ok(entry, "audited");
        assert.match(entry.actor, /^console:/);
        const html = await (await client.get(page)).text();
        assert.match(html, /data-device-limit="5"/);
      });

      await t.step("bad input is refused with a message; nothing changes", async () => {
        for (const bad of ["x", "0", "10001", "-1"]) {
          const res = await client.post(`${page}/device-limit`, { limit: bad });
          assert.equal(res.status, 303, bad);
          const html = await (await client.get(page)).text();
          assert.match(html, /The device limit was not changed/, bad);
          assert.equal(await limitOf(), 5, bad);
        }
      });

      await t.step("empty restores the server's limit", async () => {
        await client.post(`${page}/device-limit`, { limit: "" });
        assert.equal(await limitOf(), null);
      });

      await t.step("the devices list groups devices by user with counts", async () => {
        const html = await (await client.get(`/devices?user=${user.handle}`)).text();
        assert.match(html, new RegExp(`data-user="${user.id}"`));
        assert.match(html, /2 of 8 devices · 1 active · 1 pending · 1 revoked/);
      });
    } finally {
      await close();
    }
  });
}
