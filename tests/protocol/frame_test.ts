import assert from "node:assert/strict";
import {
  CODEC_ERROR_STATUS,
  CODEC_ERROR_TITLES,
  CodecError,
  decodeFrame,
  encodeControl,
  encodedFrameLength,
  encodeFrame,
  encodeFrames,
  encodeVarint,
  errorFrame,
  type Frame,
  FrameDecoder,
  FrameType,
  isControlType,
  MAX_CONTROL_JSON_LEN,
  MAX_FRAME_LEN,
  plainAck,
  ProtocolError,
} from "../../protocol/mod.ts";

const enc = new TextEncoder();
const bytes = (...parts: Array<number | number[] | Uint8Array>) =>
  Uint8Array.from(parts.flatMap((p) => typeof p === "number" ? [p] : [...p]));

/** Runs `fn`, asserts it throws a CodecError, returns it. */
function codecError(fn: () => unknown): CodecError {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof CodecError, `expected CodecError, got ${error}`);
    return error;
  }
  assert.fail("expected a CodecError");
}

/** Decodes a whole buffer pushed at once; throws like the decoder. */
function decodeAll(input: Uint8Array): Frame[] {
  const decoder = new FrameDecoder();
  decoder.push(input);
  const frames: Frame[] = [];
  for (let f = decoder.next(); f !== null; f = decoder.next()) frames.push(f);
  return frames;
}

const ALL_TYPES = Object.values(FrameType);

function sampleFrame(type: FrameType, channel = 7, sequence = 42): Frame {
  const payload = isControlType(type)
    ? enc.encode(JSON.stringify({ kind: type, text: "héllo ✓" }))
    : Uint8Array.from([0, 1, 2, 0xff, 0x80]);
  return { type, channel, sequence, payload };
}

// --- byte-exact known encodings (written by hand from ccp1.md §1) ---------------------

Deno.test("frame: MSG channel 1 seq 2 payload 'hi' is 06 05 01 02 02 68 69", () => {
  const wire = encodeFrame({
    type: FrameType.Msg,
    channel: 1,
    sequence: 2,
    payload: enc.encode("hi"),
  });
  assert.deepEqual([...wire], [0x06, 0x05, 0x01, 0x02, 0x02, 0x68, 0x69]);
  const [frame] = decodeAll(wire);
  assert.equal(frame.type, FrameType.Msg);
  assert.equal(frame.channel, 1);
  assert.equal(frame.sequence, 2);
  assert.deepEqual([...frame.payload], [0x68, 0x69]);
  assert.equal(frame.json, undefined);
});

Deno.test("frame: ACK {} with multi-octet channel and sequence", () => {
  // channel 300 = ac 02, sequence 128 = 80 01, payload "{}" = 7b 7d; body = 1+2+2+1+2 = 8
  const wire = encodeControl(FrameType.Ack, 300, 128, {});
  assert.deepEqual([...wire], [0x08, 0x06, 0xac, 0x02, 0x80, 0x01, 0x02, 0x7b, 0x7d]);
  const [frame] = decodeAll(wire);
  assert.deepEqual(frame.json, {});
});

Deno.test("frame: KEY_UPDATE with empty payload and max identifiers", () => {
  const wire = encodeFrame({
    type: FrameType.KeyUpdate,
    channel: 0xffff_ffff,
    sequence: 0,
    payload: new Uint8Array(0),
  });
  // body = 09 | ff ff ff ff 0f | 00 | 00  → 8 octets
  assert.deepEqual([...wire], [0x08, 0x09, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, 0x00]);
  assert.equal(decodeAll(wire)[0].channel, 0xffff_ffff);
});

Deno.test("frame: a 200-octet MSG has a two-octet frame_len", () => {
  const payload = new Uint8Array(200).fill(0xab);
  const wire = encodeFrame({ type: FrameType.Msg, channel: 0, sequence: 0, payload });
  // body = 1 + 1 + 1 + 2 (200 = c8 01) + 200 = 205 = cd 01
  assert.deepEqual([...wire.subarray(0, 7)], [0xcd, 0x01, 0x05, 0x00, 0x00, 0xc8, 0x01]);
  assert.equal(wire.length, 207);
  assert.equal(encodedFrameLength({ type: FrameType.Msg, channel: 0, sequence: 0, payload }), 207);
});

