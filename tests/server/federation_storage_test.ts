/**
 * Federation over the real storage module: a.test runs on embedded PGlite (and, when
 * COMMUCAT_TEST_PG_DSN is set, on real Postgres in a scratch schema), b.test on in-memory
 * doubles. Covers the database side: pending peer promotion, the outbox with its backoff,
 * inbound checks against a database peer, `touch`, and blocking.
 */
import assert from "node:assert/strict";
import { scratchTests } from "../helpers/scratch_storage.ts";
import { encodeFrame, FrameType } from "../../protocol/frame.ts";
import { FederationRefused } from "../../server/federation/mod.ts";
import type { Storage } from "../../storage/types.ts";
import { Clock, freePort, makeDomain, newIdentity, type TestDomain } from "./federation_fakes.ts";

const msg = (text: string) =>
  encodeFrame({
    type: FrameType.Msg,
    channel: 5,
    sequence: 1,
    payload: new TextEncoder().encode(text),
  });

async function scenario(storage: Storage): Promise<void> {
  const ia = newIdentity("a.test"), ib = newIdentity("b.test");
  const pa = freePort(), pb = freePort();
  const clock = new Clock();
  const a = makeDomain(ia, [], { storage, clock });
  const b: TestDomain = makeDomain(ib, [{
    domain: "a.test",
    endpoint: `http://127.0.0.1:${pa}/federation/events`,
    publicKey: ia.publicKey,
  }]);
  a.listen(pa);
  b.listen(pb);
  try {
    // a.test knows b.test only from the database, still pending.
    await storage.peers.upsert(
      { domain: "b.test", endpoint: `http://127.0.0.1:${pb}/`, publicKey: ib.publicKey },
      "test",
    );
    assert.equal((await storage.peers.get("b.test"))?.status, "pending");
    await a.fed.send({
      channel: 5,
      sequence: 1,
      frame: msg("one"),
      sender: "alice",
      target: "bob@b.test",
    });
    assert.equal((await storage.peers.get("b.test"))?.status, "active");
    assert.equal(await a.fed.deliverDue(), 1);
    assert.equal(b.delivered.length, 1);
    assert.deepEqual(await storage.outbox.backlog(), []);

    // b.test goes down: the event waits in the outbox with its error, then goes through.
    await b.server!.shutdown();
    b.server = null;
    await a.fed.send({
      channel: 5,
      sequence: 2,
      frame: msg("two"),
      sender: "alice",
      target: "bob@b.test",
    });
    assert.equal(await a.fed.deliverDue(), 1);
    const [backlog] = await storage.outbox.backlog();
    assert.equal(backlog.peerDomain, "b.test");
    assert.equal(backlog.pending, 1);
    assert.match(backlog.lastError ?? "", /^network: /);
    assert.equal(await a.fed.deliverDue(), 0, "not due before the backoff has passed");
    b.listen(pb);
    clock.advance(3_000);
    assert.equal(await a.fed.deliverDue(), 1);
    assert.equal(b.delivered.length, 2);
    assert.deepEqual(await storage.outbox.backlog(), []);

    // b.test answers: a.test checks it against its database row and records it was seen.
    await b.fed.send({
      channel: 5,
      sequence: 1,
      frame: msg("back"),
      sender: "bob",
      target: "alice@a.test",
    });
    await b.fed.deliverDue();
    assert.equal(a.delivered.length, 1);
    const { eventId, ...meta } = a.delivered[0].meta;
    assert.deepEqual(meta, { origin: "b.test", sender: "bob@b.test", channel: 5 });
    assert.equal(typeof eventId, "string");
    assert.notEqual((await storage.peers.get("b.test"))?.lastSeenAt, null);

    // Blocked: refused both ways.
    await storage.peers.setStatus("b.test", "blocked", "test");
    const err = await a.fed
      .send({ channel: 5, sequence: 3, frame: msg("no"), sender: "alice", target: "bob@b.test" })
      .then(() => null, (e) => e);
    assert.ok(err instanceof FederationRefused);
    assert.equal(err.title, "federation peer not allowed");
    await b.fed.send({
      channel: 5,
      sequence: 2,
      frame: msg("no"),
      sender: "bob",
      target: "alice@a.test",
    });
    await b.fed.deliverDue();
    assert.equal(a.delivered.length, 1);
    assert.match(b.outbox.entries[1].lastError ?? "", /HTTP 403 federation peer not allowed/);
  } finally {
    await a.close();
    await b.close();
  }
}

scratchTests({
  pglite: "federation over embedded storage (PGlite)",
  postgres: "federation over Postgres (COMMUCAT_TEST_PG_DSN)",
}, ({ storage }) => scenario(storage));
