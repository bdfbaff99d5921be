/**
 * The operator-actions module writes a change and its audit entry in one transaction: when the
 * audit entry cannot be written, the change is rolled back too. Against real storage.
 */
import assert from "node:assert/strict";
import { LocalAdmin } from "../../admin/local.ts";
import { InvalidValue } from "../../storage/errors.ts";
import { realStorage } from "./storage.ts";

Deno.test({
  name: "a change whose audit entry fails is rolled back",
  sanitizeResources: false,
  async fn(t) {
    const { storage, close } = await realStorage();
    try {
      const run = crypto.randomUUID().slice(0, 6);
      const user = await storage.users.create({ handle: `u-${run}` });
      const id = `d-${run}`;
      await storage.devices.register(
        { id, userId: user.id, publicKey: new Uint8Array(32).fill(4), status: "pending" },
        "handshake",
      );
      const broken = { actor: "cli:test", action: "x".repeat(200) }; // longer than allowed

      await t.step("device approval", async () => {
        await assert.rejects(storage.devices.approve(id, "cli:test", broken), InvalidValue);
        assert.equal((await storage.devices.get(id))?.status, "pending");
        const events = await storage.keyEvents.export(id);
        assert.deepEqual(events.map((e) => e.kind), ["pending"]);
      });

      await t.step("user registration", async () => {
        await assert.rejects(storage.users.create({ handle: `v-${run}` }, broken), InvalidValue);
        assert.equal(await storage.users.getByHandle(`v-${run}`), null);
      });

      await t.step("group member removal", async () => {
        const owner = `o-${run}`;
        await storage.devices.register(
          { id: owner, userId: user.id, publicKey: new Uint8Array(32).fill(5), status: "active" },
          "handshake",
        );
        const g = await storage.groups.create({ ownerDeviceId: owner, relay: true }, "test");
        await storage.groups.addMember(g.id, id, "member", "test");
        await assert.rejects(
          storage.groups.removeMember(g.id, id, "cli:test", { audit: broken }),
          InvalidValue,
        );
        assert.equal(await storage.groups.role(g.id, id), "member");
      });

      await t.step("through LocalAdmin the audit row is there exactly once", async () => {
        const admin = new LocalAdmin({ storage, actor: "cli:test", reachesServers: false });
        const r = await admin.approveDevice(id);
        assert.equal(r.device.status, "active");
        assert.match(r.notes[0], /running servers were not told/);
        const audit = await storage.audit.list({ target: `device:${id}` });
        assert.deepEqual(audit.items.map((a) => a.action), ["device.approve"]);
        assert.equal(audit.items[0].actor, "cli:test");
      });
    } finally {
      await close();
    }
  },
});