// --- round trips ---------------------------------------------------------------------

Deno.test("frame: every type round-trips; control types carry parsed json", () => {
  for (const type of ALL_TYPES) {
    const frame = sampleFrame(type, 65_536, 0xffff_ffff);
    const [decoded] = decodeAll(encodeFrame(frame));
    assert.equal(decoded.type, type);
    assert.equal(decoded.channel, 65_536);
    assert.equal(decoded.sequence, 0xffff_ffff);
    assert.deepEqual(decoded.payload, frame.payload);
    if (isControlType(type)) {
      assert.deepEqual(decoded.json, { kind: type, text: "héllo ✓" });
    } else {
      assert.equal("json" in decoded, false);
    }
  }
});

Deno.test("frame: only MSG and KEY_UPDATE are opaque", () => {
  const opaque = ALL_TYPES.filter((t) => !isControlType(t));
  assert.deepEqual(opaque, [FrameType.Msg, FrameType.KeyUpdate]);
});

Deno.test("frame: encodeFrames writes many frames back to back in one buffer", () => {
  const frames = ALL_TYPES.map((t, i) => sampleFrame(t, i, i * 1000));
  const batch = encodeFrames(frames);
  const separately = frames.map(encodeFrame);
  assert.equal(batch.length, separately.reduce((n, b) => n + b.length, 0));
  let offset = 0;
  for (const one of separately) {
    assert.deepEqual(batch.subarray(offset, offset + one.length), one);
    offset += one.length;
  }
  assert.deepEqual(decodeAll(batch).map((f) => f.sequence), frames.map((f) => f.sequence));
  assert.equal(encodeFrames([]).length, 0);
});

Deno.test("frame: encodeFrames validates every frame before writing", () => {
  const bad = { type: FrameType.Msg, channel: -1, sequence: 0, payload: new Uint8Array() };
  const err = codecError(() => encodeFrames([sampleFrame(FrameType.Msg), bad]));
  assert.equal(err.title, "Identifier Out Of Range");
});

Deno.test("frame: decodeFrame reads one frame and reports its length", () => {
  const a = encodeFrame(sampleFrame(FrameType.Msg));
  const b = encodeControl(FrameType.Join, 1, 1, { members: ["x"] });
  const both = bytes(a, b);
  const first = decodeFrame(both)!;
  assert.equal(first.length, a.length);
  const second = decodeFrame(both, first.length)!;
  assert.equal(second.frame.type, FrameType.Join);
  assert.equal(second.length, b.length);
  assert.equal(decodeFrame(both.subarray(0, a.length - 1)), null);
});

// --- incremental decoding ------------------------------------------------------------

Deno.test("decoder: a frame truncated at every offset needs more, then completes", () => {
  const frames = [
    encodeFrame({ type: FrameType.Msg, channel: 1, sequence: 2, payload: enc.encode("hi") }),
    encodeControl(FrameType.Hello, 300, 70_000, { pattern: "XK", list: [1, 2, 3] }),
    encodeFrame({ type: FrameType.Msg, channel: 9, sequence: 9, payload: new Uint8Array(300) }),
  ];
  for (const wire of frames) {
    for (let cut = 0; cut < wire.length; cut++) {
      const decoder = new FrameDecoder();
      decoder.push(wire.subarray(0, cut));
      assert.equal(decoder.next(), null, `cut at ${cut} must need more`);
      assert.equal(decoder.buffered, cut);
      decoder.push(wire.subarray(cut));
      const frame = decoder.next();
      assert.ok(frame, `cut at ${cut} must complete`);
      assert.deepEqual(encodeFrame(frame), wire);
      assert.equal(decoder.next(), null);
      assert.equal(decoder.buffered, 0);
    }
  }
});

Deno.test("decoder: byte-at-a-time and many frames per chunk give the same frames", () => {
  const frames = ALL_TYPES.map((t, i) => sampleFrame(t, i + 1, i + 100));
  const stream = encodeFrames(frames);
  const one = new FrameDecoder();
  const got: Frame[] = [];
  for (let i = 0; i < stream.length; i++) {
    one.push(stream.subarray(i, i + 1));
    for (let f = one.next(); f !== null; f = one.next()) got.push(f);
  }
  const whole = decodeAll(stream);
  assert.equal(got.length, frames.length);
  assert.deepEqual(got.map((f) => encodeFrame(f)), whole.map((f) => encodeFrame(f)));
});

