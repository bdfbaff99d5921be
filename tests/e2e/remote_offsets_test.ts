/**
 * inbox_offset across domains: two relay servers (a.test, b.test) paired over loopback HTTP.
 * When bob@b.test acknowledges frames alice@a.test sent him, b.test reports it to a.test as a
 * signed offset event through its outbox; a.test records the remote offset and queues a
 * receipt for alice's device, which the SDK surfaces (`client.on("receipt")`,
 * `client.delivered(id)`) — live when she is online, on her next connection when she is not.
 * Forged, unknown, foreign and replayed reports are refused and change nothing.
 *
 * Runs on PGlite + memory (each domain its own database), and on Postgres + Redis when
 * COMMUCAT_TEST_PG_DSN and COMMUCAT_TEST_REDIS_URL are set (each domain its own scratch schema
 * and Redis key prefix).
 */
import assert from "node:assert/strict";
import { bytesToHex } from "@noble/hashes/utils.js";
import type { DeliveryReceipt } from "../../client/sdk.ts";
import { generateKeypair, type Keypair } from "../../protocol/crypto.ts";
import {
  type FederationEvent,
  federationKeypair,
  signEvent,
  toRfc3339,
} from "../../protocol/federation.ts";
import type { Config } from "../../server/config/mod.ts";
import { offsetFrame } from "../../server/federation/offsets.ts";
import { type Db } from "../../storage/mod.ts";
import { LogCapture, type ServerHandle, uid, waitFor } from "../server/helpers/server.ts";
import { type Domain, domainTests, pairedConfigs, runDomains } from "../helpers/domains.ts";

/** The outbox rows a.test marked acknowledged by its peer. */
async function ackedOnOrigin(db: Db): Promise<number> {
  const res = await db.query<{ n: string }>(
    `SELECT count(*) AS n FROM federation_outbox WHERE remote_acked_at IS NOT NULL`,
  );
  return Number(res.rows[0].n);
}

