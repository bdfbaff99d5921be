/**
 * Presence reaches the members of a device's conversations who joined them too: PRESENCE
 * `{channel, peer, state}` when it joins (the newcomer learns who is online), comes online
 * again, changes its state and goes offline — live only, on one node and across two nodes
 * sharing storage. Being listed in someone's JOIN does not expose a device's presence.
 *
 * Runs on the embedded defaults always, and on Postgres + Redis when the environment names them.
 */
import assert from "node:assert/strict";
import { type Frame, FrameType } from "../../protocol/frame.ts";
import { clientOptions, TestClient } from "../server/helpers/client.ts";
import {
  realServices,
  storageKinds,
  uid,
  waitFor,
  withSharedNodes,
} from "../server/helpers/server.ts";

type PresenceJson = { channel?: number; peer?: string; state?: string; candidate?: string };

const presenceOf = (f: Frame) => f.json as PresenceJson;

/** Waits for (and removes) the PRESENCE about `peer` on `channel`; returns its state. */
async function nextPresence(client: TestClient, channel: number, peer: string): Promise<string> {
  const frame = await client.next((f) =>
    f.type === FrameType.Presence && f.channel === channel && presenceOf(f).peer === peer &&
    presenceOf(f).state !== undefined
  );
  assert.equal(presenceOf(frame).channel, channel);
  return presenceOf(frame).state!;
}

/** PRESENCE frames about `peer` still unread. */
function pendingAbout(client: TestClient, peer: string): PresenceJson[] {
  return client.received.filter((f) => f.type === FrameType.Presence)
    .map(presenceOf).filter((p) => p.peer === peer);
}

for (const kind of storageKinds()) {
  const label = kind === "real" ? "Postgres + Redis" : "PGlite + memory";

  Deno.test({
    name: `presence reaches channel peers, on one node and across nodes (${label})`,
    sanitizeResources: true,
    sanitizeOps: true,
  }, (t) =>
    withSharedNodes(kind, 2, async ({ nodes, storage, track }) => {
      const [{ server: node1, config }, { server: node2, config: config2 }] = nodes;
      const connect = async (on: 1 | 2, id: string) =>
        track(
          await TestClient.connect(
            on === 1 ? clientOptions(node1, config, id) : clientOptions(node2, config2, id),
          ),
        );
      const aId = uid("pr-alice");
      const bId = uid("pr-bob");
      const cId = uid("pr-carol");
      const ch = 4100 + Math.floor(Math.random() * 1000);
      const ch2 = ch + 1000;
      let a!: TestClient;

      await t.step("a peer coming online is announced to the channel", async () => {
        a = await connect(1, aId);
        assert.equal((await a.join(ch, [aId, bId])).type, FrameType.Ack);
        const b = await connect(1, bId);
        // Listed by alice but not joined: bob's presence is his own business.
        assert.deepEqual(pendingAbout(a, bId), []);

        // Joining tells the others and the newcomer learns who is online.
        assert.equal((await b.join(ch, [aId, bId])).type, FrameType.Ack);
        assert.equal(await nextPresence(a, ch, bId), "online");
        assert.equal(await nextPresence(b, ch, aId), "online");

        // A new state reaches the peer; the same state again (a refresh) sends nothing.
        b.control(FrameType.Presence, 0, { state: "away" });
        assert.equal(await nextPresence(a, ch, bId), "away");
        b.control(FrameType.Presence, 0, { state: "away" });
        b.msg(ch, "after the refresh");
        await a.nextOfType(FrameType.Msg);
        assert.deepEqual(pendingAbout(a, bId), []); // no repeated online or away
        assert.equal((await storage.ephemeral.getPresence(bId))?.state, "online");

        b.control(FrameType.Presence, 0, { state: "busy" });
        assert.equal(await nextPresence(a, ch, bId), "busy");

        // The connection ends: the peer goes offline.
        await b.close();
        assert.equal(await nextPresence(a, ch, bId), "offline");
        await waitFor(async () => (await storage.ephemeral.getPresence(bId))?.state === "offline");
      });

      await t.step("presence of a device on another node reaches the peer", async () => {
        assert.equal((await a.join(ch2, [aId, cId])).type, FrameType.Ack);
        // The conversation lives in the shared store: node 2 knows it without being told.
        const c = await connect(2, cId);
        assert.equal((await c.join(ch2, [aId, cId])).type, FrameType.Ack);
        assert.equal(await nextPresence(a, ch2, cId), "online");
        // Alice is on node 1: the newcomer learns it from her presence record.
        assert.equal(await nextPresence(c, ch2, aId), "online");
        c.control(FrameType.Presence, 0, { state: "away" });
        assert.equal(await nextPresence(a, ch2, cId), "away");
        a.control(FrameType.Presence, 0, { state: "busy" });
        assert.equal(await nextPresence(c, ch2, aId), "busy");
        await c.close();
        assert.equal(await nextPresence(a, ch2, cId), "offline");
      });

      await t.step("a graceful stop tells the peers on other nodes", async () => {
        // Carol's binding is remembered: coming back online is announced without a new JOIN.
        const c = await connect(2, cId);
        assert.equal(await nextPresence(a, ch2, cId), "online");
        await node2.stop();
        await c.ended();
        assert.equal(await nextPresence(a, ch2, cId), "offline");
        // Presence is never queued: nothing waits for the offline device.
        assert.equal((await storage.relay.depth(cId)).depth, 0);
      });
    }));
}

if (realServices() === null) {
  Deno.test({
    name: "presence reaches channel peers, on one node and across nodes (Postgres + Redis)",
    ignore: true,
    fn() {},
  });
}
