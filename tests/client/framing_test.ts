import assert from "node:assert/strict";
import { concatChunks } from "../../protocol/bytes.ts";
import { FrameReader, FrameWriter } from "../../client/framing.ts";
import type { Transport } from "../../client/transport.ts";
import { encodeControl, encodeFrame, FrameType } from "../../protocol/frame.ts";
import { CipherState } from "../../protocol/noise.ts";
import { SecureStreamWriter } from "../../protocol/secure_stream.ts";

/** A transport fed from a script of chunks, recording writes. */
class ScriptedTransport implements Transport {
  readonly kind = "tcp" as const;
  readonly tls = false;
  readonly loopback = true;
  readonly writes: Uint8Array[] = [];
  constructor(private chunks: Uint8Array[]) {}
  read(): Promise<Uint8Array | null> {
    return Promise.resolve(this.chunks.shift() ?? null);
  }
  write(bytes: Uint8Array): Promise<void> {
    this.writes.push(bytes.slice());
    return Promise.resolve();
  }
  close(): void {}
}

/** Splits bytes at pseudo-random points (deterministic). */
function split(bytes: Uint8Array, seed: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let o = 0;
  let x = seed;
  while (o < bytes.length) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    const n = 1 + (x % 23);
    out.push(bytes.slice(o, o + n));
    o += n;
  }
  return out;
}

const key = new Uint8Array(32).fill(7);

Deno.test("FrameReader hands the bytes after the last handshake frame to the secure stream", async () => {
  const auth = encodeControl(FrameType.Auth, 0, 1, { handshake: "00" });
  const sealed = new SecureStreamWriter(new CipherState(key)).seal(
    concatChunks([
      encodeControl(FrameType.Ack, 0, 2, { handshake: "ok" }),
      encodeFrame({
        type: FrameType.Msg,
        channel: 3,
        sequence: 3,
        payload: new Uint8Array([1, 2]),
      }),
    ]),
  );
  for (const seed of [1, 2, 3, 4, 5]) {
    // AUTH and the start of the secure stream share chunks, split anywhere.
    const reader = new FrameReader(
      new ScriptedTransport(split(concatChunks([auth, sealed]), seed)),
    );
    const first = await reader.nextHandshakeFrame();
    assert.equal(first?.type, FrameType.Auth);
    reader.startStream(new CipherState(key));
    const ack = await reader.next();
    assert.deepEqual(ack?.json, { handshake: "ok" });
    const msg = await reader.next();
    assert.equal(msg?.channel, 3);
    assert.deepEqual(msg?.payload, new Uint8Array([1, 2]));
    assert.equal(await reader.next(), null);
  }
});

Deno.test("FrameReader reports a tampered secure chunk as a decrypt failure", async () => {
  const sealed = new SecureStreamWriter(new CipherState(key)).seal(
    encodeControl(FrameType.Ack, 0, 2, { handshake: "ok" }),
  );
  sealed[sealed.length - 1] ^= 1;
  const reader = new FrameReader(new ScriptedTransport([sealed]));
  reader.startStream(new CipherState(key));
  await assert.rejects(reader.next(), /Decrypt Failed|decrypt/);
});

Deno.test("FrameReader v1: frames split at every odd boundary come out whole", async () => {
  const frames = Array.from({ length: 20 }, (_, i) =>
    encodeFrame({
      type: FrameType.Msg,
      channel: i,
      sequence: i + 1,
      payload: new Uint8Array(i * 37).fill(i),
    }));
  const reader = new FrameReader(new ScriptedTransport(split(concatChunks(frames), 9)));
  reader.startStream(null);
  for (let i = 0; i < 20; i++) {
    const f = await reader.next();
    assert.equal(f?.sequence, i + 1);
    assert.equal(f?.payload.length, i * 37);
  }
  assert.equal(await reader.next(), null);
});

Deno.test("FrameWriter coalesces frames queued in one tick into one write", async () => {
  const transport = new ScriptedTransport([]);
  const writer = new FrameWriter(transport, null, () => {});
  const frames = [1, 2, 3].map((s) =>
    encodeFrame({ type: FrameType.Msg, channel: 1, sequence: s, payload: new Uint8Array([s]) })
  );
  for (const f of frames) writer.enqueue(f);
  await writer.flushed();
  assert.equal(transport.writes.length, 1);
  assert.deepEqual(transport.writes[0], concatChunks(frames));
  writer.enqueue(frames[0]);
  await writer.flushed();
  assert.equal(transport.writes.length, 2);
});