async function scenario(makeDomain: () => Promise<Domain>) {
  const logs = new LogCapture().start();
  const [cfgA, cfgB] = pairedConfigs();
  const running = await runDomains(cfgA, cfgB, makeDomain);
  const { a, serverA, serverB } = running;
  const open = (server: ServerHandle, config: Config, deviceId: string, keypair: Keypair) =>
    running.open(server, config, deviceId, keypair, { autoAck: false });
  const inboundA = `http://127.0.0.1:${cfgA.server.bind.port}/federation/events`;
  const secretB = federationKeypair(cfgB.crypto.federationSeed).secretKey;
  /** POSTs an offset report to a.test as b.test would (signed with `secret`). */
  const report = async (
    fields: { sender: string; target: string; channel: number; ids: string[] },
    secret = secretB,
    eventId: string = crypto.randomUUID(),
  ) => {
    const event: FederationEvent = {
      event_id: eventId,
      origin: "b.test",
      scope: "a.test",
      created_at: toRfc3339(new Date()),
      payload: {
        channel: fields.channel,
        sequence: 0,
        payload: bytesToHex(offsetFrame(fields.channel, fields.ids, new Date())),
        sender: fields.sender,
        target: fields.target,
      },
    };
    const res = await fetch(inboundA, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ event, signature: bytesToHex(signEvent(event, secret)) }),
    });
    const body = await res.json();
    return { status: res.status, body, eventId };
  };

  try {
    const aliceId = uid("alice");
    const bobId = uid("bob");
    const aliceKeys = generateKeypair();
    const bobKeys = generateKeypair();
    const bobRemote = `${bobId}@b.test`;
    const channel = 7;
    let alice = await open(serverA, cfgA, aliceId, aliceKeys);
    const bob = await open(serverB, cfgB, bobId, bobKeys);
    const receipts: DeliveryReceipt[][] = [];
    alice.on("receipt", (r) => receipts.push(r.delivered));
    await alice.join(channel, [aliceId, bobRemote]);
    const inbox = bob.messages();

    // Live: alice's ACK names the remote copy; bob's ACK comes back to her as a receipt.
    const ack = await alice.send(channel, "hello b");
    assert.equal(ack.remote?.length, 1, JSON.stringify(ack));
    assert.equal(ack.remote![0].recipient, bobRemote);
    const copy = ack.remote![0].id;
    const first = (await inbox.next()).value!;
    assert.equal(first.text(), "hello b");
    assert.equal(first.sender, `${aliceId}@a.test`);
    assert.equal(receipts.length, 0, "no receipt before the recipient acknowledged");
    first.ack();
    const receipt = await alice.delivered(copy, { timeoutMs: 20_000 });
    assert.equal(receipt.recipient, bobRemote);
    assert.equal(receipt.channel, channel);
    assert.ok(receipt.ackedAt.getTime() <= Date.now());
    await waitFor(() => receipts.length === 1, 20_000);
    assert.deepEqual(receipts[0].map((r) => r.id), [copy]);
    await waitFor(() => logs.has("federation offsets queued", { peer: "a.test" }), 20_000);
    // Logged once the answer is ready, which may be after the receipt reached alice.
    await waitFor(() => logs.has("federation offsets accepted", { origin: "b.test" }), 20_000);
    const offsets = await a.storage.remoteOffsets.list({ peerDomain: "b.test" });
    assert.deepEqual(
      offsets.map((o) => [o.entityId, o.channelId, o.lastEventId, o.ackedFrames]),
      [[bobRemote.toLowerCase(), channel, copy, 1]],
    );
    // The SDK acknowledged the receipt: nothing stays queued for alice.
    await waitFor(async () => (await a.storage.relay.depth(aliceId)).depth === 0, 20_000);

    // Offline sender: two frames, bob acknowledges after alice left; her receipts wait in her
    // queue (batched: one report, one receipt frame) and reach her on her next connection.
    const second = await alice.send(channel, "two");
    const third = await alice.send(channel, "three");
    const got = [(await inbox.next()).value!, (await inbox.next()).value!];
    assert.deepEqual(got.map((m) => m.text()), ["two", "three"]);
    await alice.close();
    await waitFor(() => serverA.node.localConnection(aliceId) === undefined, 20_000);
    bob.ack(got[1].sequence);
    bob.ack(got[0].sequence);
    await waitFor(async () => (await a.storage.relay.depth(aliceId)).depth >= 1, 20_000);
    alice = await open(serverA, cfgA, aliceId, aliceKeys);
    // Receipts that arrived before anyone listened are handed to the first listener.
    const offline: DeliveryReceipt[][] = [];
    alice.on("receipt", (r) => offline.push(r.delivered));
    const later = await Promise.all([
      alice.delivered(second.remote![0].id, { timeoutMs: 20_000 }),
      alice.delivered(third.remote![0].id, { timeoutMs: 20_000 }),
    ]);
    assert.deepEqual(later.map((r) => r.recipient), [bobRemote, bobRemote]);
    await waitFor(() => offline.flat().length === 2, 20_000);
    assert.deepEqual(
      offline.flat().map((r) => r.id).sort(),
      [second.remote![0].id, third.remote![0].id].sort(),
    );
    receipts.length = 0;
    alice.on("receipt", (r) => receipts.push(r.delivered));
    await waitFor(async () => (await a.storage.relay.depth(aliceId)).depth === 0, 20_000);
    const after = await a.storage.remoteOffsets.list({ peerDomain: "b.test" });
    assert.equal(after[0].ackedFrames, 3);
    assert.equal(await ackedOnOrigin(a.db), 3);

    // Bad input, POSTed to a.test's endpoint as b.test: refused, and nothing changes.
    // A fourth frame bob has not acknowledged (he never will, in this test).
    const fourth = await alice.send(channel, "four");
    const pendingId = fourth.remote![0].id;
    await (await inbox.next()).value;
    const before = JSON.stringify(await a.storage.remoteOffsets.list());
    const valid = { sender: bobRemote, target: aliceId, channel, ids: [pendingId] };

    const forged = await report(valid, crypto.getRandomValues(new Uint8Array(32)));
    assert.equal(forged.status, 401);
    assert.equal(forged.body.title, "invalid signature");

    const unknown = await report({ ...valid, ids: [pendingId, crypto.randomUUID()] });
    assert.equal(unknown.status, 400);
    assert.equal(unknown.body.title, "invalid offset");

    const wrongDevice = await report({ ...valid, sender: `${uid("carol")}@b.test` });
    assert.equal(wrongDevice.status, 400);
    assert.equal(wrongDevice.body.title, "invalid offset");

    const wrongSender = await report({ ...valid, target: uid("mallory") });
    assert.equal(wrongSender.status, 400);

    const wrongChannel = await report({ ...valid, channel: 8 });
    assert.equal(wrongChannel.status, 400);

    // The other direction works too, and an id of one of a.test's own offset reports (sent to
    // b.test) is not a frame a report may name.
    const bobReceipts: DeliveryReceipt[][] = [];
    bob.on("receipt", (r) => bobReceipts.push(r.delivered));
    await bob.join(9, [bobId, `${aliceId}@a.test`]);
    const back = await bob.send(9, "to alice");
    const aliceInbox = alice.messages();
    const fromBob = (await aliceInbox.next()).value!;
    assert.equal(fromBob.text(), "to alice");
    fromBob.ack();
    assert.equal(
      (await bob.delivered(back.remote![0].id, { timeoutMs: 20_000 })).recipient,
      `${aliceId}@a.test`,
    );
    await waitFor(() => bobReceipts.length === 1, 20_000);
    await aliceInbox.return?.();
    const own = await a.db.query<{ event_id: string }>(
      `SELECT event_id FROM federation_outbox
       WHERE body #>> '{event,payload,target}' = $1 AND body #>> '{event,payload,channel}' = '9'`,
      [bobRemote],
    );
    assert.equal(own.rows.length, 1);
    const notAFrame = await report({ ...valid, channel: 9, ids: [own.rows[0].event_id] });
    assert.equal(notAFrame.status, 400);
    assert.match(notAFrame.body.detail, /offset report itself/);

    assert.equal(JSON.stringify(await a.storage.remoteOffsets.list()), before);
    assert.equal(await ackedOnOrigin(a.db), 3);
    assert.equal((await a.storage.relay.depth(aliceId)).depth, 0);

    // A valid report is accepted once; the same event again is a replay.
    const heard = receipts.length;
    const ok = await report(valid);
    assert.equal(ok.status, 202, JSON.stringify(ok.body));
    await waitFor(() => receipts.length === heard + 1, 10_000);
    assert.deepEqual(receipts.at(-1)!.map((r) => r.id), [pendingId]);
    const replay = await report(valid, secretB, ok.eventId);
    assert.equal(replay.status, 409);
    assert.equal(replay.body.title, "replayed event");
    // A fresh report of an id already acknowledged (at-least-once) is accepted, changes nothing.
    const again = await report(valid);
    assert.equal(again.status, 202);
    const final = await a.storage.remoteOffsets.list({ peerDomain: "b.test" });
    assert.equal(final[0].ackedFrames, 4);
    assert.equal(await ackedOnOrigin(a.db), 4);
    await waitFor(async () => (await a.storage.relay.depth(aliceId)).depth === 0, 20_000);
    assert.equal(receipts.length, heard + 1);
    await inbox.return?.();
  } finally {
    await running.close();
    logs.stop();
  }
}

domainTests("inbox_offset across domains: receipts, offline sender, bad reports", scenario);
