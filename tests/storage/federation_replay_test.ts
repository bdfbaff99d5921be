/**
 * Federation replay protection across nodes: two federation services of one domain over one
 * database (two storage handles, as two processes would have) share the `idempotency` table, so
 * an event accepted by one node is refused as a replay by the other. Runs on PGlite, and on real
 * Postgres (two pools) when COMMUCAT_TEST_PG_DSN is set.
 */
import assert from "node:assert/strict";
import { scratchTests } from "../helpers/scratch_storage.ts";
import { encodeFrame, FrameType } from "../../protocol/frame.ts";
import {
  type FederationEvent,
  federationKeypair,
  signEvent,
  toRfc3339,
} from "../../protocol/federation.ts";
import { bytesToHex } from "../../protocol/hex.ts";
import type { Storage } from "../../storage/types.ts";
import { makeDomain, newIdentity } from "../server/federation_fakes.ts";

/** A signed event from a.test (seed) for bob@b.test. */
function signedBody(seed: Uint8Array): { event: FederationEvent; signature: string } {
  const frame = encodeFrame({
    type: FrameType.Msg,
    channel: 7,
    sequence: 1,
    payload: new TextEncoder().encode("hello"),
  });
  const event: FederationEvent = {
    event_id: crypto.randomUUID(),
    origin: "a.test",
    scope: "b.test",
    created_at: toRfc3339(new Date()),
    payload: {
      channel: 7,
      sequence: 1,
      payload: bytesToHex(frame),
      sender: "alice@a.test",
      target: "bob@b.test",
    },
  };
  return { event, signature: bytesToHex(signEvent(event, federationKeypair(seed).secretKey)) };
}

function post(body: unknown): Request {
  return new Request("http://b.test/federation/events", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
}

async function scenario(first: Storage, second: Storage): Promise<void> {
  const ia = newIdentity("a.test"), ib = newIdentity("b.test");
  const peer = [{ domain: "a.test", endpoint: "http://127.0.0.1:1/", publicKey: ia.publicKey }];
  const node1 = makeDomain(ib, peer, { storage: first });
  const node2 = makeDomain(ib, peer, { storage: second });
  try {
    const body = signedBody(ia.seed);
    let res = await node1.fed.handleInbound(post(body));
    assert.equal(res.status, 202, await res.clone().text());
    await res.body?.cancel();
    res = await node2.fed.handleInbound(post(body));
    assert.equal(res.status, 409, "the other node refuses the replay");
    assert.equal((await res.json()).title, "replayed event");
    assert.equal(node1.delivered.length + node2.delivered.length, 1);
    const rows = await first.idempotency.claim("federation:a.test", body.event.event_id, 60);
    assert.equal(rows, false, "the id is held under the origin's scope");

    // A failed local delivery forgets the id, so the sender's retry succeeds on either node.
    const retried = signedBody(ia.seed);
    node2.deliverLocal = () => Promise.reject(new Error("disk full"));
    res = await node2.fed.handleInbound(post(retried));
    assert.equal(res.status, 503);
    await res.body?.cancel();
    res = await node1.fed.handleInbound(post(retried));
    assert.equal(res.status, 202);
    await res.body?.cancel();
    assert.equal(node1.delivered.length, 2);
  } finally {
    await node1.close();
    await node2.close();
  }
}

scratchTests({
  pglite: "federation replay protection is shared by nodes on one database (PGlite)",
  postgres: "federation replay protection is shared by nodes on one database (Postgres)",
}, async ({ storage, another }) => scenario(storage, await another()));
