/**
 * The SDK and the chat client against a real in-process relay server (embedded defaults, or
 * Postgres/Redis from COMMUCAT_TEST_PG_DSN / COMMUCAT_TEST_REDIS_URL when set).
 */
import { LocalAdmin } from "../../admin/local.ts";
import assert from "node:assert/strict";
import { LineWatcher, spawnChat } from "../helpers/lines.ts";
import { sdkOptions, startEnvServer } from "../helpers/env_server.ts";
import { join } from "node:path";
import { directChannelId, groupChannelId } from "../../client/channels.ts";
import {
  type Client,
  connect,
  type ConnectOptions,
  type InboundMessage,
} from "../../client/sdk.ts";
import { generateKeypair, type Keypair } from "../../protocol/crypto.ts";
import { bytesToHex } from "../../protocol/hex.ts";
import { setLogLevel } from "../../server/log.ts";

/** Device ids unique to this run, so a shared real database holds no stale queue for them. */
const run = crypto.randomUUID().slice(0, 8);
const dev = (name: string) => `${name}-${run}`;

interface Device {
  id: string;
  keypair: Keypair;
}

function device(name: string): Device {
  return { id: dev(name), keypair: generateKeypair() };
}

/**
 * Takes the next `count` messages from an iterator (bounded by the test's own timeout), passing
 * over the server's PRESENCE notices unless `presence` is set.
 */
async function take(
  it: AsyncIterator<InboundMessage>,
  count: number,
  presence = false,
): Promise<InboundMessage[]> {
  const out: InboundMessage[] = [];
  while (out.length < count) {
    const next = await it.next();
    if (next.done) throw new Error(`iterator ended after ${out.length} of ${count} messages`);
    if (!presence && next.value.kind === "PRESENCE") continue;
    out.push(next.value);
  }
  return out;
}

