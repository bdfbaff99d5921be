/**
 * Co-owners: the role rules as a table (storage/group_roles.ts) and the group repository that
 * applies them, on PGlite and on Postgres (COMMUCAT_TEST_PG_DSN): promotion to co-owner,
 * giving up and transferring ownership, the last owner kept, admins kept away from owners,
 * the audit trail with the previous role, and two concurrent removals of "the other" owner.
 */
import assert from "node:assert/strict";
import { scratchTests } from "../helpers/scratch_storage.ts";
import { Conflict, NotPermitted, type Storage } from "../../storage/mod.ts";
import { type Actor, decideRemoval, decideRole } from "../../storage/group_roles.ts";
import type { GroupRole } from "../../storage/types.ts";

Deno.test("group role rules, as the PROTOCOL.md table states them", () => {
  const cases: [Actor | null, GroupRole | null, GroupRole, number, boolean, string][] = [
    // by, current, requested, owners, self → result role or refusal kind
    ["owner", null, "member", 1, false, "member"],
    ["owner", null, "owner", 1, false, "owner"],
    ["owner", "member", "owner", 1, false, "owner"],
    ["owner", "admin", "owner", 1, false, "owner"],
    ["admin", null, "admin", 1, false, "admin"],
    ["admin", "member", "owner", 1, false, "admin"],
    ["admin", "member", "admin", 1, false, "admin"],
    ["admin", "owner", "member", 2, false, "not-permitted"],
    ["member", null, "member", 1, false, "not-permitted"],
    [null, null, "member", 1, false, "not-permitted"],
    ["owner", "owner", "admin", 2, false, "admin"],
    ["owner", "owner", "admin", 1, true, "last-owner"],
    ["owner", "owner", "member", 2, true, "member"],
    ["operator", "owner", "admin", 1, false, "last-owner"],
    ["operator", "member", "owner", 1, false, "owner"],
    ["member", "member", "admin", 1, true, "not-permitted"],
    ["admin", "admin", "member", 1, true, "member"],
  ];
  for (const [by, current, requested, owners, self, want] of cases) {
    const d = decideRole({ by, current, requested, owners, self });
    const got = d.ok ? d.role : d.kind;
    assert.equal(got, want, JSON.stringify({ by, current, requested, owners, self }));
  }
  const removals: [Actor | null, GroupRole, number, boolean, string | null, string][] = [
    ["owner", "member", 1, false, null, "member"],
    ["admin", "admin", 1, false, null, "admin"],
    ["admin", "owner", 2, false, null, "not-permitted"],
    ["member", "member", 1, false, null, "not-permitted"],
    ["member", "member", 1, true, null, "member"],
    ["owner", "owner", 1, true, null, "last-owner"],
    ["owner", "owner", 1, true, "next", "owner"],
    ["owner", "owner", 2, true, null, "owner"],
    ["operator", "owner", 1, false, null, "last-owner"],
    ["operator", "owner", 1, false, "next", "owner"],
  ];
  for (const [by, current, owners, self, successor, want] of removals) {
    const d = decideRemoval({ by, current, owners, self, successor });
    assert.equal(d.ok ? d.role : d.kind, want, JSON.stringify({ by, current, owners, self }));
  }
});

