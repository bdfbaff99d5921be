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
    const ib = newIdentity("b.test");
    const a = makeDomain(newIdentity("a.test"), [{
      domain: "b.test",
      endpoint: `http://127.0.0.1:${peer.addr.port}/federation/events`,
      publicKey: ib.publicKey,
    }]);
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