Deno.test("decoder: payload ownership — views stay intact as more bytes arrive", () => {
  const decoder = new FrameDecoder();
  const a = encodeFrame({
    type: FrameType.Msg,
    channel: 1,
    sequence: 1,
    payload: enc.encode("first"),
  });
  const b = encodeFrame({
    type: FrameType.Msg,
    channel: 1,
    sequence: 2,
    payload: enc.encode("second"),
  });
  // Split `a` across chunks (assembled copy) and `b` inside one chunk (view).
  decoder.push(a.slice(0, 4));
  decoder.push(bytes(a.subarray(4), b));
  const first = decoder.next()!;
  const second = decoder.next()!;
  for (let i = 0; i < 50; i++) {
    decoder.push(encodeFrame({
      type: FrameType.Msg,
      channel: 1,
      sequence: 3 + i,
      payload: new Uint8Array(64).fill(i),
    }));
    decoder.next();
  }
  assert.equal(new TextDecoder().decode(first.payload), "first");
  assert.equal(new TextDecoder().decode(second.payload), "second");
});

Deno.test("decoder: a frame inside one chunk is not copied", () => {
  const chunk = encodeFrame({
    type: FrameType.Msg,
    channel: 1,
    sequence: 1,
    payload: enc.encode("abc"),
  });
  const decoder = new FrameDecoder();
  decoder.push(chunk);
  const frame = decoder.next()!;
  assert.equal(frame.payload.buffer, chunk.buffer);
});

// --- hostile bytes -------------------------------------------------------------------

Deno.test("decoder: frame_len of 11 octets is Varint Overflow", () => {
  const eleven = bytes(new Array(10).fill(0x80), 0x00);
  assert.equal(codecError(() => decodeAll(eleven)).title, "Varint Overflow");
});

Deno.test("decoder: frame_len over 64 bits is Varint Overflow", () => {
  const over = bytes(new Array(9).fill(0x80), 0x02);
  assert.equal(codecError(() => decodeAll(over)).title, "Varint Overflow");
});

Deno.test("decoder: frame_len one over 16 MiB is Frame Too Large with no body buffered", () => {
  const decoder = new FrameDecoder();
  decoder.push(encodeVarint(MAX_FRAME_LEN + 1));
  const err = codecError(() => decoder.next());
  assert.equal(err.title, "Frame Too Large");
  assert.equal(err.status, 413);
  assert.equal(err.fatal, true);
  // Exactly the limit is accepted (and waits for the body).
  const ok = new FrameDecoder();
  ok.push(encodeVarint(MAX_FRAME_LEN));
  assert.equal(ok.next(), null);
});

Deno.test("decoder: a huge 64-bit frame_len is Frame Too Large as soon as it shows", () => {
  const huge = bytes(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01);
  assert.equal(codecError(() => decodeAll(huge)).title, "Frame Too Large");
  const partial = new FrameDecoder();
  partial.push(huge.subarray(0, 4)); // 2^28 - 1 worth of bits, continuation still set
  assert.equal(codecError(() => partial.next()).title, "Frame Too Large");
});

Deno.test("decoder: a lower maxFrameLength is enforced", () => {
  const decoder = new FrameDecoder({ maxFrameLength: 10 });
  decoder.push(
    encodeFrame({ type: FrameType.Msg, channel: 1, sequence: 1, payload: new Uint8Array(20) }),
  );
  assert.equal(codecError(() => decoder.next()).title, "Frame Too Large");
  assert.throws(() => new FrameDecoder({ maxFrameLength: MAX_FRAME_LEN + 1 }), RangeError);
});

Deno.test("decoder: empty body is Truncated Frame", () => {
  assert.equal(codecError(() => decodeAll(bytes(0x00))).title, "Truncated Frame");
});

Deno.test("decoder: payload_len beyond the body is Truncated Frame", () => {
  // body: MSG ch 1 seq 2 payload_len 5, but only 2 payload octets → body len 6
  const wire = bytes(0x06, 0x05, 0x01, 0x02, 0x05, 0x68, 0x69);
  const err = codecError(() => decodeAll(wire));
  assert.equal(err.title, "Truncated Frame");
  assert.match(err.detail, /payload_len 5/);
});

