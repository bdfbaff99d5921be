import assert from "node:assert/strict";
import { OutboundBuffer } from "../../server/session/outbound.ts";
import { FrameDecoder, FrameType } from "../../protocol/frame.ts";

const te = new TextEncoder();

function frames(bytes: Uint8Array) {
  const d = new FrameDecoder();
  d.push(bytes.slice());
  const out = [];
  for (let f = d.next(); f !== null; f = d.next()) out.push(f);
  return out;
}

Deno.test("outbound buffers: a written batch's buffer serves the next connection's batch, bytes intact", () => {
  const a = new OutboundBuffer();
  const b = new OutboundBuffer();
  a.pushFrame(FrameType.Msg, 1, 1, te.encode("from a"));
  a.pushAck(1, 2, 7);
  const first = a.take();
  assert.deepEqual(frames(first).map((f) => [f.type, f.sequence, f.json ?? null]), [
    [FrameType.Msg, 1, null],
    [FrameType.Ack, 2, { ack: 7 }],
  ]);
  const buffer = first.buffer;
  a.recycle(first);
  // The next batch of any connection takes the pooled buffer; nothing of a's batch shows.
  b.pushFrame(FrameType.Msg, 3, 9, te.encode("b"));
  const second = b.take();
  assert.equal(second.buffer, buffer, "the pooled buffer is reused");
  const [f] = frames(second);
  assert.equal(new TextDecoder().decode(f.payload), "b");
  assert.equal(f.sequence, 9);
  // Idle: a connection that flushed holds nothing until its next frame.
  assert.equal(a.length, 0);
  assert.equal(a.frames, 0);
  b.recycle(second);
});

Deno.test("outbound buffers: a batch larger than a pooled buffer grows and is kept while busy", () => {
  const a = new OutboundBuffer();
  const big = new Uint8Array(40_000).fill(7);
  a.pushFrame(FrameType.Msg, 1, 1, big);
  a.pushFrame(FrameType.Msg, 1, 2, big);
  const taken = a.take();
  const got = frames(taken);
  assert.equal(got.length, 2);
  assert.ok(got.every((f) => f.payload.length === 40_000 && f.payload.every((x) => x === 7)));
  const buffer = taken.buffer;
  a.recycle(taken);
  a.pushFrame(FrameType.Msg, 1, 3, big);
  assert.equal(a.take().buffer, buffer, "the busy connection's large buffer is kept");
});
