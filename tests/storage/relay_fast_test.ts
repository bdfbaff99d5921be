/**
 * The relay fast path: claim with `firstSequence` (sequences recorded by the claim itself) and
 * ack with `returnPayloads: false`, on PGlite (a temp dir) and on Postgres
 * (COMMUCAT_TEST_PG_DSN, in a scratch schema; listed as ignored without it). The semantics are
 * the three-statement flow's: FIFO, at-least-once, no row claimed twice, expired rows never
 * handed out.
 */
import assert from "node:assert/strict";
import { type Db, openPglite, openPostgres } from "../../storage/db.ts";
import { InvalidValue } from "../../storage/errors.ts";
import { migrate } from "../../storage/migrate.ts";
import { PgOffsetRepo, PgRelayRepo } from "../../storage/repos/relay.ts";
import { scratchSchema } from "./pg_scratch.ts";

const MAX_U32 = 0xffffffff;
const dsn = Deno.env.get("COMMUCAT_TEST_PG_DSN") ?? "";

function frames(deviceId: string, n: number, channelId = 1) {
  return Array.from({ length: n }, (_, i) => ({
    deviceId,
    channelId,
    payload: new Uint8Array([i & 0xff, 7]),
  }));
}

function isInvalid(field: string) {
  return (err: unknown) => {
    assert.ok(err instanceof InvalidValue, `expected InvalidValue, got ${err}`);
    assert.match(err.message, new RegExp(field));
    return true;
  };
}

