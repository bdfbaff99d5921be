/**
 * Federation end to end: two relay servers with different domains (a.test, b.test), each on its
 * own embedded database, configured as static peers of each other over loopback HTTP. A client
 * on a.test sends to `bob@b.test`; bob receives the same bytes live, and after a reconnect when
 * he was offline; a blocked peer is refused with a non-fatal ERROR.
 *
 * Embedded storage only: two domains never share one database (each signs its own outbox), and
 * the federation code's own tests cover Postgres.
 */
import assert from "node:assert/strict";
import { pair } from "../helpers/domains.ts";
import { freePort } from "../helpers/wait.ts";
import { type Frame, FrameType } from "../../protocol/frame.ts";
import { generateKeypair } from "../../protocol/crypto.ts";
import type { Config } from "../../server/config/mod.ts";
import { clientOptions, TestClient } from "../server/helpers/client.ts";
import {
  LogCapture,
  openTestStorage,
  type ServerHandle,
  startServer,
  testConfig,
  uid,
  waitFor,
} from "../server/helpers/server.ts";

function domainConfig(domain: string, httpPort: number): Config {
  return testConfig({ server: { domain, bind: { hostname: "127.0.0.1", port: httpPort } } });
}

const problemOf = (f: Frame) => f.json as Record<string, unknown>;

Deno.test({
  name: "federation: a.test and b.test deliver to each other's devices over loopback HTTP",
  sanitizeResources: true,
  sanitizeOps: true,
}, async (t) => {
  const logs = new LogCapture().start();
  const cfgA = domainConfig("a.test", freePort());
  const cfgB = domainConfig("b.test", freePort());
  pair(cfgA, cfgB);
  pair(cfgB, cfgA);
  const storeA = await openTestStorage("embedded");
  const storeB = await openTestStorage("embedded");
  const fastWorker = { pollIntervalMs: 100 };
  const serverA = await startServer(cfgA, { storage: storeA.storage, federation: fastWorker });
  const serverB = await startServer(cfgB, { storage: storeB.storage, federation: fastWorker });
  const clients: TestClient[] = [];
  const connect = async (server: ServerHandle, config: Config, id: string, extra = {}) => {
    const client = await TestClient.connect(clientOptions(server, config, id, extra));
    clients.push(client);
    return client;
  };
  try {
    const aliceId = uid("alice");
    const bobId = uid("bob");
    const bobKeys = generateKeypair();
    const alice = await connect(serverA, cfgA, aliceId);
    let bob = await connect(serverB, cfgB, bobId, { keypair: bobKeys });
    const channel = 7;
    const bobRemote = `${bobId}@b.test`;

    await t.step("a live recipient on b.test receives the exact bytes", async () => {
      const joined = await alice.join(channel, [bobRemote]);
      assert.equal(joined.type, FrameType.Ack);
      const payload = crypto.getRandomValues(new Uint8Array(300));
      const seq = alice.opaque(FrameType.Msg, channel, payload);
      const ack = await alice.reply(seq);
      assert.equal(ack.type, FrameType.Ack, JSON.stringify(ack.json));
      const got = await bob.nextOfType(FrameType.Msg, 10_000);
      assert.equal(got.channel, channel);
      assert.deepEqual([...got.payload], [...payload]);
      // Logged once per event by the federation service (no second line from the relay).
      const queued = logs.lines.filter((l) =>
        l.msg === "federation event queued" && l.target === bobRemote
      );
      assert.equal(queued.length, 1);
      assert.ok(logs.has("federation event accepted"));
    });

    await t.step("an offline recipient gets the frame when it reconnects", async () => {
      await bob.close();
      await waitFor(() => serverB.node.localConnection(bobId) === undefined);
      const seq = alice.msg(channel, "while bob was away");
      assert.equal((await alice.reply(seq)).type, FrameType.Ack);
      // The peer accepted it into bob's relay queue.
      await waitFor(async () => (await storeB.storage.relay.depth(bobId)).depth === 1, 10_000);
      bob = await connect(serverB, cfgB, bobId, { keypair: bobKeys });
      const got = await bob.nextOfType(FrameType.Msg, 10_000);
      assert.equal(new TextDecoder().decode(got.payload), "while bob was away");
      await waitFor(async () => (await storeB.storage.relay.depth(bobId)).depth === 0);
    });

    await t.step("a blocked peer is refused with a non-fatal ERROR", async () => {
      await storeA.storage.peers.upsert({
        domain: "c.test",
        endpoint: "http://127.0.0.1:9/federation/events",
        publicKey: crypto.getRandomValues(new Uint8Array(32)),
        status: "blocked",
      }, "test");
      const carolChannel = 8;
      assert.equal((await alice.join(carolChannel, ["carol@c.test"])).type, FrameType.Ack);
      const seq = alice.msg(carolChannel, "to a blocked domain");
      const err = await alice.reply(seq);
      assert.equal(err.type, FrameType.Error);
      assert.equal(problemOf(err).title, "federation peer not allowed");
      assert.equal(problemOf(err).status, 403);
      assert.equal(problemOf(err).fatal, false);
      // The connection stays open and keeps working.
      const again = alice.msg(channel, "still here");
      assert.equal((await alice.reply(again)).type, FrameType.Ack);
      const got = await bob.nextOfType(FrameType.Msg, 10_000);
      assert.equal(new TextDecoder().decode(got.payload), "still here");
    });
  } finally {
    for (const c of clients) await c.close();
    await serverA.stop();
    await serverB.stop();
    await storeA.close();
    await storeB.close();
    logs.stop();
  }
});
