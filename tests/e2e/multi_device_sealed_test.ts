/**
 * Sealed envelopes in a conversation of users, through a real relay server (embedded defaults,
 * or Postgres/Redis from COMMUCAT_TEST_PG_DSN / COMMUCAT_TEST_REDIS_URL): bob seals to `@alice`,
 * alice's phone makes a pairing code and her laptop pairs with it; bob's next message is sealed
 * to both devices and the laptop is announced to him ("device-added", paired by the phone); the
 * laptop, offline while it was sent, opens it once back (exactly once), the phone's reply reaches
 * bob and, as a sync copy, the laptop; bob's directory shows both keys; the phone unlinks the
 * laptop, which is cut off, cannot connect again, and is no longer sealed to.
 */
import assert from "node:assert/strict";
import { directChannelId, groupChannelId } from "../../client/channels.ts";
import {
  type Client,
  connect,
  type ConnectOptions,
  type InboundMessage,
} from "../../client/sdk.ts";
import type { E2EEvents } from "../../client/e2e.ts";
import { generateKeypair, type Keypair } from "../../protocol/crypto.ts";
import { bytesToHex } from "../../protocol/hex.ts";
import { setLogLevel } from "../../server/log.ts";
import {
  openTestStorage,
  startServer,
  storageKinds,
  testConfig,
} from "../server/helpers/server.ts";

const decoder = new TextDecoder();
const run = crypto.randomUUID().slice(0, 8);

/** The next sealed MSG from an iterator (PRESENCE passed over), with its opened text. */
async function nextSealed(it: AsyncIterator<InboundMessage>): Promise<InboundMessage> {
  for (;;) {
    const next = await it.next();
    if (next.done) throw new Error("the iterator ended");
    if (next.value.kind === "MSG") return next.value;
  }
}