async function suite(t: Deno.TestContext, s: Storage) {
  const u = crypto.randomUUID().slice(0, 8);
  const [own, co, adm, mem, out] = ["own", "co", "adm", "mem", "out"].map((x) => `${u}-${x}`);
  const g = await s.groups.create({ id: `${u}-g`, ownerDeviceId: own, relay: true }, "t");
  await s.groups.addMember(g.id, adm, "admin", "t");
  await s.groups.addMember(g.id, mem, "member", "t");

  await t.step("an owner promotes a member to co-owner; admins cannot", async () => {
    const lowered = await s.groups.setRole(g.id, co, "owner", `device:${adm}`, { by: adm });
    assert.equal(lowered.member.role, "admin", "an admin's owner request is lowered");
    const r = await s.groups.setRole(g.id, co, "owner", `device:${own}`, { by: own });
    assert.equal(r.member.role, "owner");
    assert.equal(r.previous, "admin");
    await assert.rejects(
      s.groups.setRole(g.id, co, "member", `device:${adm}`, { by: adm }),
      NotPermitted,
    );
    await assert.rejects(
      s.groups.removeMember(g.id, co, `device:${adm}`, { by: adm }),
      NotPermitted,
    );
    await assert.rejects(
      s.groups.setRole(g.id, adm, "admin", `device:${mem}`, { by: mem }),
      (err) => err instanceof NotPermitted && err.status === 403,
    );
    await assert.rejects(
      s.groups.setRole(g.id, out, "member", `device:${out}`, { by: out }),
      NotPermitted,
    );
    const owners = (await s.groups.roster(g.id)).filter((m) => m.role === "owner");
    assert.deepEqual(owners.map((m) => m.deviceId).sort(), [co, own].sort());
  });

  await t.step(
    "an owner gives up ownership while another remains; the last one cannot",
    async () => {
      const r = await s.groups.setRole(g.id, own, "admin", `device:${own}`, { by: own });
      assert.equal(r.member.role, "admin");
      assert.equal((await s.groups.get(g.id))!.ownerDeviceId, co, "the primary owner moves on");
      await assert.rejects(
        s.groups.setRole(g.id, co, "admin", `device:${co}`, { by: co }),
        (err) => err instanceof Conflict && /last owner/.test(err.message),
      );
      await assert.rejects(
        s.groups.removeMember(g.id, co, `device:${co}`, { by: co }),
        (err) => err instanceof Conflict && /owns group .*last owner/.test(err.message),
      );
      await assert.rejects(s.groups.removeMember(g.id, co, "console:s"), Conflict);
      assert.equal(await s.groups.role(g.id, co), "owner");
    },
  );

  await t.step("the last owner leaves naming a successor; transfer in one step", async () => {
    assert.equal(
      await s.groups.removeMember(g.id, co, `device:${co}`, { by: co, successor: mem }),
      true,
    );
    assert.equal(await s.groups.role(g.id, mem), "owner");
    assert.equal(await s.groups.role(g.id, co), null);
    assert.equal((await s.groups.get(g.id))!.ownerDeviceId, mem);
    await s.groups.transferOwnership(g.id, mem, adm, "console:s");
    assert.equal(await s.groups.role(g.id, adm), "owner");
    assert.equal(await s.groups.role(g.id, mem), "admin");
    await s.groups.transferOwnership(g.id, adm, own, `device:${adm}`, { by: adm, leave: true });
    assert.equal(await s.groups.role(g.id, own), "owner");
    assert.equal(await s.groups.role(g.id, adm), null);
    await assert.rejects(
      s.groups.transferOwnership(g.id, mem, own, `device:${mem}`, { by: mem }),
      /cannot go from admin/,
    );
  });

  await t.step("every role change is in the trail with the role before", async () => {
    const trail = (await s.groups.auditTrail(g.id, { limit: 100 })).items.reverse();
    const lines = trail.map((e) =>
      `${e.deviceId.slice(9)} ${e.action} ${e.previousRole ?? "-"}>${e.role}`
    );
    assert.deepEqual(lines, [
      "own added ->owner",
      "adm added ->admin",
      "mem added ->member",
      "co added ->admin",
      "co role-changed admin>owner",
      "own role-changed owner>admin",
      "mem role-changed member>owner",
      "co removed ->owner",
      "adm role-changed admin>owner",
      "mem role-changed owner>admin",
      "own role-changed admin>owner",
      "adm removed ->owner",
    ]);
  });

  await t.step("two owners removing each other at once leave one owner", async () => {
    const h = await s.groups.create({ id: `${u}-h`, ownerDeviceId: own, relay: true }, "t");
    await s.groups.setRole(h.id, co, "owner", "t", { by: own });
    const results = await Promise.allSettled([
      s.groups.removeMember(h.id, co, "t", { by: own }),
      s.groups.removeMember(h.id, own, "t", { by: co }),
    ]);
    assert.equal(results.filter((r) => r.status === "fulfilled").length, 1);
    const owners = (await s.groups.roster(h.id)).filter((m) => m.role === "owner");
    assert.equal(owners.length, 1);
  });

  await t.step("a user on the roster: its active devices act with the user's role", async () => {
    const user = await s.users.create({ handle: `${u}-team-user` });
    const [phone, old] = [`${u}-uphone`, `${u}-uold`];
    for (const id of [phone, old]) {
      await s.devices.register(
        {
          id,
          userId: user.id,
          publicKey: crypto.getRandomValues(new Uint8Array(32)),
          status: "active",
        },
        "t",
      );
    }
    await s.devices.revoke(old, "t");
    const k = await s.groups.create({ id: `${u}-k`, ownerDeviceId: own, relay: true }, "t");
    await s.groups.addMember(k.id, `@${user.id}`, "admin", "t");
    assert.equal(await s.groups.role(k.id, `@${user.id}`), "admin");
    assert.equal(await s.groups.role(k.id, phone), "admin", "through its user");
    assert.equal(await s.groups.role(k.id, old), null, "a revoked device is not a member");
    // The higher of the device's own role and its user's.
    await s.groups.addMember(k.id, phone, "member", "t");
    assert.equal(await s.groups.role(k.id, phone), "admin");
    // Its groups list both rows, its own first; a revoked device's user rows are not its own.
    assert.deepEqual(
      (await s.groups.groupsOf(phone)).map((m) => [m.groupId, m.deviceId, m.role]),
      [[k.id, phone, "member"], [k.id, `@${user.id}`, "admin"]],
    );
    assert.deepEqual(await s.groups.groupsOf(old), []);
    // It acts as admin: adds a member, cannot touch the owner.
    await s.groups.setRole(k.id, mem, "member", `device:${phone}`, { by: phone });
    await assert.rejects(
      s.groups.setRole(k.id, own, "member", `device:${phone}`, { by: phone }),
      NotPermitted,
    );
    assert.equal(await s.groups.removeMember(k.id, `@${user.id}`, "t"), true);
    assert.equal(await s.groups.role(k.id, phone), "member", "its own row stays");
    for (const bad of ["@", "@@x", "@ x"]) {
      await assert.rejects(s.groups.addMember(k.id, bad, "member", "t"), /@<user id>/, bad);
    }
  });

  await t.step(
    "an operator's role change and its audit entry commit or fail together",
    async () => {
      const h = await s.groups.create({ id: `${u}-audited`, ownerDeviceId: own, relay: true }, "t");
      await s.groups.addMember(h.id, mem, "member", "t");
      const audit = { actor: "console:op", action: "group.set-role" };
      const entries = async () =>
        (await s.audit.list({ target: `group:${h.id}`, limit: 20 })).items.map((e) => [
          e.action,
          e.before,
          e.after,
        ]);
      await s.groups.setRole(h.id, mem, "admin", "console:op", { audit });
      await s.groups.setRole(h.id, mem, "admin", "console:op", { audit }); // unchanged: no entry
      await assert.rejects(
        s.groups.setRole(h.id, own, "member", "console:op", { audit }),
        Conflict,
      );
      await s.groups.transferOwnership(h.id, own, mem, "console:op", {
        audit: { actor: "console:op", action: "group.transfer-ownership" },
      });
      await assert.rejects(
        s.groups.transferOwnership(h.id, own, mem, "console:op", {
          audit: { actor: "console:op", action: "group.transfer-ownership" },
        }),
        /former owner/,
      );
      assert.deepEqual((await entries()).sort((a, b) => String(a[0]).localeCompare(String(b[0]))), [
        ["group.set-role", { deviceId: mem, role: "member" }, { deviceId: mem, role: "admin" }],
        ["group.transfer-ownership", { owner: own }, { owner: mem, previousOwner: "admin" }],
      ]);
    },
  );
}

scratchTests(
  { pglite: "co-owners on pglite", postgres: "co-owners on postgres" },
  ({ storage }, t) => suite(t, storage),
  { sanitizeResources: false },
);
