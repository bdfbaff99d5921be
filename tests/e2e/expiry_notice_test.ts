/**
 * Expiry notices: envelopes that expire unread make the server tell their sender device which
 * frames expired — live when it is online, queued when it is not — and the SDK surfaces them
 * (`client.on("expired")`) and acknowledges them. PGlite + memory, and Postgres (a scratch
 * schema) when COMMUCAT_TEST_PG_DSN is set. The grouping and its bounds are unit-tested here too.
 */
import assert from "node:assert/strict";
import { sdkOptions } from "../helpers/env_server.ts";
import { scratchTests } from "../helpers/scratch_storage.ts";
import { type Client, connect, type ExpiredFrames } from "../../client/sdk.ts";
import { generateKeypair, type Keypair } from "../../protocol/crypto.ts";
import { encodeFrame, FrameType } from "../../protocol/frame.ts";
import {
  buildNotices,
  MAX_ENTRIES,
  MAX_NOTICES,
  NOTICE_TITLE,
} from "../../server/expiry_notices.ts";
import { type Db, type Storage } from "../../storage/mod.ts";
import type { ExpiredEnvelope } from "../../storage/types.ts";
import { LogCapture, startServer, testConfig, waitFor } from "../server/helpers/server.ts";
import { clientOptions, TestClient } from "../server/helpers/client.ts";

function env(
  sender: string | null,
  deviceId: string,
  channelId: number,
  queuedMs: number,
  i = 0,
): ExpiredEnvelope {
  return {
    envelopeId: String(i),
    deviceId,
    channelId,
    enqueuedAt: new Date(queuedMs),
    expiresAt: new Date(queuedMs + 1000),
    sender,
  };
}

Deno.test("notices: one entry per channel and recipient, local senders only, bounded", () => {
  const t = Date.UTC(2026, 0, 1);
  const built = buildNotices([
    env("alice", "bob", 7, t + 2000, 1),
    env("alice", "bob", 7, t, 2),
    env("alice", "carol", 7, t, 3),
    env("alice@here.example", "bob", 9, t, 4),
    env("zed@there.example", "bob", 7, t, 5),
    env(null, "bob", 7, t, 6),
  ], "here.example");
  assert.deepEqual([...built.keys()], ["alice"]);
  const [notice] = built.get("alice")!;
  assert.equal(notice.title, NOTICE_TITLE);
  assert.equal(notice.status, 410);
  assert.equal(notice.fatal, false);
  assert.equal(notice.detail, "4 frames expired unread after relay_ttl");
  assert.deepEqual(notice.expired[0], {
    channel: 7,
    recipient: "bob",
    frames: 2,
    first_queued_at: new Date(t).toISOString(),
    last_queued_at: new Date(t + 2000).toISOString(),
    expired_at: new Date(t + 3000).toISOString(),
  });
  assert.equal(notice.expired.length, 3);

  const many = [];
  for (let i = 0; i < MAX_ENTRIES * MAX_NOTICES + 10; i++) {
    many.push(env("alice", `r${i}`, 1, t, i));
  }
  const bounded = buildNotices(many, "here.example").get("alice")!;
  assert.equal(bounded.length, MAX_NOTICES);
  assert.ok(bounded.every((n) => n.expired.length === MAX_ENTRIES));
  assert.equal(bounded.at(-1)!.more_frames, 10);
});

/** Puts an already expired envelope for `recipient` from `sender` into the relay queue. */
async function expiredEnvelope(db: Db, recipient: string, sender: string | null, channel = 5) {
  await db.query(
    `INSERT INTO relay_queue (device_id, channel_key, channel_id, payload, expires_at, sender,
       enqueued_at)
     VALUES ($1, 'inbox:' || $1, $2, $3, now() - interval '1 second', $4,
       now() - interval '2 seconds')`,
    [
      recipient,
      channel,
      encodeFrame({ type: FrameType.Msg, channel, sequence: 0, payload: new Uint8Array(4) }),
      sender,
    ],
  );
}

