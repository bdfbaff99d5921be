/**
 * Drives hostile byte streams through the incremental decoder: random buffers and valid
 * encodings that were flipped, truncated, spliced and extended, fed in random chunk sizes.
 * The decoder may only return frames, return null (need more) or throw a CodecError with
 * one of the nine titles; it must terminate and must not depend on how bytes were chunked.
 * Seeded, so a failure names the case that reproduces it.
 */
import assert from "node:assert/strict";
import { bytesToHex } from "@noble/hashes/utils.js";
import { concatChunks } from "../../protocol/bytes.ts";
import {
  CODEC_ERROR_STATUS,
  CODEC_ERROR_TITLES,
  CodecError,
  encodeControl,
  encodeFrame,
  encodeVarint,
  type Frame,
  FrameDecoder,
  FrameType,
} from "../../protocol/mod.ts";

const SEED = 0xc0ffee;
const CASES = 100_000;

/** mulberry32: small, fast, good enough to explore inputs reproducibly. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

function corpus(): Uint8Array[] {
  const out: Uint8Array[] = [];
  const payloads = [0, 1, 2, 16, 127, 128, 300, 1024].map((n) =>
    Uint8Array.from({ length: n }, (_, i) => (i * 31 + n) & 0xff)
  );
  for (const payload of payloads) {
    for (const type of [FrameType.Msg, FrameType.KeyUpdate]) {
      out.push(encodeFrame({ type, channel: payload.length, sequence: 0xffff_fff0, payload }));
    }
  }
  const values: unknown[] = [
    {},
    { ack: 12 },
    { members: ["a", "b@remote.example"], relay: true },
    { pattern: "XK", device_id: "dev-1", client_static: "ab".repeat(32), handshake: "00ff" },
    { type: "about:blank", title: "Varint Overflow", status: 400, detail: "x", fatal: true },
    "a string",
    [1, 2, [3, { deep: null }]],
    { text: "ünïcödé ✓ 🐈" },
  ];
  const controlTypes = Object.values(FrameType).filter((t) =>
    t !== FrameType.Msg && t !== FrameType.KeyUpdate
  );
  values.forEach((value, i) => {
    out.push(encodeControl(controlTypes[i % controlTypes.length], i * 1000, i, value));
  });
  // Hand-made edge cases: non-minimal varints, maximum identifiers.
  out.push(Uint8Array.from([0x07, 0x05, 0x81, 0x00, 0x02, 0x02, 0x68, 0x69]));
  out.push(
    Uint8Array.from([0x0c, 0x05, 0xff, 0xff, 0xff, 0xff, 0x0f, 0xff, 0xff, 0xff, 0xff, 0x0f, 0]),
  );
  return out;
}

function pick<T>(rand: () => number, list: readonly T[]): T {
  return list[Math.floor(rand() * list.length)];
}

function randomBytes(rand: () => number, length: number): Uint8Array {
  return Uint8Array.from({ length }, () => Math.floor(rand() * 256));
}

/** One hostile input: random, or valid frames mutated in one or more ways. */
function makeInput(rand: () => number, seeds: Uint8Array[]): Uint8Array {
  if (rand() < 0.2) return randomBytes(rand, Math.floor(rand() * 48));
  const frames = Array.from({ length: 1 + Math.floor(rand() * 3) }, () => pick(rand, seeds));
  let input = concatChunks(frames);
  const mutations = 1 + Math.floor(rand() * 3);
  for (let m = 0; m < mutations; m++) {
    const kind = Math.floor(rand() * 6);
    if (kind === 0 && input.length > 0) { // flip a few bytes
      input = input.slice();
      const flips = 1 + Math.floor(rand() * 3);
      for (let i = 0; i < flips; i++) {
        input[Math.floor(rand() * input.length)] ^= 1 << Math.floor(rand() * 8);
      }
    } else if (kind === 1 && input.length > 0) { // replace a byte with a random one
      input = input.slice();
      input[Math.floor(rand() * input.length)] = Math.floor(rand() * 256);
    } else if (kind === 2) { // truncate
      input = input.subarray(0, Math.floor(rand() * (input.length + 1)));
    } else if (kind === 3) { // splice two encodings at random points
      const other = pick(rand, seeds);
      const cutA = Math.floor(rand() * (input.length + 1));
      const cutB = Math.floor(rand() * (other.length + 1));
      input = concatChunks([input.subarray(0, cutA), other.subarray(cutB)]);
    } else if (kind === 4) { // insert hostile varints (long, huge, overflowing)
      const hostile = pick(rand, [
        Uint8Array.from([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00]),
        Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
        encodeVarint(16 * 1024 * 1024 + 1),
        encodeVarint(2 ** 32),
        encodeVarint(Math.floor(rand() * 2 ** 40)),
      ]);
      const at = Math.floor(rand() * (input.length + 1));
      input = concatChunks([input.subarray(0, at), hostile, input.subarray(at)]);
    } else { // append random garbage
      input = concatChunks([input, randomBytes(rand, Math.floor(rand() * 16))]);
    }
  }
  return input;
}