Deno.test("decoder: octets after the payload inside the body are Truncated Frame", () => {
  const wire = bytes(0x07, 0x05, 0x01, 0x02, 0x02, 0x68, 0x69, 0x00);
  assert.equal(codecError(() => decodeAll(wire)).title, "Truncated Frame");
});

Deno.test("decoder: the body ending inside a header field is Truncated Frame", () => {
  for (const wire of [bytes(0x01, 0x05), bytes(0x02, 0x05, 0x80), bytes(0x03, 0x05, 0x01, 0x02)]) {
    assert.equal(codecError(() => decodeAll(wire)).title, "Truncated Frame");
  }
});

Deno.test("decoder: payload_len over 16 MiB is Payload Too Large", () => {
  const wire = bytes(0x08, 0x05, 0x01, 0x01, encodeVarint(MAX_FRAME_LEN + 1), 0x00);
  assert.equal(wire[0], 1 + 1 + 1 + 4 + 1);
  const err = codecError(() => decodeAll(wire));
  assert.equal(err.title, "Payload Too Large");
  assert.equal(err.status, 413);
});

Deno.test("decoder: unknown frame types are Invalid Frame Type", () => {
  for (const type of [0x00, 0x0e, 0x7f, 0xff]) {
    const err = codecError(() => decodeAll(bytes(0x04, type, 0x01, 0x01, 0x00)));
    assert.equal(err.title, "Invalid Frame Type");
    assert.equal(err.status, 400);
  }
});

Deno.test("decoder: identifiers over u32 are Identifier Out Of Range", () => {
  const bigChannel = bytes(0x08, 0x05, encodeVarint(2 ** 32), 0x01, 0x00);
  assert.equal(codecError(() => decodeAll(bigChannel)).title, "Identifier Out Of Range");
  const bigSeq = bytes(0x08, 0x05, 0x01, encodeVarint(2 ** 32), 0x00);
  assert.equal(codecError(() => decodeAll(bigSeq)).title, "Identifier Out Of Range");
});

Deno.test("decoder: an 11-octet channel_id is Varint Overflow", () => {
  const wire = bytes(0x0e, 0x05, new Array(10).fill(0x80), 0x00, 0x01, 0x00);
  assert.equal(codecError(() => decodeAll(wire)).title, "Varint Overflow");
});

function rawFrame(type: number, payload: Uint8Array): Uint8Array {
  // Built by hand so the encoder's own checks do not interfere.
  const body = bytes(type, 0x01, 0x01, encodeVarint(payload.length), payload);
  return bytes(encodeVarint(body.length), body);
}

Deno.test("decoder: invalid UTF-8 in a control frame is Invalid Control Payload", () => {
  for (
    const bad of [
      bytes(0x22, 0xff, 0x22),
      bytes(0x22, 0xc3, 0x22),
      bytes(0xef, 0xbb, 0xbf, 0x7b, 0x7d),
    ]
  ) {
    const err = codecError(() => decodeAll(rawFrame(FrameType.Join, bad)));
    assert.equal(err.title, "Invalid Control Payload");
    assert.equal(err.status, 400);
  }
  // The same bytes are fine in an opaque frame.
  assert.equal(decodeAll(rawFrame(FrameType.Msg, bytes(0xff)))[0].payload[0], 0xff);
});

Deno.test("decoder: invalid JSON in a control frame is Invalid Control Payload", () => {
  for (const text of ["", "{", "{'a':1}", "[1,]", "undefined", "{} {}"]) {
    const err = codecError(() => decodeAll(rawFrame(FrameType.Presence, enc.encode(text))));
    assert.equal(err.title, "Invalid Control Payload", `payload ${JSON.stringify(text)}`);
    assert.match(err.detail, /PRESENCE/);
  }
});