for (const kind of storageKinds()) {
  Deno.test({
    name: `sealed envelopes reach every device of a user; a new device is announced (${kind})`,
    sanitizeResources: true,
    sanitizeOps: true,
    async fn(t) {
      setLogLevel("error");
      const { storage, close } = await openTestStorage(kind);
      const config = testConfig();
      const server = await startServer(config, { storage });
      const serverKey = bytesToHex(config.crypto.noisePublic);
      const clients: Client[] = [];
      const open = async (id: string, keypair: Keypair, extra: Partial<ConnectOptions> = {}) => {
        const client = await connect({
          transport: "tcp",
          host: "127.0.0.1",
          port: server.ports.tcp,
          deviceId: id,
          keypair,
          serverKey,
          keepaliveMs: 0,
          e2e: true,
          ...extra,
        });
        clients.push(client);
        return client;
      };
      const alice = `alice-${run}`, bobUser = `bob-${run}`;
      const phoneId = `alice-phone-${run}`, laptopId = `alice-laptop-${run}`;
      const bobId = `bob-desk-${run}`;
      const phoneKeys = generateKeypair(), laptopKeys = generateKeypair();
      const channel = directChannelId(`@${alice}`, `@${bobUser}`);
      const groupId = `team-${run}`;
      const groupChannel = groupChannelId(groupId);
      try {
        const phone = await open(phoneId, phoneKeys, { user: { handle: alice } });
        const bob = await open(bobId, generateKeypair(), { user: { handle: bobUser } });
        const bobAdded: E2EEvents["device-added"][] = [];
        bob.e2e!.on("device-added", (e) => bobAdded.push(e));
        const phoneAdded: E2EEvents["device-added"][] = [];
        phone.e2e!.on("device-added", (e) => phoneAdded.push(e));
        const aliceId = phone.user!.id;
        const bobUserId = bob.user!.id;

        await t.step("JOIN naming a user: the ACK names the member set of users", async () => {
          const ack = await bob.join(channel, [`@${alice}`]);
          assert.deepEqual(ack.members, [`@${aliceId}`, `@${bobUserId}`].sort());
          await phone.join(channel, [`@${bobUser}`]);
          assert.deepEqual(phone.conversationOf(channel)?.members, ack.members);
          // A user of another domain is refused, named so; an unknown user too.
          await assert.rejects(
            bob.join(4242, ["@carol@other.example"]),
            (e: Error & { title?: string; status?: number }) =>
              e.title === "Remote User Not Addressable" && e.status === 400,
          );
          await assert.rejects(
            bob.join(4242, [`@nobody-${run}`]),
            (e: Error & { title?: string; status?: number }) =>
              e.title === "Join Rejected" && e.status === 404,
          );
        });

        await t.step(
          "a group roster holds a user: GROUP_CREATE and GROUP_INVITE name @alice",
          async () => {
            const created = await bob.createGroup({ groupId, members: [`@${alice}`] });
            assert.equal(created.group_id, groupId);
            // Inviting the user again names the roster entry, the user id.
            const invited = await bob.invite(groupId, `@${alice}`, "member");
            assert.equal(invited.device, `@${aliceId}`);
            await bob.join(groupChannel, [], { groupId });
            await phone.join(groupChannel, [], { groupId });
            await assert.rejects(
              bob.invite(groupId, `@nobody-${run}`),
              (e: Error & { title?: string; status?: number }) =>
                e.title === "Unknown User" && e.status === 404,
            );
          },
        );

        const phoneInbox = phone.messages();
        await t.step("bob seals to @alice: her one device opens it", async () => {
          const sent = await bob.sendSealed(channel, "one device");
          assert.deepEqual(sent.recipients, [phoneId]);
          assert.deepEqual(sent.conversation, {
            kind: "members",
            members: [`@${aliceId}`, `@${bobUserId}`].sort(),
          });
          const m = await nextSealed(phoneInbox);
          assert.equal(m.e2eError, null, String(m.e2eError?.message));
          assert.equal(decoder.decode(m.plaintext!), "one device");
          assert.equal(m.sender, bobId);
          assert.equal(bobAdded.length, 0, "first contact pins silently");
        });

        await t.step(
          "the laptop pairs; bob's next message is sealed to it and it is announced",
          async () => {
            const { code } = await phone.pairCode();
            const laptop = await open(laptopId, laptopKeys, {
              user: { handle: alice },
              pairingCode: String(code),
            });
            assert.equal(laptop.user!.id, aliceId);
            await laptop.close(); // offline while bob writes
            const sent = await bob.sendSealed(channel, "two devices");
            assert.deepEqual([...sent.recipients].sort(), [laptopId, phoneId].sort());
            assert.equal(bobAdded.length, 1);
            assert.equal(bobAdded[0].device, laptopId);
            assert.equal(bobAdded[0].user, aliceId);
            assert.equal(bobAdded[0].handle, alice);
            assert.equal(bobAdded[0].pairedBy, phoneId);
            assert.equal(bobAdded[0].own, false);
            assert.equal(bytesToHex(bobAdded[0].key), bytesToHex(laptopKeys.publicKey));
            const m = await nextSealed(phoneInbox);
            assert.equal(decoder.decode(m.plaintext!), "two devices");
          },
        );

        await t.step(
          "the laptop, back, opens it exactly once; the phone's reply syncs to it",
          async () => {
            const laptop = await open(laptopId, laptopKeys, { user: { handle: alice } });
            const laptopAdded: string[] = [];
            laptop.e2e!.on("device-added", (e) => laptopAdded.push(e.device));
            const inbox = laptop.messages();
            const m = await nextSealed(inbox);
            assert.equal(m.e2eError, null, String(m.e2eError?.message));
            assert.equal(decoder.decode(m.plaintext!), "two devices");
            assert.equal(m.sender, bobId);
            // The phone replies: bob and the laptop (a sync copy) open it; the phone announces its
            // user's new device to itself.
            const bobInbox = bob.messages();
            const reply = await phone.sendSealed(channel, "reply from the phone");
            assert.deepEqual([...reply.recipients].sort(), [bobId, laptopId].sort());
            assert.deepEqual(phoneAdded.map((e) => [e.device, e.own]), [[laptopId, true]]);
            const atBob = await nextSealed(bobInbox);
            assert.equal(decoder.decode(atBob.plaintext!), "reply from the phone");
            const sync = await nextSealed(inbox);
            assert.equal(sync.e2eError, null, String(sync.e2eError?.message));
            assert.equal(sync.sender, phoneId);
            assert.equal(decoder.decode(sync.plaintext!), "reply from the phone");
            assert.deepEqual(laptopAdded, [], "an older sibling is not announced as new");
            // Exactly once: a reconnect brings nothing more (everything was acknowledged).
            await inbox.return!();
            await laptop.reconnect();
            await laptop.join(channel, [`@${bobUser}`]);
            const marker = await bob.sendSealed(channel, "marker");
            const after = laptop.messages();
            const next = await nextSealed(after);
            assert.equal(decoder.decode(next.plaintext!), "marker", "no copy came twice");
            await after.return!();
            await bobInbox.return!();
            assert.equal(marker.recipients.length, 2);
          },
        );

        await t.step("bob sees both devices' keys in the directory", async () => {
          const found = await bob.e2e!.lookupUsers([`@${alice}`]);
          assert.deepEqual(
            [...(found.users.get(aliceId) ?? [])].sort(),
            [laptopId, phoneId].sort(),
          );
          assert.equal(
            bytesToHex(found.entries.get(laptopId)!.key),
            bytesToHex(laptopKeys.publicKey),
          );
          assert.equal(
            bytesToHex(found.entries.get(phoneId)!.key),
            bytesToHex(phoneKeys.publicKey),
          );
        });

        await t.step(
          "the device paired later is in the group too: it joins, gets its messages",
          async () => {
            const laptop = clients.filter((c) => c.deviceId === laptopId).at(-1)!;
            await laptop.join(groupChannel, [], { groupId });
            const inbox = laptop.messages();
            const sent = await bob.sendSealed(groupChannel, "to the team");
            assert.deepEqual([...sent.recipients].sort(), [laptopId, phoneId].sort());
            const m = await nextSealed(inbox);
            assert.equal(m.e2eError, null, String(m.e2eError?.message));
            assert.equal(decoder.decode(m.plaintext!), "to the team");
            await inbox.return!();
          },
        );

        await t.step(
          "the phone unlinks the laptop: cut off, refused, no longer sealed to",
          async () => {
            const laptop = clients.filter((c) => c.deviceId === laptopId).at(-1)!;
            await phone.unlink(laptopId);
            const why = await laptop.closed;
            assert.equal(why?.title, "Device Revoked");
            await assert.rejects(
              open(laptopId, laptopKeys, { user: { handle: alice } }),
              (e: Error & { title?: string }) => e.title === "Device Revoked",
            );
            const sent = await bob.sendSealed(channel, "phone only again");
            assert.deepEqual(sent.recipients, [phoneId]);
            assert.equal(decoder.decode((await nextSealed(phoneInbox)).plaintext!), "marker");
            assert.equal(decoder.decode((await nextSealed(phoneInbox)).plaintext!), "to the team");
            const m = await nextSealed(phoneInbox);
            assert.equal(m.e2eError, null, String(m.e2eError?.message));
            assert.equal(decoder.decode(m.plaintext!), "phone only again");
          },
        );
        await phoneInbox.return!();
      } finally {
        for (const c of clients) await c.close();
        await server.stop();
        await close();
      }
    },
  });
}