type Outcome = { frames: Uint8Array[]; error: string | null };

/** Feeds `input` in the given chunk sizes, draining after each push. */
function run(input: Uint8Array, chunkSize: () => number): Outcome {
  const decoder = new FrameDecoder();
  const frames: Uint8Array[] = [];
  let offset = 0;
  let calls = 0;
  try {
    while (offset < input.length) {
      const n = Math.max(1, chunkSize());
      // Push a copy half the time, a view the other half: both must behave the same.
      const chunk = input.subarray(offset, offset + n);
      decoder.push((offset & 1) === 0 ? chunk.slice() : chunk);
      offset += n;
      for (;;) {
        calls++;
        // Every frame consumes at least 2 octets, so more calls than this is a hang.
        assert.ok(calls <= 2 * input.length + 2, "decoder did not terminate");
        const frame: Frame | null = decoder.next();
        if (frame === null) break;
        assertFrame(frame);
        frames.push(encodeFrame(frame));
      }
    }
    return { frames, error: null };
  } catch (error) {
    if (error instanceof assert.AssertionError) throw error;
    assert.ok(error instanceof CodecError, `non-codec exception: ${error}`);
    assert.ok(CODEC_ERROR_TITLES.includes(error.title), `unknown title ${error.title}`);
    assert.equal(error.status, CODEC_ERROR_STATUS[error.title]);
    assert.equal(error.fatal, true);
    return { frames, error: error.title };
  }
}

function assertFrame(frame: Frame): void {
  assert.ok(frame.type >= 1 && frame.type <= 0x0d);
  assert.ok(Number.isInteger(frame.channel) && frame.channel >= 0 && frame.channel <= 0xffff_ffff);
  assert.ok(Number.isInteger(frame.sequence) && frame.sequence >= 0);
  assert.ok(frame.sequence <= 0xffff_ffff);
  assert.ok(frame.payload instanceof Uint8Array);
  const control = frame.type !== FrameType.Msg && frame.type !== FrameType.KeyUpdate;
  assert.equal("json" in frame, control);
}

Deno.test(`fuzz: ${CASES} hostile buffers in random chunks give frames, null or codec errors`, () => {
  const rand = prng(SEED);
  const seeds = corpus();
  const titles = new Map<string, number>();
  let framesSeen = 0;
  for (let i = 0; i < CASES; i++) {
    const input = makeInput(rand, seeds);
    const maxChunk = 1 + Math.floor(rand() * 24);
    let outcome: Outcome;
    let whole: Outcome;
    try {
      outcome = run(input, () => 1 + Math.floor(rand() * maxChunk));
      whole = run(input, () => input.length);
    } catch (error) {
      throw new Error(`case ${i} (seed ${SEED}) input ${bytesToHex(input)}: ${error}`);
    }
    // Chunking must not change what the stream means.
    assert.equal(outcome.error, whole.error, `case ${i}: error differs by chunking`);
    assert.deepEqual(outcome.frames, whole.frames, `case ${i}: frames differ by chunking`);
    framesSeen += outcome.frames.length;
    if (outcome.error) titles.set(outcome.error, (titles.get(outcome.error) ?? 0) + 1);
  }
  // The corpus must really exercise the decoder: frames and most error kinds appear.
  assert.ok(framesSeen > CASES / 4, `only ${framesSeen} frames decoded`);
  for (
    const title of [
      "Invalid Frame Type",
      "Invalid Control Payload",
      "Frame Too Large",
      "Payload Too Large",
      "Identifier Out Of Range",
      "Varint Overflow",
      "Truncated Frame",
    ]
  ) {
    assert.ok((titles.get(title) ?? 0) > 0, `fuzzing never produced ${title}`);
  }
});

Deno.test("fuzz: bytes 0x00..0xff after each valid prefix never escape the codec errors", () => {
  const wire = encodeControl(FrameType.Join, 5, 6, { members: ["a"], relay: false });
  for (let cut = 0; cut < wire.length; cut++) {
    for (let b = 0; b < 256; b++) {
      const input = wire.slice();
      input[cut] = b;
      run(input, () => 3);
    }
  }
});
