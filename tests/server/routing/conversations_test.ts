/**
 * The conversation table on its own (no sockets): identity by exact member set, per-device
 * bindings, limits, the cache bound, and two "nodes" sharing one in-memory store.
 */
import assert from "node:assert/strict";
import { ProtocolError } from "../../../protocol/errors.ts";
import { MemoryEphemeralStore, MemoryHub } from "../../../storage/ephemeral/mod.ts";
import type { NodeContext } from "../../../server/context.ts";
import { log } from "../../../server/log.ts";
import {
  Conversations,
  directConversationId,
  groupConversationId,
} from "../../../server/routing/conversations.ts";
import { testConfig } from "../helpers/server.ts";

function node(hub: MemoryHub, rosters: Record<string, string[]> = {}, budget?: number) {
  const config = testConfig({ limits: { maxConversationsPerDevice: 3, maxMembersPerJoin: 4 } });
  const storage = {
    ephemeral: new MemoryEphemeralStore({ hub }),
    groups: {
      get: (id: string) => Promise.resolve(rosters[id] ? { id, relay: true } : null),
      roster: (id: string) =>
        Promise.resolve((rosters[id] ?? []).map((deviceId) => ({ deviceId, groupId: id }))),
    },
  };
  const ctx = { config, storage, log } as unknown as NodeContext;
  return new Conversations(ctx, budget);
}

const join = (members: string[], extra: Record<string, unknown> = {}) => ({
  members,
  relay: true,
  ...extra,
});
const refusal = (title: string, status: number) => (e: unknown) =>
  e instanceof ProtocolError && e.title === title && e.status === status && !e.fatal;

Deno.test("the same member set is the same conversation whoever joins; another set is another", async () => {
  const hub = new MemoryHub();
  const n = node(hub);
  const ab = await n.join("a", 7, join(["b"]));
  const ba = await n.join("b", 9, join(["a", "b"]));
  assert.equal(ab.id, ba.id);
  assert.equal(ab.id, directConversationId(["a", "b"]));
  const abm = await n.join("m", 7, join(["a", "b"]));
  assert.notEqual(abm.id, ab.id);
  assert.deepEqual([...abm.members].sort(), ["a", "b", "m"]);
  // "device@our domain" is the device itself.
  const again = await n.join("a", 8, join(["b@test.commucat"]));
  assert.equal(again.id, ab.id);
  assert.equal((await n.lookup("a", 7))?.id, ab.id);
});

Deno.test("bindings are per device and bounded; LEAVE unbinds the leaver only", async () => {
  const n = node(new MemoryHub());
  const ab = await n.join("a", 7, join(["b"]));
  await n.join("b", 7, join(["a"]));
  await assert.rejects(n.join("a", 7, join(["c"])), refusal("Join Rejected", 409));
  await assert.rejects(n.join("a", 0, join(["c"])), refusal("Join Rejected", 400));
  await assert.rejects(
    n.join("a", 10, join(["b", "c", "d", "e"])),
    refusal("Too Many Members", 413),
  );
  await n.join("a", 8, join(["c"]));
  await n.join("a", 9, join(["d"]));
  await assert.rejects(n.join("a", 10, join(["e"])), refusal("Too Many Conversations", 429));
  await n.leave("a", 7);
  assert.equal(await n.lookup("a", 7), null);
  assert.equal((await n.lookup("b", 7))?.id, ab.id);
  await assert.rejects(n.leave("a", 7), refusal("Unknown Channel", 404));
});

Deno.test("a node started later sees the routes; group conversations follow the roster", async () => {
  const hub = new MemoryHub();
  const rosters: Record<string, string[]> = { g1: ["a", "b"] };
  const first = node(hub, rosters);
  const conv = await first.join("a", 7, join(["b"]));
  await first.join("a", 5, join([], { group_id: "g1" }));
  const later = node(hub, rosters);
  assert.equal((await later.lookup("a", 7))?.id, conv.id);
  await later.attach("a");
  const loaded = later.lookup("a", 7); // loaded at attach: synchronous now
  assert.ok(loaded !== null && !(loaded instanceof Promise));
  assert.equal(loaded.id, conv.id);
  await assert.rejects(
    later.join("x", 5, join([], { group_id: "g1" })),
    refusal("Join Rejected", 403),
  );
  rosters.g1 = ["a", "b", "x"];
  later.invalidateGroup("g1");
  const g = await later.join("x", 5, join([], { group_id: "g1" }));
  assert.equal(g.id, groupConversationId("g1"));
  assert.ok(g.members.has("x"));
  const joined = await later.joinedOf([g.id]);
  assert.deepEqual(joined[0].sort(), ["a", "x"]);
});

Deno.test("the cache stays within its member budget", async () => {
  const n = node(new MemoryHub(), {}, 10);
  for (let i = 0; i < 3; i++) await n.join(`d${i}`, 1, join(["p", "q", "r"]));
  assert.ok(n.cachedCount <= 3);
  // Evicted conversations load again from the shared store.
  assert.equal((await n.lookup("d0", 1))?.members.size, 4);
});