Deno.test("decoder: a control payload of 256 KiB + 1 is Control Payload Too Large", () => {
  const fits = enc.encode(JSON.stringify("x".repeat(MAX_CONTROL_JSON_LEN - 2)));
  assert.equal(fits.length, MAX_CONTROL_JSON_LEN);
  assert.equal(
    (decodeAll(rawFrame(FrameType.GroupEvent, fits))[0].json as string).length,
    MAX_CONTROL_JSON_LEN - 2,
  );
  const over = enc.encode(JSON.stringify("x".repeat(MAX_CONTROL_JSON_LEN - 1)));
  const err = codecError(() => decodeAll(rawFrame(FrameType.GroupEvent, over)));
  assert.equal(err.title, "Control Payload Too Large");
  assert.equal(err.status, 413);
});

Deno.test("decoder: after an error every next() throws the same error", () => {
  const decoder = new FrameDecoder();
  decoder.push(bytes(0x04, 0xee, 0x01, 0x01, 0x00));
  const first = codecError(() => decoder.next());
  decoder.push(encodeFrame(sampleFrame(FrameType.Msg)));
  assert.equal(codecError(() => decoder.next()), first);
});

Deno.test("decoder: JSON with __proto__ does not pollute prototypes", () => {
  const [frame] = decodeAll(rawFrame(FrameType.Typing, enc.encode('{"__proto__":{"polluted":1}}')));
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  assert.equal(Object.getPrototypeOf(frame.json), Object.prototype);
});

// --- encoder limits ------------------------------------------------------------------

Deno.test("encoder: limits and bad values raise the fitting CodecError", () => {
  const msg =
    (payload: Uint8Array, channel = 1, sequence = 1, type: number = FrameType.Msg) => () =>
      encodeFrame({ type: type as FrameType, channel, sequence, payload });
  assert.equal(codecError(msg(new Uint8Array(MAX_FRAME_LEN + 1))).title, "Payload Too Large");
  assert.equal(codecError(msg(new Uint8Array(MAX_FRAME_LEN))).title, "Frame Too Large");
  assert.equal(codecError(msg(new Uint8Array(1), 2 ** 32)).title, "Identifier Out Of Range");
  assert.equal(codecError(msg(new Uint8Array(1), 1, 1.5)).title, "Identifier Out Of Range");
  assert.equal(codecError(msg(new Uint8Array(1), 1, 1, 0x0e)).title, "Invalid Frame Type");
  assert.equal(
    codecError(msg(new Uint8Array(MAX_CONTROL_JSON_LEN + 1), 1, 1, FrameType.Ack)).title,
    "Control Payload Too Large",
  );
  // The largest MSG that fits: body exactly 16 MiB.
  const header = 1 + 1 + 1 + 4;
  const wire = encodeFrame({
    type: FrameType.Msg,
    channel: 1,
    sequence: 1,
    payload: new Uint8Array(MAX_FRAME_LEN - header),
  });
  assert.equal(decodeAll(wire)[0].payload.length, MAX_FRAME_LEN - header);
});

Deno.test("encoder: encodeControl refuses values without JSON and opaque types", () => {
  assert.equal(
    codecError(() => encodeControl(FrameType.Ack, 1, 1, undefined)).title,
    "Invalid Control Payload",
  );
  const cycle: Record<string, unknown> = {};
  cycle.self = cycle;
  assert.equal(
    codecError(() => encodeControl(FrameType.Ack, 1, 1, cycle)).title,
    "Invalid Control Payload",
  );
  assert.equal(
    codecError(() => encodeControl(FrameType.Ack, 1, 1, 1n)).title,
    "Invalid Control Payload",
  );
  assert.equal(
    codecError(() => encodeControl(FrameType.Msg, 1, 1, {})).title,
    "Invalid Frame Type",
  );
  assert.equal(
    codecError(() => encodeControl(FrameType.Ack, 1, 1, "x".repeat(MAX_CONTROL_JSON_LEN))).title,
    "Control Payload Too Large",
  );
});

// --- errors and ERROR frames ---------------------------------------------------------

Deno.test("errors: nine titles, each with a status; codec errors are fatal problems", () => {
  assert.equal(CODEC_ERROR_TITLES.length, 9);
  assert.equal(CODEC_ERROR_STATUS["Protocol Version Mismatch"], 426);
  for (const title of CODEC_ERROR_TITLES) {
    const err = new CodecError(title, "why");
    assert.ok(err instanceof ProtocolError);
    assert.ok(err instanceof Error);
    assert.ok([400, 413, 426].includes(err.status));
    assert.deepEqual(err.toProblem(5), {
      type: "about:blank",
      title,
      status: err.status,
      detail: "why",
      fatal: true,
      sequence: 5,
    });
  }
});

