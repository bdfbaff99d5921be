/**
 * inbox_offset across domains, the pure parts: the offset report's JSON is checked strictly
 * (fields, id count and shape, duplicates, time), an offset frame round-trips, and the frame
 * type of a stored hex frame is read from its first bytes (an offset report may not name one).
 */
import assert from "node:assert/strict";
import { FrameDecoder, FrameType } from "../../protocol/frame.ts";
import { bytesToHex } from "../../protocol/hex.ts";
import {
  MAX_REPORTED_EVENTS,
  offsetFrame,
  parseOffsetReport,
  receiptFrame,
} from "../../server/federation/offsets.ts";
import { decodeFederatedFrame } from "../../server/federation/event.ts";
import { frameTypeOfHex } from "../../storage/repos/remote_offsets.ts";

Deno.test("offset reports: a valid one parses; every malformed one names what is wrong", () => {
  const at = new Date("2026-12-01T09:00:01.250Z");
  const frame = offsetFrame(7, ["e-1", "e-2"], at);
  const decoded = decodeFederatedFrame(frame, { offsets: true });
  assert.ok("type" in decoded && decoded.type === FrameType.Ack && decoded.channel === 7);
  const parsed = parseOffsetReport(decoded.json);
  assert.deepEqual(parsed, { eventIds: ["e-1", "e-2"], ackedAt: at });
  // Without the option an ACK is not a federated frame.
  assert.ok(!("type" in decodeFederatedFrame(frame)));

  const bad: [unknown, RegExp][] = [
    [null, /JSON object/],
    [["e-1"], /JSON object/],
    [{ delivered: ["e-1"], acked_at: at.toISOString(), extra: 1 }, /unknown field "extra"/],
    [{ delivered: [], acked_at: at.toISOString() }, /delivered/],
    [{ delivered: ["bad id"], acked_at: at.toISOString() }, /delivered/],
    [{ delivered: [7], acked_at: at.toISOString() }, /delivered/],
    [
      {
        delivered: Array.from({ length: MAX_REPORTED_EVENTS + 1 }, (_, i) => `e-${i}`),
        acked_at: at.toISOString(),
      },
      /1\.\.256/,
    ],
    [{ delivered: ["e-1", "e-1"], acked_at: at.toISOString() }, /twice/],
    [{ delivered: ["e-1"] }, /acked_at/],
    [{ delivered: ["e-1"], acked_at: "yesterday" }, /acked_at/],
  ];
  for (const [json, why] of bad) {
    const result = parseOffsetReport(json);
    assert.ok("detail" in result, JSON.stringify(json));
    assert.match(result.detail, why);
  }
});

Deno.test("receipt frames are ACKs on channel 0 without an ack sequence", () => {
  const bytes = receiptFrame([{
    id: "e-1",
    channel: 7,
    recipient: "bob@b.example",
    acked_at: "2026-12-01T09:00:01.250Z",
  }]);
  const decoder = new FrameDecoder();
  decoder.push(bytes);
  const frame = decoder.next()!;
  assert.equal(frame.type, FrameType.Ack);
  assert.equal(frame.channel, 0);
  const json = frame.json as Record<string, unknown>;
  assert.equal(json.receipt, "delivered");
  assert.equal("ack" in json, false);
});

Deno.test("the frame type of a stored hex frame comes from its first bytes", () => {
  const ack = bytesToHex(offsetFrame(1, ["e"], new Date()));
  assert.equal(frameTypeOfHex(ack.slice(0, 24)), FrameType.Ack);
  // A length that needs two varint bytes (a frame over 127 bytes).
  const long = bytesToHex(
    offsetFrame(1, Array.from({ length: 40 }, (_, i) => `e${i}`), new Date()),
  );
  assert.equal(parseInt(long.slice(0, 2), 16) & 0x80, 0x80);
  assert.equal(frameTypeOfHex(long.slice(0, 24)), FrameType.Ack);
  assert.equal(frameTypeOfHex(""), null);
  assert.equal(frameTypeOfHex("zz"), null);
});
