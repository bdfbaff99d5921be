/** The sender capability's stamp (ccp1.md §4.2) and the relay item, byte for byte. */
import assert from "node:assert/strict";
import { FrameType } from "../../protocol/frame.ts";
import { decodeRelayItem, encodeRelayItem, itemFromFrame } from "../../protocol/relay_item.ts";
import { senderPrefix, SenderStampError, splitSender, stampJson } from "../../protocol/sender.ts";

const bytes = (...b: number[]) => Uint8Array.from(b);

Deno.test("an opaque stamp is varint(n) ‖ sender ‖ payload", () => {
  assert.deepEqual(senderPrefix("alice"), bytes(5, 0x61, 0x6c, 0x69, 0x63, 0x65));
  const long = "d".repeat(200);
  assert.deepEqual([...senderPrefix(long).subarray(0, 2)], [0xc8, 0x01]);
  const stamped = new Uint8Array([...senderPrefix("bob@remote.example"), 1, 2, 3]);
  const { sender, payload } = splitSender(stamped);
  assert.equal(sender, "bob@remote.example");
  assert.deepEqual([...payload], [1, 2, 3]);
  assert.deepEqual([...splitSender(senderPrefix("é")).payload], []);
});

Deno.test("malformed stamps are refused with SenderStampError", () => {
  for (
    const bad of [
      bytes(),
      bytes(0),
      bytes(5, 0x61),
      bytes(0x80),
      bytes(2, 0xff, 0xfe),
      bytes(0x81, 0x08),
    ]
  ) {
    assert.throws(() => splitSender(bad), SenderStampError, `${[...bad]}`);
  }
});

Deno.test("a JSON stamp replaces any sender the client wrote; non-objects stay as they are", () => {
  const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
  const dec = (b: Uint8Array) => JSON.parse(new TextDecoder().decode(b));
  assert.deepEqual(dec(stampJson(enc({ typing: true, sender: "forged" }), "real")), {
    typing: true,
    sender: "real",
  });
  for (const raw of [enc([1, 2]), enc("text"), new TextEncoder().encode("{not json")]) {
    assert.equal(stampJson(raw, "real"), raw);
  }
});

Deno.test("a relay item round-trips its frame and sender; junk is refused", () => {
  const item = { type: FrameType.Msg, channel: 9, payload: bytes(1, 2, 3), sender: "sënder" };
  const back = decodeRelayItem(encodeRelayItem(item));
  assert.deepEqual({ ...back, payload: [...back.payload] }, { ...item, payload: [1, 2, 3] });
  const unsent = itemFromFrame(encodeRelayItem(item).subarray(1 + 7), null);
  assert.equal(unsent.sender, "");
  assert.throws(() => decodeRelayItem(bytes(9, 1)));
  assert.throws(() => itemFromFrame(bytes(3, 5, 1), null));
});