Deno.test("errors: ProtocolError problem omits sequence unless given", () => {
  const err = new ProtocolError("group join rejected", 403, "not a member of g1", { fatal: false });
  assert.deepEqual(err.toProblem(), {
    type: "about:blank",
    title: "group join rejected",
    status: 403,
    detail: "not a member of g1",
    fatal: false,
  });
  assert.equal(err.message, "group join rejected: not a member of g1");
});

Deno.test("errors: errorFrame encodes an ERROR frame with the problem JSON", () => {
  const problem = new CodecError("Varint Overflow", "frame_len longer than 10 octets").toProblem(3);
  const [frame] = decodeAll(errorFrame(problem, 0, 9));
  assert.equal(frame.type, FrameType.Error);
  assert.equal(frame.channel, 0);
  assert.equal(frame.sequence, 9);
  assert.deepEqual(frame.json, problem);
});

Deno.test("drain hands over every unread octet, including a partly read frame header", () => {
  const first = encodeFrame({
    type: FrameType.Msg,
    channel: 1,
    sequence: 1,
    payload: enc.encode("a"),
  });
  const second = encodeFrame({
    type: FrameType.Msg,
    channel: 1,
    sequence: 2,
    payload: new Uint8Array(300),
  });
  const tail = Uint8Array.from([0xde, 0xad, 0xbe, 0xef]);
  for (let cut = 0; cut <= second.length; cut++) {
    const decoder = new FrameDecoder();
    decoder.push(first);
    decoder.push(second.subarray(0, cut));
    assert.equal(decoder.next()?.sequence, 1);
    // Reading stops before the second frame is whole; its consumed header octets are kept.
    if (cut < second.length) assert.equal(decoder.next(), null);
    const rest = cut < second.length ? second.subarray(0, cut) : second;
    if (cut === second.length) assert.equal(decoder.next()?.sequence, 2);
    const drained = decoder.drain();
    assert.deepEqual(drained, cut === second.length ? new Uint8Array(0) : rest);
    assert.equal(decoder.buffered, 0);
    decoder.push(tail);
    assert.equal(decoder.buffered, tail.length);
    assert.deepEqual(decoder.drain(), tail);
  }
});

Deno.test('an ACK\'s `{"ack":N}` read without JSON.parse reads what JSON.parse reads', () => {
  const te = new TextEncoder();
  const exact = ["0", "7", "10", "4294967295", "9999999999", "123456"];
  const other = [
    "00",
    "01",
    "-1",
    "1.5",
    "1e3",
    " 1",
    "1 ",
    "",
    "12345678901",
    "0x1",
    "+1",
    '"1"',
    "null",
  ];
  for (const n of exact) {
    const text = `{"ack":${n}}`;
    assert.equal(plainAck(te.encode(text)), JSON.parse(text).ack, text);
  }
  const shapes = [
    ...other.map((n) => `{"ack":${n}}`),
    '{"ack":1,"device":"d"}',
    '{ "ack":1}',
    '{"ack" :1}',
    '{"ACK":1}',
    '{"ack":1}}',
    '{"ack":1',
    '["ack",1]',
  ];
  for (const text of shapes) assert.equal(plainAck(te.encode(text)), -1, text);
  // Through the decoder: the same json either way, and a malformed one still refused.
  for (const text of [...exact.map((n) => `{"ack":${n}}`), '{"ack":5,"device":"d"}']) {
    const bytes = encodeFrame({
      type: FrameType.Ack,
      channel: 1,
      sequence: 2,
      payload: te.encode(text),
    });
    const decoder = new FrameDecoder();
    decoder.push(bytes);
    assert.deepEqual(decoder.next()!.json, JSON.parse(text), text);
  }
  const bad = new FrameDecoder();
  bad.push(
    encodeFrame({ type: FrameType.Ack, channel: 1, sequence: 2, payload: te.encode('{"ack":01}') }),
  );
  assert.throws(
    () => bad.next(),
    (err) => err instanceof CodecError && err.title === "Invalid Control Payload",
  );
});
