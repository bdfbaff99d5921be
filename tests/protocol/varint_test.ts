import assert from "node:assert/strict";
import {
  assertU32,
  CodecError,
  decodeVarint,
  encodeVarint,
  varintLength,
  writeVarint,
} from "../../protocol/mod.ts";

const known: Array<[number, number[]]> = [
  [0, [0x00]],
  [1, [0x01]],
  [127, [0x7f]],
  [128, [0x80, 0x01]],
  [300, [0xac, 0x02]],
  [16_383, [0xff, 0x7f]],
  [16_384, [0x80, 0x80, 0x01]],
  [16_777_216, [0x80, 0x80, 0x80, 0x08]],
  [0xffff_ffff, [0xff, 0xff, 0xff, 0xff, 0x0f]],
  [2 ** 35, [0x80, 0x80, 0x80, 0x80, 0x80, 0x01]],
  [Number.MAX_SAFE_INTEGER, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]],
];

function codecTitle(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof CodecError, `expected CodecError, got ${error}`);
    return error.title;
  }
  assert.fail("expected a CodecError");
}

Deno.test("varint: known LEB128 encodings", () => {
  for (const [value, bytes] of known) {
    assert.deepEqual([...encodeVarint(value)], bytes, `encode ${value}`);
    assert.equal(varintLength(value), bytes.length, `length ${value}`);
    assert.deepEqual(decodeVarint(Uint8Array.from(bytes)), { value, length: bytes.length });
  }
});

Deno.test("varint: round-trips random values of every width", () => {
  let seed = 7;
  const rand = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
  for (let i = 0; i < 2000; i++) {
    const value = Math.floor(rand() * 2 ** Math.floor(rand() * 53));
    const bytes = encodeVarint(value);
    assert.equal(bytes.length, varintLength(value));
    assert.deepEqual(decodeVarint(bytes), { value, length: bytes.length });
  }
});

Deno.test("varint: writeVarint writes at an offset and returns the end", () => {
  const out = new Uint8Array(5);
  assert.equal(writeVarint(out, 2, 300), 4);
  assert.deepEqual([...out], [0, 0, 0xac, 0x02, 0]);
});

Deno.test("varint: decoding at an offset and within an end bound", () => {
  const bytes = Uint8Array.from([0xff, 0xac, 0x02, 0x05]);
  assert.deepEqual(decodeVarint(bytes, 1), { value: 300, length: 2 });
  assert.equal(decodeVarint(bytes, 1, 2), null);
});

Deno.test("varint: every proper prefix means need more bytes", () => {
  const bytes = encodeVarint(Number.MAX_SAFE_INTEGER);
  for (let cut = 0; cut < bytes.length; cut++) assert.equal(decodeVarint(bytes, 0, cut), null);
});

Deno.test("varint: non-minimal encodings are accepted", () => {
  assert.deepEqual(decodeVarint(Uint8Array.from([0x80, 0x00])), { value: 0, length: 2 });
  assert.deepEqual(decodeVarint(Uint8Array.from([0x81, 0x80, 0x00])), { value: 1, length: 3 });
});

Deno.test("varint: 11 octets is Varint Overflow", () => {
  const eleven = new Uint8Array(11).fill(0x80);
  eleven[10] = 0x00;
  assert.equal(codecTitle(() => decodeVarint(eleven)), "Varint Overflow");
  // Ten continuation octets already prove it, with no 11th octet present.
  assert.equal(codecTitle(() => decodeVarint(eleven.subarray(0, 10))), "Varint Overflow");
});

Deno.test("varint: a value over 64 bits is Varint Overflow", () => {
  const over = Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]);
  assert.equal(codecTitle(() => decodeVarint(over)), "Varint Overflow");
  const err = (() => {
    try {
      decodeVarint(over);
    } catch (e) {
      return e as CodecError;
    }
  })()!;
  assert.equal(err.status, 400);
  assert.equal(err.fatal, true);
});

Deno.test("varint: 2^64 - 1 decodes (rounded) without error", () => {
  const max = Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
  const decoded = decodeVarint(max)!;
  assert.equal(decoded.length, 10);
  assert.equal(decoded.value, 2 ** 64); // nearest double to 2^64 - 1
});

Deno.test("varint: encoding refuses negative, fractional and unsafe values", () => {
  for (const bad of [-1, 1.5, Number.NaN, 2 ** 53, Infinity]) {
    assert.throws(() => encodeVarint(bad), RangeError);
  }
});

Deno.test("varint: assertU32 bounds identifiers", () => {
  assertU32("channel_id", 0);
  assertU32("channel_id", 0xffff_ffff);
  const title = codecTitle(() => assertU32("sequence", 0x1_0000_0000));
  assert.equal(title, "Identifier Out Of Range");
  assert.equal(codecTitle(() => assertU32("sequence", -1)), "Identifier Out Of Range");
});
