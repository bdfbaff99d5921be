/**
 * Conversations only their members enter, senders the server vouches for, keys only their owners
 * change (ccp1.md §4.1, §4.2, §4.4) — tried the way an attacker on loopback would, on the
 * embedded defaults always and on Postgres + Redis when the environment names them.
 */
import assert from "node:assert/strict";
import { type Frame, FrameType } from "../../protocol/frame.ts";
import { generateKeypair } from "../../protocol/crypto.ts";
import { bytesToHex } from "../../protocol/hex.ts";
import { writeOneWayX } from "../../protocol/noise.ts";
import { senderPrefix, splitSender } from "../../protocol/sender.ts";
import { ROTATE_KEY_PROLOGUE } from "../../server/requests/rotate_key.ts";
import { directChannelId } from "../../client/channels.ts";
import { connect as sdkConnect } from "../../client/sdk.ts";
import "../../client/transport_deno.ts";
import {
  type ClientOptions,
  clientOptions,
  HandshakeRefused,
  TestClient,
} from "../server/helpers/client.ts";
import {
  openTestStorage,
  realServices,
  type ServerHandle,
  startServer,
  storageKinds,
  testConfig,
  uid,
  waitFor,
} from "../server/helpers/server.ts";

const text = (f: Frame) => new TextDecoder().decode(f.payload);
const problemOf = (f: Frame) => f.json as Record<string, unknown>;
const SENDER = { capabilities: ["sender"] };

/** Waits a little and returns the MSG frames a client received. */
async function settledMessages(c: TestClient, ms = 300): Promise<Frame[]> {
  await new Promise((r) => setTimeout(r, ms));
  return c.received.filter((f) => f.type === FrameType.Msg);
}

