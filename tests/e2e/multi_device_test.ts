/**
 * A user with several devices, end to end over two nodes: alice's phone makes a pairing code, her
 * laptop pairs with it, both receive a message sent to `@alice` while the laptop was offline
 * (each exactly once), the phone's own messages reach the laptop as sync copies, bob sees both
 * devices' keys, and the phone unlinks the laptop, which is cut off and cannot connect again.
 */
import assert from "node:assert/strict";
import { type Frame, FrameType } from "../../protocol/frame.ts";
import { bytesToHex } from "../../protocol/hex.ts";
import { splitSender } from "../../protocol/sender.ts";
import {
  clientOptions,
  deviceKeypair,
  HandshakeRefused,
  TestClient,
} from "../server/helpers/client.ts";
import { storageKinds, type TestNode, uid, withSharedNodes } from "../server/helpers/server.ts";

const SENDER = { capabilities: ["sender"] };
const json = (f: Frame) => f.json as Record<string, unknown>;

function request(c: TestClient, fields: Record<string, unknown>): Promise<Frame> {
  return c.reply(
    c.opaque(FrameType.KeyUpdate, 0, new TextEncoder().encode(JSON.stringify(fields))),
  );
}

/** The MSG frames `c` received whose payload (after the sender stamp) is `text`. */
function copies(c: TestClient, text: string): { sender: string; channel: number }[] {
  return c.received.filter((f) => f.type === FrameType.Msg).map((f) => ({
    ...splitSender(f.payload),
    channel: f.channel,
  })).filter((m) => new TextDecoder().decode(m.payload) === text).map((m) => ({
    sender: m.sender,
    channel: m.channel,
  }));
}

const settle = (ms = 300) => new Promise((r) => setTimeout(r, ms));

for (const kind of storageKinds()) {
  const label = kind === "real" ? "Postgres + Redis" : "PGlite + memory";
  Deno.test({
    name: `a user with two devices: pairing, @user fan-out, sync copies, unlink (${label})`,
    sanitizeResources: true,
    sanitizeOps: true,
  }, async (t) => {
    await withSharedNodes(kind, 2, async ({ nodes, storage, track }) => {
      const on = (node: TestNode, id: string, extra = {}) =>
        TestClient.connect(clientOptions(node.server, node.config, id, { ...SENDER, ...extra }))
          .then(track);
      const alice = uid("alice");
      const bobHandle = uid("bob");
      const phoneId = uid("alice-phone");
      const laptopId = uid("alice-laptop");
      const bobId = uid("bob-desk");
      const phone = await on(nodes[0], phoneId, { user: { handle: alice } });
      const bob = await on(nodes[0], bobId, { user: { handle: bobHandle } });
      const aliceId = String(phone.user.id);

      // Bob addresses alice the user before her laptop exists.
      const toAlice = 77;
      const joined = await bob.join(toAlice, [`@${alice}`]);
      assert.equal(joined.type, FrameType.Ack, JSON.stringify(joined.json));

      let laptop!: TestClient;
      await t.step("the phone makes a code, the laptop pairs with it on another node", async () => {
        const answer = await request(phone, { op: "pair_code" });
        assert.equal(answer.type, FrameType.Ack, JSON.stringify(answer.json));
        laptop = await on(nodes[1], laptopId, {
          user: { handle: alice },
          hello: { pairing_code: json(answer).code },
        });
        assert.equal(laptop.user.id, aliceId);
        assert.equal((await storage.devices.get(laptopId))?.status, "active");
        assert.equal(await storage.pairing.pairedBy(laptopId), phoneId);
        await laptop.close();
        // The pairing's control event reaches every node (they re-expand @alice).
        await settle();
      });

      await t.step("a message to @alice reaches both devices, each exactly once", async () => {
        const seq = bob.msg(toAlice, "hello alice");
        const ack = await bob.reply(seq);
        assert.equal(ack.type, FrameType.Ack, JSON.stringify(ack.json));
        await settle();
        assert.deepEqual(copies(phone, "hello alice"), [{ sender: bobId, channel: toAlice }]);
        // The laptop was offline: its copy waited in the relay queue and is replayed on connect.
        laptop = await on(nodes[1], laptopId, { user: { handle: alice } });
        await laptop.next((f) => f.type === FrameType.Msg).then((f) => laptop.received.unshift(f));
        await settle(500);
        assert.deepEqual(copies(laptop, "hello alice"), [{ sender: bobId, channel: toAlice }]);
        assert.deepEqual(copies(phone, "hello alice"), [{ sender: bobId, channel: toAlice }]);
      });

      await t.step("replayed and live copies carry the sender; counted exactly once", async () => {
        const seq = bob.msg(toAlice, "second");
        assert.equal((await bob.reply(seq)).type, FrameType.Ack);
        await settle();
        assert.deepEqual(copies(phone, "second"), [{ sender: bobId, channel: toAlice }]);
        assert.deepEqual(copies(laptop, "second"), [{ sender: bobId, channel: toAlice }]);
        assert.deepEqual(copies(bob, "second"), [], "the sender gets no copy of its own");
      });

      await t.step(
        "the phone's message to @bob reaches bob and, as a sync copy, the laptop",
        async () => {
          const toBob = 78;
          assert.equal((await phone.join(toBob, [`@${bobHandle}`])).type, FrameType.Ack);
          const seq = phone.msg(toBob, "from my phone");
          assert.equal((await phone.reply(seq)).type, FrameType.Ack);
          await settle();
          assert.deepEqual(copies(bob, "from my phone"), [{ sender: phoneId, channel: toBob }]);
          assert.deepEqual(copies(laptop, "from my phone"), [{ sender: phoneId, channel: toBob }]);
          assert.deepEqual(copies(phone, "from my phone"), []);
        },
      );

      await t.step("bob sees both of alice's keys", async () => {
        const keys = json(await request(bob, { op: "keys", devices: [phoneId, laptopId] }));
        const found = (keys.devices as Record<string, unknown>[]).map((d) => [
          d.device,
          d.user,
          d.public_key,
        ]).sort();
        assert.deepEqual(
          found,
          [
            [laptopId, aliceId, bytesToHex(deviceKeypair(laptopId).publicKey)],
            [phoneId, aliceId, bytesToHex(deviceKeypair(phoneId).publicKey)],
          ].sort(),
        );
      });

      await t.step("the phone unlinks the laptop: cut off on its node, refused after", async () => {
        const answer = await request(phone, { op: "unlink", device: laptopId });
        assert.equal(answer.type, FrameType.Ack, JSON.stringify(answer.json));
        await laptop.ended();
        const cut = laptop.received.find((f) => f.type === FrameType.Error);
        assert.equal(cut && json(cut).title, "Device Revoked");
        const refused = await on(nodes[1], laptopId, { user: { handle: alice } }).then(
          () => assert.fail("an unlinked device connected"),
          (err) => err,
        );
        assert.ok(refused instanceof HandshakeRefused, String(refused));
        assert.equal(refused.problem.title, "Device Revoked");
        // Messages to @alice now reach the phone only.
        await settle();
        const seq = bob.msg(toAlice, "after unlink");
        assert.equal((await bob.reply(seq)).type, FrameType.Ack);
        await settle();
        assert.deepEqual(copies(phone, "after unlink"), [{ sender: bobId, channel: toAlice }]);
        const depth = await storage.relay.depth(laptopId);
        assert.equal(depth.depth, 0, "nothing is queued for the unlinked laptop");
      });
    });
  });
}