async function scenario(storage: Storage, db: Db) {
  const config = testConfig({ limits: { relayTtl: 1 } });
  const logs = new LogCapture().start();
  const server = await startServer(config, { storage });
  const keypair: Keypair = generateKeypair();
  const open = async () => {
    const client = await connect(
      sdkOptions({ config, server }, "exp-alice", keypair, { reconnect: false }),
    );
    const notices: { entries: ExpiredFrames[]; moreFrames: number }[] = [];
    client.on("expired", (n) => notices.push(n));
    return { client, notices };
  };
  let alice: { client: Client; notices: { entries: ExpiredFrames[] }[] } | null = null;
  try {
    // Real traffic: alice sends to bob, who never comes; relay_ttl (1 s) passes; the purge
    // tells alice (her device is the envelope's sender, as the relay recorded it).
    const first = await TestClient.connect(clientOptions(server, config, "exp-alice", { keypair }));
    try {
      assert.equal((await first.join(4, ["exp-bob"])).type, FrameType.Ack);
      assert.equal((await first.reply(first.msg(4, "never read"))).type, FrameType.Ack);
      assert.equal((await storage.relay.depth("exp-bob")).depth, 1);
      await new Promise((r) => setTimeout(r, 1100));
      await server.node.purgeNow();
      const frame = await first.nextOfType(FrameType.Error, 8000);
      const notice = frame.json as { title: string; expired: ExpiredFrames[] };
      assert.equal(notice.title, NOTICE_TITLE);
      assert.deepEqual(notice.expired.map((e) => [e.recipient, e.channel, e.frames]), [
        ["exp-bob", 4, 1],
      ]);
      first.ack(frame.sequence);
      await waitFor(async () => (await storage.relay.depth("exp-alice")).depth === 0, 5000);
    } finally {
      await first.close();
    }
    alice = await open();
    // Online: the notice is queued for alice and her session replays it.
    await expiredEnvelope(db, "exp-bob", "exp-alice");
    await expiredEnvelope(db, "exp-bob", "exp-alice");
    await expiredEnvelope(db, "exp-bob", null);
    await expiredEnvelope(db, "exp-bob", "x@remote.example");
    await server.node.purgeNow();
    assert.ok(logs.has("expired envelopes purged", { count: 4, notices: 1 }));
    const online = alice.notices;
    await waitFor(() => online.length === 1, 8000);
    assert.equal(online[0].entries.length, 1);
    assert.equal(online[0].entries[0].recipient, "exp-bob");
    assert.equal(online[0].entries[0].channel, 5);
    assert.equal(online[0].entries[0].frames, 2);
    // The SDK acknowledged it: nothing stays queued for alice.
    await waitFor(async () => (await storage.relay.depth("exp-alice")).depth === 0, 5000);
    await alice.client.close();
    alice = null;

    // Offline: the notice waits in alice's queue and reaches her on her next connection.
    await expiredEnvelope(db, "exp-carol", "exp-alice", 6);
    await server.node.purgeNow();
    assert.equal((await storage.relay.depth("exp-alice")).depth, 1);
    // (A raw client here: it keeps every frame, even one that arrives before a listener could.)
    const raw = await TestClient.connect(
      clientOptions(server, config, "exp-alice", { keypair }),
    );
    try {
      const frame = await raw.nextOfType(FrameType.Error, 8000);
      const notice = frame.json as { title: string; status: number; expired: ExpiredFrames[] };
      assert.equal(notice.title, NOTICE_TITLE);
      assert.equal(notice.status, 410);
      assert.deepEqual(notice.expired.map((e) => [e.recipient, e.channel, e.frames]), [
        ["exp-carol", 6, 1],
      ]);
      assert.ok(frame.sequence > 0, "a relayed frame, with a sequence to acknowledge");
      raw.ack(frame.sequence);
      await waitFor(async () => (await storage.relay.depth("exp-alice")).depth === 0, 5000);
    } finally {
      await raw.close();
    }
    // The SDK keeps a notice that arrives before its first listener and hands it over then.
    await expiredEnvelope(db, "exp-erin", "exp-alice", 8);
    await server.node.purgeNow();
    const sdk = await connect(
      sdkOptions({ config, server }, "exp-alice", keypair, { reconnect: false }),
    );
    try {
      await waitFor(async () => (await storage.relay.depth("exp-alice")).depth === 0, 8000);
      const heard: ExpiredFrames[][] = [];
      sdk.on("expired", (n) => heard.push(n.entries));
      await waitFor(() => heard.length === 1, 2000);
      assert.equal(heard[0][0].recipient, "exp-erin");
    } finally {
      await sdk.close();
    }
    // Notices have no sender: one that expires itself is not noticed again.
    await expiredEnvelope(db, "exp-dave", null);
    await server.node.purgeNow();
    assert.equal((await storage.relay.depth("exp-alice")).depth, 0);
  } finally {
    await alice?.client.close();
    await server.stop();
    logs.stop();
  }
}

scratchTests(
  {
    pglite: "expiry notices end to end (PGlite + memory)",
    postgres: "expiry notices end to end (Postgres)",
  },
  ({ storage, db }) => scenario(storage, db),
  { sanitizeResources: false, sanitizeOps: false },
);