Deno.test({
  name: "client SDK and chat client through a real relay server",
  sanitizeResources: true,
  sanitizeOps: true,
  async fn(t) {
    setLogLevel("error");
    const relay = await startEnvServer("client-e2e");
    const { config, server, dataDir } = relay;
    const serverKey = bytesToHex(config.crypto.noisePublic);
    const clients: Client[] = [];
    const open = async (d: Device, extra: Partial<ConnectOptions> = {}) => {
      const client = await connect(
        sdkOptions(relay, d.id, d.keypair, { user: { handle: d.id }, ...extra }),
      );
      clients.push(client);
      return client;
    };

    try {
      const alice = device("alice");
      const bob = device("bob");
      const channel = directChannelId(alice.id, bob.id);

      await t.step("two devices talk on a 1:1 channel (XK and IK, v2)", async () => {
        const a = await open(alice, { pattern: "XK" });
        const b = await open(bob, { pattern: "IK" });
        assert.equal(a.protocolVersion, 2);
        assert.equal(b.protocolVersion, 2);
        await a.join(channel, [alice.id, bob.id]);
        await b.join(channel, [bob.id, alice.id]);
        const inbox = b.messages();
        // The server's presence notices: bob, joining, learns alice is online.
        const [here] = await take(inbox, 1, true);
        assert.equal(here.kind, "PRESENCE");
        assert.deepEqual([here.channel, here.peer, here.state], [channel, alice.id, "online"]);
        const ack = await a.send(channel, "hello bob");
        assert.equal(typeof ack.ack, "number");
        const [m] = await take(inbox, 1);
        assert.equal(m.kind, "MSG");
        assert.equal(m.channel, channel);
        assert.equal(m.text(), "hello bob");
        await b.typing(channel);
        const aInbox = a.messages();
        const [typing] = await take(aInbox, 1);
        assert.equal(typing.kind, "TYPING");
        await inbox.return!(); // autoAck of the last message
        // A state set with presence() reaches the peer; closing is seen as going offline.
        await b.presence("away");
        const [away] = await take(aInbox, 1, true);
        assert.deepEqual([away.peer, away.state], [bob.id, "away"]);
        await b.close();
        const [gone] = await take(aInbox, 1, true);
        assert.deepEqual([gone.kind, gone.peer, gone.state], ["PRESENCE", bob.id, "offline"]);
        await aInbox.return!();
        await a.close();
      });

      await t.step(
        "messages sent while the recipient is offline arrive when it returns",
        async () => {
          const a = await open(alice);
          for (const text of ["one", "two", "three"]) await a.send(channel, text);
          const b = await open(bob);
          const inbox = b.messages();
          const got = await take(inbox, 3);
          assert.deepEqual(got.map((m) => m.text()), ["one", "two", "three"]);
          await inbox.return!(); // acknowledges the third; the first two were acked on the way
          // Acknowledged envelopes are gone: after a reconnect only new messages arrive.
          await b.close();
          const b2 = await open(bob);
          await a.send(channel, "four");
          const [next] = await take(b2.messages(), 1);
          assert.equal(next.text(), "four");
          await a.close();
          await b2.close();
        },
      );

      await t.step(
        "unacknowledged frames come back on reconnect, to the same iterator",
        async () => {
          const a = await open(alice);
          const b = await open(bob, { autoAck: false });
          const inbox = b.messages();
          await a.send(channel, "unacked");
          const [first] = await take(inbox, 1);
          assert.equal(first.text(), "unacked");
          await b.reconnect(); // no ACK was sent: the server requeues the frame
          assert.equal(first.stale, true);
          const [again] = await take(inbox, 1);
          assert.equal(again.text(), "unacked");
          again.ack();
          await a.send(channel, "after");
          const [after] = await take(inbox, 1);
          assert.equal(after.text(), "after");
          after.ack();
          await a.close();
          await b.close();
        },
      );

      await t.step("HTTP /connect transport and protocol v1 on loopback", async () => {
        const a = await open(alice, {
          transport: "http",
          url: `http://127.0.0.1:${server.ports.http}/connect`,
        });
        const b = await open(bob, { versions: [1] });
        assert.equal(b.protocolVersion, 1);
        await b.join(channel, [alice.id, bob.id]);
        await a.send(channel, "over http");
        const [m] = await take(b.messages(), 1);
        assert.equal(m.text(), "over http");
        await b.send(channel, "over v1");
        const [r] = await take(a.messages(), 1);
        assert.equal(r.text(), "over v1");
        await a.close();
        await b.close();
      });

      await t.step("groups: create, join by group id, fan-out; a stranger is refused", async () => {
        const carol = device("carol");
        const groupId = `g-${run}`;
        const gchan = groupChannelId(groupId);
        const a = await open(alice);
        const b = await open(bob);
        const c = await open(carol);
        const created = await a.createGroup({ groupId, members: [alice.id, bob.id] });
        assert.equal(created.group_id, groupId);
        await a.join(gchan, [], { groupId });
        await b.join(gchan, [], { groupId });
        await assert.rejects(c.join(gchan, [], { groupId }), (e: unknown) => {
          const err = e as { status: number; fatal: boolean };
          return err.status === 403 && err.fatal === false;
        });
        await a.send(gchan, "hi group");
        const [m] = await take(b.messages(), 1);
        assert.equal(m.text(), "hi group");
        const invited = await a.invite(groupId, carol.id, "member");
        assert.equal(invited.device, carol.id);
        await a.close();
        await b.close();
        await c.close();
      });

      await t.step(
        "the chat client: two processes exchange a line with a delivery receipt",
        async () => {
          const home = join(dataDir, "chat-home");
          const chatAlice = dev("chat-alice");
          const chatBob = dev("chat-bob");
          const chatRelay = { tcpPort: server.ports.tcp, serverKey };
          const spawn = (me: string, peer: string) => spawnChat(chatRelay, me, peer, home);
          const pa = spawn(chatAlice, chatBob);
          const pb = spawn(chatBob, chatAlice);
          const outA = new LineWatcher(pa.stdout);
          const outB = new LineWatcher(pb.stdout);
          const errA = new LineWatcher(pa.stderr);
          const errB = new LineWatcher(pb.stderr);
          const wa = pa.stdin.getWriter();
          const wb = pb.stdin.getWriter();
          let aliceCode = 0;
          try {
            await outA.waitFor(/chatting with/, errA);
            await outB.waitFor(/chatting with/, errB);
            // Each side learns the other is there (whichever started second announced itself).
            await outA.waitFor(new RegExp(`${chatBob} is online`), errA);
            await outB.waitFor(new RegExp(`${chatAlice} is online`), errB);
            await wa.write(new TextEncoder().encode("hello from alice\n"));
            await outB.waitFor(new RegExp(`${chatAlice}: hello from alice`), errB);
            await outA.waitFor(/✓ sent/, errA);
            // The receipt names the message it confirms.
            await outA.waitFor(new RegExp(`✓✓ "hello from alice" delivered to ${chatBob}`), errA);
            // Bob leaves; what Alice sends meanwhile reaches Bob when he comes back.
            await wb.write(new TextEncoder().encode("/quit\n"));
            await outA.waitFor(new RegExp(`${chatBob} went offline`), errA);
            assert.equal((await pb.status).code, 0, errB.text());
            await wa.write(new TextEncoder().encode("while you were away\n"));
            const pb2 = spawn(chatBob, chatAlice);
            const outB2 = new LineWatcher(pb2.stdout);
            const errB2 = new LineWatcher(pb2.stderr);
            const wb2 = pb2.stdin.getWriter();
            try {
              await outB2.waitFor(new RegExp(`${chatAlice}: while you were away`), errB2);
              // The replayed message's receipt reaches Alice: two receipts in all.
              await outA.waitFor(/✓✓ ".*" delivered to /, errA, 2);
            } finally {
              await wb2.close().catch(() => {}); // end of input quits
              assert.equal((await pb2.status).code, 0, errB2.text());
              await Promise.all([outB2.done, errB2.done]);
            }
            // /help lists the commands, one line each.
            await wa.write(new TextEncoder().encode("/help\n"));
            await outA.waitFor(/^\* \/presence STATE +tell the channel your state/, errA);
            await outA.waitFor(/^\* \/invite DEVICE \[admin\|member\] +add a device/, errA);
            // A fatal disconnect (the device is revoked) ends the chat at once, with its input
            // still open: no key press needed.
            await new LocalAdmin({
              storage: server.storage,
              actor: "test",
              reachesServers: true,
            }).revokeDevice(chatAlice);
            assert.equal((await pa.status).code, 1, errA.text());
            await errA.waitFor(/disconnected for good/, errA);
            aliceCode = 1;
          } finally {
            await wb.close().catch(() => {});
            await wa.close().catch(() => {});
            const [sa, sb] = await Promise.all([pa.status, pb.status]);
            await Promise.all([outA.done, outB.done, errA.done, errB.done]);
            assert.equal(sa.code, aliceCode, errA.text());
            assert.equal(sb.code, 0, errB.text());
          }
        },
      );
    } finally {
      for (const c of clients) await c.close();
      await relay.stop();
    }
  },
});