for (const kind of storageKinds()) {
  const label = kind === "real" ? "Postgres + Redis" : "PGlite + memory";

  Deno.test({
    name: `conversations, senders and keys resist an attacker (${label})`,
    sanitizeResources: true,
    sanitizeOps: true,
  }, async (t) => {
    const { storage, close } = await openTestStorage(kind);
    const config = testConfig({
      limits: { maxConversationsPerDevice: 8, maxMembersPerJoin: 16 },
    });
    let server: ServerHandle = await startServer(config, { storage });
    const clients: TestClient[] = [];
    const connect = async (id: string, extra: Partial<ClientOptions> = {}) => {
      const c = await TestClient.connect(
        clientOptions(server, config, id, { ...SENDER, ...extra }),
      );
      clients.push(c);
      return c;
    };
    try {
      await t.step(
        "a device that pre-claims a pair's channel id receives nothing of theirs",
        async () => {
          const [aId, bId, mId] = [uid("alice"), uid("bob"), uid("mallory")];
          const ch = directChannelId(aId, bId);
          const mallory = await connect(mId);
          // Mallory JOINs first, listing the pair, on the id their SDK will derive.
          assert.equal((await mallory.join(ch, [mId, aId, bId])).type, FrameType.Ack);
          const alice = await connect(aId);
          const bob = await connect(bId);
          assert.equal((await alice.join(ch, [aId, bId])).type, FrameType.Ack);
          assert.equal((await bob.join(ch, [bId, aId])).type, FrameType.Ack);
          const s = alice.msg(ch, "for bob only");
          assert.equal((await alice.reply(s)).type, FrameType.Ack);
          const got = await bob.nextOfType(FrameType.Msg);
          assert.equal(splitSender(got.payload).sender, aId);
          assert.equal(new TextDecoder().decode(splitSender(got.payload).payload), "for bob only");
          // Mallory's own conversation is a different one: her frames reach the pair, but as hers,
          // and she receives none of theirs.
          assert.deepEqual(await settledMessages(mallory), []);
        },
      );

      await t.step("unrelated pairs on one channel id each reach only their peer", async () => {
        const [a, b, c, d] = await Promise.all(
          ["p1a", "p1b", "p2c", "p2d"].map((n) => connect(uid(n))),
        );
        const ch = 7;
        const id = (x: TestClient) => x.options.deviceId;
        for (const [x, y] of [[a, b], [b, a], [c, d], [d, c]]) {
          assert.equal((await x.join(ch, [id(y)])).type, FrameType.Ack);
        }
        await a.reply(a.msg(ch, "a to b"));
        await c.reply(c.msg(ch, "c to d"));
        assert.deepEqual(
          (await settledMessages(b)).map((f) =>
            new TextDecoder().decode(splitSender(f.payload).payload)
          ),
          ["a to b"],
        );
        assert.deepEqual(
          (await settledMessages(d)).map((f) =>
            new TextDecoder().decode(splitSender(f.payload).payload)
          ),
          ["c to d"],
        );
        assert.deepEqual(await settledMessages(a), []);
        assert.deepEqual(await settledMessages(c), []);
        // Binding a used id to another conversation is refused, naming the rule.
        const again = a.control(FrameType.Join, ch, { members: [id(c)] });
        const err = await a.reply(again);
        assert.equal(problemOf(err).title, "Join Rejected");
        assert.equal(problemOf(err).status, 409);
        assert.equal(problemOf(err).fatal, false);
      });

      await t.step("no member can make a frame appear to come from another device", async () => {
        const [aId, bId, mId] = [uid("va"), uid("vb"), uid("vm")];
        const alice = await connect(aId);
        const bob = await connect(bId);
        const mallory = await connect(mId);
        const members = [aId, bId, mId];
        for (const c of [alice, bob, mallory]) await c.join(31, members);
        // Mallory forges a stamp naming alice inside her payload, and a JSON "sender".
        const forged = new Uint8Array([...senderPrefix(aId), ...new TextEncoder().encode("hi")]);
        await mallory.reply(mallory.opaque(FrameType.Msg, 31, forged));
        const got = await bob.nextOfType(FrameType.Msg);
        const outer = splitSender(got.payload);
        assert.equal(outer.sender, mId);
        assert.deepEqual([...outer.payload], [...forged]);
        await mallory.reply(mallory.control(FrameType.Typing, 31, { typing: true, sender: aId }));
        const typing = await bob.nextOfType(FrameType.Typing);
        assert.equal((typing.json as Record<string, unknown>).sender, mId);
        // A device without the capability gets the original bytes.
        const plain = await connect(uid("plain"), { capabilities: [] });
        assert.deepEqual(plain.granted, []);
        assert.deepEqual(bob.granted, ["sender"]);
        await alice.join(32, [plain.options.deviceId]);
        await alice.reply(alice.msg(32, "unstamped"));
        assert.equal(text(await plain.nextOfType(FrameType.Msg)), "unstamped");
      });

      await t.step("GROUP_CREATE cannot rewrite a roster", async () => {
        const owner = await connect(uid("gown"));
        const intruder = await connect(uid("gint"));
        const groupId = uid("grp");
        const member = uid("gmem");
        const create = owner.control(FrameType.GroupCreate, 40, {
          group_id: groupId,
          members: [member],
          relay: true,
        });
        assert.deepEqual((await owner.reply(create)).json, { ack: create, group_id: groupId });
        const takeover = intruder.control(FrameType.GroupCreate, 41, {
          group_id: groupId,
          members: [intruder.options.deviceId],
          relay: true,
        });
        const err = await intruder.reply(takeover);
        assert.equal(problemOf(err).status, 409);
        assert.equal(problemOf(err).fatal, false);
        const roster = (await storage.groups.roster(groupId)).map((m) => m.deviceId).sort();
        assert.deepEqual(roster, [owner.options.deviceId, member].sort());
        assert.equal(await storage.groups.role(groupId, owner.options.deviceId), "owner");
        // The intruder's group JOIN is refused too.
        const j = intruder.control(FrameType.Join, 42, { group_id: groupId });
        assert.equal(problemOf(await intruder.reply(j)).title, "Join Rejected");
      });

      await t.step("bad JOINs and LEAVEs get clear non-fatal refusals", async () => {
        const c = await connect(uid("bad"));
        const cases: [unknown, string, number][] = [
          [{ members: Array.from({ length: 20 }, (_, i) => `m${i}`) }, "Too Many Members", 413],
          [
            { members: Array.from({ length: 10_000 }, (_, i) => `m${i}`) },
            "Invalid Control Payload",
            400,
          ],
          [{ members: ["dup", "dup"] }, "Join Rejected", 400],
          [{ members: ["dup", "dup@test.commucat"] }, "Join Rejected", 400],
          [{ members: ["not a device id!"] }, "Invalid Control Payload", 400],
        ];
        for (const [payload, title, status] of cases) {
          const seq = c.control(FrameType.Join, 50, payload);
          const err = await c.reply(seq);
          assert.equal(problemOf(err).title, title, JSON.stringify(payload).slice(0, 60));
          assert.equal(problemOf(err).status, status);
          assert.equal(problemOf(err).fatal, false);
        }
        const leave = c.control(FrameType.Leave, 51, {});
        assert.equal(problemOf(await c.reply(leave)).title, "Unknown Channel");
        // Over the conversation limit (8 here): refused 429, the first 8 stay bound.
        for (let i = 0; i < 8; i++) {
          assert.equal((await c.join(100 + i, [`peer-${i}`])).type, FrameType.Ack);
        }
        const over = c.control(FrameType.Join, 200, { members: ["peer-x"] });
        const err = await c.reply(over);
        assert.equal(problemOf(err).title, "Too Many Conversations");
        assert.equal(problemOf(err).status, 429);
        assert.equal((await storage.ephemeral.bindings(c.options.deviceId)).size, 8);
        // Still served: a LEAVE frees a place.
        await c.reply(c.control(FrameType.Leave, 100, {}));
        assert.equal((await c.join(200, ["peer-x"])).type, FrameType.Ack);
      });

      await t.step(
        "a takeover under auto-approve is refused; the victim keeps its queue",
        async () => {
          const victimId = uid("victim");
          const victimKeys = generateKeypair();
          const sender = await connect(uid("sender"));
          const first = await connect(victimId, { keypair: victimKeys });
          await first.close();
          await sender.join(60, [victimId]);
          await sender.reply(sender.msg(60, "queued for the victim"));
          await waitFor(async () => (await storage.relay.depth(victimId)).depth === 1);
          // The attacker knows the id and connects with its own key.
          await assert.rejects(
            TestClient.connect(
              clientOptions(server, config, victimId, { keypair: generateKeypair() }),
            ),
            (e: unknown) =>
              e instanceof HandshakeRefused && e.problem.title === "Device Pending Approval",
          );
          // A new device naming the victim's user waits for an operator too.
          await assert.rejects(
            TestClient.connect({
              ...clientOptions(server, config, uid("sneak")),
              user: { handle: victimId },
            }),
            (e: unknown) =>
              e instanceof HandshakeRefused && e.problem.title === "Device Pending Approval",
          );
          assert.equal((await storage.relay.depth(victimId)).depth, 1);
          const back = await connect(victimId, { keypair: victimKeys });
          const got = await back.nextOfType(FrameType.Msg);
          assert.equal(
            new TextDecoder().decode(splitSender(got.payload).payload),
            "queued for the victim",
          );
        },
      );

      await t.step("a device rotates its own key with proof and keeps its queue", async () => {
        const id = uid("rotor");
        const oldKeys = generateKeypair();
        const newKeys = generateKeypair();
        const c = await connect(id, { keypair: oldKeys });
        const request = (fields: Record<string, unknown>) =>
          c.reply(c.opaque(
            FrameType.KeyUpdate,
            0,
            new TextEncoder().encode(JSON.stringify({ op: "rotate_key", ...fields })),
          ));
        const proofFor = (keys: typeof newKeys, session: string) =>
          bytesToHex(writeOneWayX({
            sender: keys,
            recipient: config.crypto.noisePublic,
            prologue: new TextEncoder().encode(ROTATE_KEY_PROLOGUE),
            payload: new TextEncoder().encode(session),
          }));
        // Without valid proof: refused, non-fatal, nothing changes.
        for (
          const fields of [
            { client_static: bytesToHex(newKeys.publicKey), proof: "00" },
            {
              client_static: bytesToHex(newKeys.publicKey),
              proof: proofFor(generateKeypair(), c.session),
            },
            {
              client_static: bytesToHex(newKeys.publicKey),
              proof: proofFor(newKeys, "another-session"),
            },
            { client_static: "zz", proof: "00" },
          ]
        ) {
          const err = await request(fields);
          assert.equal(err.type, FrameType.Error, JSON.stringify(fields).slice(0, 80));
          assert.equal(problemOf(err).fatal, false);
        }
        assert.deepEqual((await storage.devices.get(id))!.publicKey, oldKeys.publicKey);
        assert.ok(server.node.devices.get(id, oldKeys.publicKey), "the old key is cached");
        const ok = await request({
          client_static: bytesToHex(newKeys.publicKey),
          proof: proofFor(newKeys, c.session),
        });
        assert.equal(ok.type, FrameType.Ack);
        assert.equal((ok.json as Record<string, unknown>).op, "rotate_key");
        assert.deepEqual((await storage.devices.get(id))!.publicKey, newKeys.publicKey);
        // Every node forgets the old key (a session of it is not even attached any more).
        await waitFor(() => server.node.devices.get(id, oldKeys.publicKey) === null);
        const events = await storage.keyEvents.export(id);
        assert.equal(events.at(-1)?.kind, "rotated");
        assert.equal(events.at(-1)?.actor, `device:${id}`);
        await c.close();
        // Queued while away; the device comes back with its new key and gets it.
        const sender = await connect(uid("rsender"));
        await sender.join(70, [id]);
        await sender.reply(sender.msg(70, "after the rotation"));
        await assert.rejects(
          TestClient.connect(clientOptions(server, config, id, { keypair: oldKeys })),
          HandshakeRefused,
        );
        const back = await connect(id, { keypair: newKeys });
        const got = await back.nextOfType(FrameType.Msg);
        assert.equal(
          new TextDecoder().decode(splitSender(got.payload).payload),
          "after the rotation",
        );
      });

      await t.step("the SDK rotates its key and reconnects with the new one", async () => {
        const id = uid("sdk-rotor");
        const original = generateKeypair();
        const sdk = await sdkConnect({
          deviceId: id,
          keypair: original,
          serverKey: config.crypto.noisePublic,
          port: server.ports.tcp,
          keepaliveMs: 0,
        });
        try {
          const fresh = await sdk.rotateKey();
          assert.deepEqual((await storage.devices.get(id))!.publicKey, fresh.publicKey);
          await sdk.reconnect();
          assert.ok(sdk.connected);
          // The old key is no longer this device's.
          await assert.rejects(
            TestClient.connect(clientOptions(server, config, id, { keypair: original })),
            HandshakeRefused,
          );
        } finally {
          await sdk.close();
        }
      });

      await t.step(
        "a node started later, or restarted, serves existing conversations",
        async () => {
          const [aId, bId] = [uid("la"), uid("lb")];
          const alice = await connect(aId);
          const bob = await connect(bId);
          await alice.join(80, [bId]);
          await bob.join(80, [aId]);
          await alice.close();
          await bob.close();
          // A second node, started after the conversation was made (same storage, same key).
          const cfg2 = testConfig();
          cfg2.crypto = config.crypto;
          const late = await startServer(cfg2, { storage });
          try {
            const b2 = await TestClient.connect(clientOptions(late, cfg2, bId, SENDER));
            clients.push(b2);
            // The first node restarts: nobody JOINs again.
            await server.stop();
            server = await startServer(config, { storage });
            const a2 = await connect(aId);
            await a2.reply(a2.msg(80, "no JOIN needed"));
            assert.equal(
              new TextDecoder().decode(
                splitSender((await b2.nextOfType(FrameType.Msg)).payload).payload,
              ),
              "no JOIN needed",
            );
            await b2.reply(b2.msg(80, "nor here"));
            assert.equal(
              new TextDecoder().decode(
                splitSender((await a2.nextOfType(FrameType.Msg)).payload).payload,
              ),
              "nor here",
            );
          } finally {
            await late.stop();
          }
        },
      );
    } finally {
      for (const c of clients) await c.close();
      await server.stop();
      await close();
    }
  });
}

if (realServices() === null) {
  Deno.test({
    name: "conversations, senders and keys resist an attacker (Postgres + Redis)",
    ignore: true,
    fn() {},
  });
}