async function suite(t: Deno.TestContext, db: Db): Promise<void> {
  await migrate(db);
  const relay = new PgRelayRepo(db);
  const offsets = new PgOffsetRepo(db);

  await t.step("claim with firstSequence numbers envelopes in FIFO order", async () => {
    const dev = "fast-fifo";
    const ids = await relay.enqueue(frames(dev, 200), 3600);
    const batch = await relay.claim(dev, "fast-s1", 128, { firstSequence: 1000 });
    assert.deepEqual(batch.map((e) => e.envelopeId), ids.slice(0, 128));
    assert.deepEqual(batch.map((e) => e.lastSequence), batch.map((_, i) => 1000 + i));
    assert.ok(batch.every((e) => e.attempts === 1 && e.deviceId === dev));
    assert.deepEqual(batch[5].payload, new Uint8Array([5, 7]));
    // The next claim continues the FIFO and numbers its own block.
    const rest = await relay.claim(dev, "fast-s1", 128, { firstSequence: 1128 });
    assert.deepEqual(rest.map((e) => e.envelopeId), ids.slice(128));
    assert.deepEqual(rest.map((e) => e.lastSequence), rest.map((_, i) => 1128 + i));
    assert.deepEqual(await relay.claim(dev, "fast-s1", 128, { firstSequence: 2000 }), []);
  });

  await t.step("claimForReplay claims like claim with firstSequence, reading less", async () => {
    const dev = "fast-replay";
    const ids = await relay.enqueue(
      frames(dev, 130).map((f, i) => ({ ...f, sender: i === 1 ? "alice-phone" : null })),
      3600,
    );
    const batch = await relay.claimForReplay(dev, "fast-s5", 128, 500);
    assert.deepEqual(batch.map((e) => e.envelopeId), ids.slice(0, 128));
    assert.deepEqual(batch[3], {
      envelopeId: ids[3],
      payload: new Uint8Array([3, 7]),
      sender: null,
    });
    assert.equal(batch[1].sender, "alice-phone");
    assert.ok(batch[3].payload instanceof Uint8Array);
    // Recorded as claimed by the session under firstSequence + i: the ACK of 503 deletes ids[3].
    const gone = await relay.ack(dev, "fast-s5", [503], { returnPayloads: false });
    assert.deepEqual(gone.map((g) => [g.envelopeId, g.sequence, g.attempts]), [[ids[3], 503, 1]]);
    assert.deepEqual(
      (await relay.claimForReplay(dev, "fast-s5", 128, 628)).map((e) => e.envelopeId),
      [
        ids[128],
        ids[129],
      ],
    );
    assert.deepEqual(await relay.claimForReplay(dev, "fast-s5", 128, 756), []);
    assert.equal((await relay.depth(dev)).inFlight, 129);
    await assert.rejects(
      () => relay.claimForReplay(dev, "fast-s5", 2, MAX_U32),
      isInvalid("first sequence"),
    );
    await assert.rejects(() => relay.claimForReplay(dev, "fast-s5", 129, 1), isInvalid("limit"));
  });

  await t.step("ack without payloads deletes and advances inbox offsets", async () => {
    const dev = "fast-ack";
    const ids = await relay.enqueue([...frames(dev, 3, 1), ...frames(dev, 2, 9)], 3600);
    const batch = await relay.claim(dev, "fast-s2", 128, { firstSequence: 1 });
    assert.equal(batch.length, 5);
    // Another session, or sequences this session did not send, delete nothing.
    assert.deepEqual(await relay.ack(dev, "fast-other", [1, 2], { returnPayloads: false }), []);
    assert.deepEqual(await relay.ack(dev, "fast-s2", [99], { returnPayloads: false }), []);
    const gone = await relay.ack(dev, "fast-s2", [2, 1, 4], { returnPayloads: false });
    assert.deepEqual(
      gone.map(({ envelopeId, channelId, sequence }) => ({ envelopeId, channelId, sequence })),
      [
        { envelopeId: ids[0], channelId: 1, sequence: 1 },
        { envelopeId: ids[1], channelId: 1, sequence: 2 },
        { envelopeId: ids[3], channelId: 9, sequence: 4 },
      ],
    );
    // When they were enqueued and how often handed out (frame analytics' latency).
    assert.ok(gone.every((g) => g.enqueuedAt instanceof Date && g.attempts === 1));
    assert.equal(await offsets.read(dev, 1), ids[1]);
    assert.equal(await offsets.read(dev, 9), ids[3]);
    assert.equal((await relay.depth(dev)).depth, 2);
    // Acking again is harmless; the default still returns whole envelopes.
    assert.deepEqual(await relay.ack(dev, "fast-s2", [1], { returnPayloads: false }), []);
    const full = await relay.ack(dev, "fast-s2", [3, 5], { returnPayloads: true });
    assert.deepEqual(full.map((e) => [e.envelopeId, e.lastSequence]), [[ids[2], 3], [ids[4], 5]]);
    assert.ok(full[0].payload instanceof Uint8Array);
    assert.equal(await offsets.read(dev, 1), ids[2]);
    assert.equal(await offsets.read(dev, 9), ids[4]);
    assert.equal((await relay.depth(dev)).depth, 0);
  });

  await t.step(
    "ack by envelope id deletes only that envelope, claimed under that sequence",
    async () => {
      const dev = "fast-ack-id";
      const ids = await relay.enqueue([...frames(dev, 3, 1), ...frames(dev, 2, 9)], 3600);
      const batch = await relay.claim(dev, "fast-s4", 128, { firstSequence: 10 });
      assert.deepEqual(batch.map((e) => e.lastSequence), [10, 11, 12, 13, 14]);
      const byId = (seqs: number[], envelopeIds: string[], session = "fast-s4") =>
        relay.ack(dev, session, seqs, { returnPayloads: false, envelopeIds });
      // Another session, a sequence the envelope was not sent under, an unknown id: nothing.
      assert.deepEqual(await byId([10], [ids[0]], "fast-other"), []);
      assert.deepEqual(await byId([11], [ids[0]]), []);
      assert.deepEqual(await byId([10], ["999999999"]), []);
      assert.equal((await relay.depth(dev)).depth, 5);
      const gone = await byId([13, 10, 11], [ids[3], ids[0], ids[1]]);
      assert.deepEqual(
        gone.map(({ envelopeId, channelId, sequence }) => ({ envelopeId, channelId, sequence })),
        [
          { envelopeId: ids[0], channelId: 1, sequence: 10 },
          { envelopeId: ids[1], channelId: 1, sequence: 11 },
          { envelopeId: ids[3], channelId: 9, sequence: 13 },
        ],
      );
      assert.equal(await offsets.read(dev, 1), ids[1]);
      assert.equal(await offsets.read(dev, 9), ids[3]);
      // Again (a repeated ACK), and twice in one call: deleted once, nothing more.
      assert.deepEqual(await byId([10, 10], [ids[0], ids[0]]), []);
      // The whole-envelope form takes the ids too.
      const full = await relay.ack(dev, "fast-s4", [12, 14], {
        returnPayloads: true,
        envelopeIds: [ids[2], ids[4]],
      });
      assert.deepEqual(full.map((e) => [e.envelopeId, e.lastSequence]), [[ids[2], 12], [
        ids[4],
        14,
      ]]);
      assert.equal((await relay.depth(dev)).depth, 0);
      // One id per sequence, each an envelope id.
      await assert.rejects(() => byId([1, 2], [ids[0]]), isInvalid("envelope ids"));
      await assert.rejects(() => byId([1], ["x"]), isInvalid("envelope id"));
    },
  );

  await t.step("a dropped session's claims are replayed under new sequences", async () => {
    const dev = "fast-requeue";
    const ids = await relay.enqueue(frames(dev, 4), 3600);
    await relay.claim(dev, "fast-a", 128, { firstSequence: 10 });
    assert.equal(await relay.requeue({ sessionId: "fast-a" }), 4);
    // A plain claim keeps the old sequence for information; the fast one renumbers.
    const plain = await relay.claim(dev, "fast-b", 2);
    assert.deepEqual(plain.map((e) => [e.lastSequence, e.attempts]), [[10, 2], [11, 2]]);
    const fast = await relay.claim(dev, "fast-c", 128, { firstSequence: 500 });
    assert.deepEqual(fast.map((e) => [e.envelopeId, e.lastSequence]), [[ids[2], 500], [
      ids[3],
      501,
    ]]);
    // The old session's ACK finds nothing; only the sequence a row was last sent under counts.
    assert.deepEqual(await relay.ack(dev, "fast-a", [12, 13], { returnPayloads: false }), []);
    assert.deepEqual(await relay.ack(dev, "fast-c", [12], { returnPayloads: false }), []);
    const gone = await relay.ack(dev, "fast-c", [500, 501], { returnPayloads: false });
    assert.deepEqual(gone.map((g) => g.envelopeId), ids.slice(2));
    // markSent still overrides a recorded sequence.
    await relay.markSent(
      "fast-b",
      plain.map((e, i) => ({ envelopeId: e.envelopeId, sequence: i })),
    );
    assert.equal((await relay.ack(dev, "fast-b", [0, 1], { returnPayloads: false })).length, 2);
  });

  await t.step("concurrent fast claims never overlap", async () => {
    const dev = "fast-concurrent";
    await relay.enqueue(frames(dev, 40), 3600);
    const claims = await Promise.all(
      Array.from(
        { length: 4 },
        (_, i) => relay.claim(dev, `fast-p${i}`, 10, { firstSequence: 1 + i * 10 }),
      ),
    );
    const seen = claims.flat().map((e) => e.envelopeId);
    assert.equal(seen.length, 40);
    assert.equal(new Set(seen).size, 40, "no envelope claimed twice");
    for (const [i, batch] of claims.entries()) {
      assert.deepEqual(batch.map((e) => e.lastSequence), batch.map((_, k) => 1 + i * 10 + k));
    }
  });

  await t.step("expired envelopes are never claimed", async () => {
    const dev = "fast-expired";
    const ids = await relay.enqueue(frames(dev, 3), 3600);
    await db.query(
      `UPDATE relay_queue SET expires_at = now() - interval '1 second' WHERE envelope_id = $1`,
      [ids[1]],
    );
    const batch = await relay.claim(dev, "fast-e", 128, { firstSequence: 1 });
    assert.deepEqual(batch.map((e) => [e.envelopeId, e.lastSequence]), [[ids[0], 1], [ids[2], 2]]);
  });

  await t.step("bad firstSequence and sequences are refused by name", async () => {
    const dev = "fast-bad";
    await relay.enqueue(frames(dev, 2), 3600);
    for (const bad of [-1, 1.5, MAX_U32 + 1, Number.NaN]) {
      await assert.rejects(
        relay.claim(dev, "fast-x", 2, { firstSequence: bad }),
        isInvalid("first sequence"),
      );
    }
    // The whole block must fit in u32.
    await assert.rejects(
      relay.claim(dev, "fast-x", 2, { firstSequence: MAX_U32 }),
      isInvalid("first sequence"),
    );
    const last = await relay.claim(dev, "fast-x", 2, { firstSequence: MAX_U32 - 1 });
    assert.deepEqual(last.map((e) => e.lastSequence), [MAX_U32 - 1, MAX_U32]);
    await assert.rejects(
      relay.ack(dev, "fast-x", [-1], { returnPayloads: false }),
      isInvalid("sequence"),
    );
    const gone = await relay.ack(dev, "fast-x", [MAX_U32 - 1, MAX_U32], {
      returnPayloads: false,
    });
    assert.deepEqual(gone.map((g) => g.sequence), [MAX_U32 - 1, MAX_U32]);
    assert.deepEqual(await relay.ack(dev, "fast-x", [], { returnPayloads: false }), []);
  });
}

Deno.test("relay fast path: pglite", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "commucat-relay-fast-" });
  try {
    const db = await openPglite(dir);
    try {
      await suite(t, db);
    } finally {
      await db.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: dsn
    ? "relay fast path: postgres"
    : "relay fast path: postgres (ignored: set COMMUCAT_TEST_PG_DSN to run)",
  ignore: dsn === "",
  async fn(t) {
    const scratch = await scratchSchema(dsn);
    try {
      const db = await openPostgres(scratch.dsn, { max: 4 });
      try {
        await suite(t, db);
      } finally {
        await db.close();
      }
    } finally {
      await scratch.drop();
    }
  },
});
