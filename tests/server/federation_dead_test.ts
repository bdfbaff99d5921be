import assert from "node:assert/strict";
import { encodeFrame, FrameType } from "../../protocol/frame.ts";
import { classify, MAX_REJECTED_ATTEMPTS } from "../../server/federation/outbound.ts";
import { makeDomain, newIdentity } from "./federation_fakes.ts";

const msg = encodeFrame({
  type: FrameType.Msg,
  channel: 7,
  sequence: 1,
  payload: new TextEncoder().encode("hi"),
});

/** A peer endpoint that answers every POST with this status and problem title. */
function refusingPeer(status: number, title: string) {
  return Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    await req.body?.cancel();
    return Response.json({ type: "about:blank", title, status, detail: "no" }, { status });
  });
}

/** a.test with b.test as its peer, served by `peer` on loopback. */
function domainWithPeer(peer: Deno.HttpServer<Deno.NetAddr>) {
  return makeDomain(newIdentity("a.test"), [{
    domain: "b.test",
    endpoint: `http://127.0.0.1:${peer.addr.port}/federation/events`,
    publicKey: newIdentity("b.test").publicKey,
  }]);
}

Deno.test("classify: which refusals may give an entry up", () => {
  const p = (title: string) => JSON.stringify({ title });
  const giveUp = (status: number, body = "") => {
    const o = classify(status, body);
    return o.kind === "failed" ? o.giveUp : "delivered";
  };
  assert.equal(giveUp(400, p("invalid event")), "limit");
  assert.equal(giveUp(401, p("invalid signature")), "limit");
  assert.equal(giveUp(413, ""), "limit");
  assert.equal(giveUp(403, p("federation peer not allowed")), "never", "pairing unfinished");
  assert.equal(giveUp(403, p("invalid federation sender")), "limit");
  for (const s of [302, 408, 429, 500, 503]) assert.equal(giveUp(s), "never", `${s}`);
  assert.equal(giveUp(202), "delivered");
});

for (
  const [status, title, dies] of [
    [400, "invalid event", true],
    [403, "federation peer not allowed", false],
    [503, "delivery failed", false],
  ] as const
) {
  Deno.test(`outbox: HTTP ${status} ${title} ${dies ? "is given up" : "is retried"}`, async () => {
    const peer = refusingPeer(status, title);
    const a = domainWithPeer(peer);
    try {
      await a.fed.send({ channel: 7, sequence: 1, frame: msg, sender: "al", target: "bo@b.test" });
      for (let i = 0; i < MAX_REJECTED_ATTEMPTS + 2; i++) {
        await a.fed.deliverDue();
        a.clock.advance(3_600_001);
      }
      const [entry] = a.outbox.entries;
      const [backlog] = await a.outbox.backlog();
      if (dies) {
        assert.equal(entry.attempts, MAX_REJECTED_ATTEMPTS, "no attempt after giving up");
        assert.ok(entry.deadAt instanceof Date);
        assert.deepEqual([backlog.pending, backlog.dead], [0, 1]);
        assert.match(backlog.lastError ?? "", new RegExp(`HTTP ${status} ${title}`));
        assert.equal(a.log.lines.filter((l) => l.msg === "federation event given up").length, 1);
      } else {
        assert.equal(entry.attempts, MAX_REJECTED_ATTEMPTS + 2);
        assert.equal(entry.deadAt, null);
        assert.deepEqual([backlog.pending, backlog.dead], [1, 0]);
      }
    } finally {
      await a.close();
      await peer.shutdown();
    }
  });
}

Deno.test("outbox: a peer gets events in queue order, a failed one holding back the rest", async () => {
  // The peer refuses its first POST with 503, then accepts everything; it records the order.
  const seen: number[] = [];
  let refuseNext = true;
  const peer = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const body = await req.json();
    if (refuseNext) {
      refuseNext = false;
      return Response.json({ title: "delivery failed", status: 503 }, { status: 503 });
    }
    // Answer slowly the earliest, so that concurrent POSTs would overtake it.
    const seq = body.event.payload.sequence as number;
    await new Promise((r) => setTimeout(r, seq === 1 ? 30 : 1));
    seen.push(seq);
    return Response.json({ status: "accepted" }, { status: 202 });
  });
  const a = domainWithPeer(peer);
  try {
    for (let sequence = 1; sequence <= 5; sequence++) {
      await a.fed.send({ channel: 7, sequence, frame: msg, sender: "al", target: "bo@b.test" });
    }
    await a.fed.deliverDue();
    assert.deepEqual(seen, [], "nothing overtakes the failed first event");
    assert.equal(a.outbox.entries[0].attempts, 1);
    assert.deepEqual(a.outbox.entries.slice(1).map((e) => e.attempts), [0, 0, 0, 0]);
    a.clock.advance(3_000);
    await a.fed.deliverDue();
    assert.deepEqual(seen, [1, 2, 3, 4, 5]);
    assert.ok(a.outbox.entries.every((e) => e.deliveredAt !== null));
  } finally {
    await a.close();
    await peer.shutdown();
  }
});
