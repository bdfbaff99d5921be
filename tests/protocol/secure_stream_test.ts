import assert from "node:assert/strict";
import { concatChunks } from "../../protocol/bytes.ts";
import { CipherState, HandshakeState, NoiseError } from "../../protocol/noise.ts";
import {
  MAX_CHUNK_PLAINTEXT,
  sealedLength,
  SecureStreamReader,
  SecureStreamWriter,
} from "../../protocol/secure_stream.ts";
import { defaultBackend } from "../../protocol/crypto.ts";

function random(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
}

/** A writer/reader pair over the transport keys of a real XK handshake. */
function channel(options: { maxPlaintext?: number } = {}) {
  const server = defaultBackend.generateKeypair();
  const client = defaultBackend.generateKeypair();
  const prologue = new TextEncoder().encode("commucat");
  const init = new HandshakeState({
    pattern: "XK",
    initiator: true,
    prologue,
    s: client,
    rs: server.publicKey,
  });
  const resp = new HandshakeState({ pattern: "XK", initiator: false, prologue, s: server });
  resp.readMessage(init.writeMessage());
  init.readMessage(resp.writeMessage());
  resp.readMessage(init.writeMessage());
  const a = init.split(), b = resp.split();
  return {
    writer: new SecureStreamWriter(a.send, options),
    reader: new SecureStreamReader(b.recv),
    back: { writer: new SecureStreamWriter(b.send), reader: new SecureStreamReader(a.recv) },
  };
}

/** A writer/reader pair over one fixed key (cheaper than a handshake, for loops). */
function keyed(key: Uint8Array, options: { maxPlaintext?: number } = {}) {
  return {
    writer: new SecureStreamWriter(new CipherState(key), options),
    reader: new SecureStreamReader(new CipherState(key)),
  };
}

function chunkLengths(sealed: Uint8Array): number[] {
  const out: number[] = [];
  for (let off = 0; off < sealed.length;) {
    const len = (sealed[off] << 8) | sealed[off + 1];
    out.push(len);
    off += 2 + len;
  }
  return out;
}

Deno.test("round trip at many sizes, both directions", () => {
  const { writer, reader, back } = channel();
  const sizes = [
    1,
    2,
    15,
    16,
    17,
    100,
    1024,
    65518,
    65519,
    65520,
    65519 * 2,
    65519 * 2 + 1,
    200_000,
  ];
  for (const size of sizes) {
    const pt = random(size);
    const sealed = writer.seal(pt);
    assert.equal(sealed.length, sealedLength(size), `sealed length for ${size}`);
    const lengths = chunkLengths(sealed);
    assert.equal(lengths.length, Math.ceil(size / MAX_CHUNK_PLAINTEXT));
    assert.ok(lengths.every((l) => l >= 17 && l <= 65535));
    assert.deepEqual(concatChunks(reader.push(sealed)), pt, `size ${size}`);
    assert.equal(reader.buffered, 0);
    const reply = random(size % 5000 + 1);
    assert.deepEqual(concatChunks(back.reader.push(back.writer.seal(reply))), reply);
  }
});

Deno.test("empty plaintext seals to nothing and uses no nonce", () => {
  const { writer, reader } = channel();
  assert.equal(writer.seal(new Uint8Array(0)).length, 0);
  assert.deepEqual(reader.push(new Uint8Array(0)), []);
  // The next real chunk still decrypts, so no nonce was consumed.
  assert.deepEqual(
    concatChunks(reader.push(writer.seal(new Uint8Array([7])))),
    new Uint8Array([7]),
  );
});

Deno.test("chunks split at every offset decrypt the same", () => {
  const key = random(32);
  const pt = random(450); // 5 chunks of up to 100 octets
  const sealed = keyed(key, { maxPlaintext: 100 }).writer.seal(pt);
  assert.equal(chunkLengths(sealed).length, 5);
  // A fresh reader per split point, fed the stream as two reads split at `cut`.
  for (let cut = 0; cut <= sealed.length; cut++) {
    const { reader } = keyed(key);
    const out = [...reader.push(sealed.subarray(0, cut)), ...reader.push(sealed.subarray(cut))];
    assert.deepEqual(concatChunks(out), pt, `cut at ${cut}`);
  }
  // Three-way splits around every chunk boundary.
  for (let a = 0; a <= sealed.length; a += 7) {
    for (let b = a; b <= sealed.length; b += 13) {
      const { reader } = keyed(key);
      const out = [
        ...reader.push(sealed.subarray(0, a)),
        ...reader.push(sealed.subarray(a, b)),
        ...reader.push(sealed.subarray(b)),
      ];
      assert.deepEqual(concatChunks(out), pt, `cuts at ${a}, ${b}`);
    }
  }
  // And byte by byte.
  const { reader } = keyed(key);
  const out: Uint8Array[] = [];
  for (let i = 0; i < sealed.length; i++) out.push(...reader.push(sealed.subarray(i, i + 1)));
  assert.deepEqual(concatChunks(out), pt);
});

Deno.test("the reader copies partial input: reusing the read buffer is safe", () => {
  const { writer, reader } = channel();
  const pt = random(3000);
  const sealed = writer.seal(pt);
  const buf = new Uint8Array(700);
  const out: Uint8Array[] = [];
  for (let off = 0; off < sealed.length; off += buf.length) {
    const n = Math.min(buf.length, sealed.length - off);
    buf.set(sealed.subarray(off, off + n));
    out.push(...reader.push(buf.subarray(0, n)));
    buf.fill(0xee);
  }
  assert.deepEqual(concatChunks(out), pt);
});

Deno.test("a tampered chunk is fatal", () => {
  for (const pos of [2, 10, 40]) {
    const { writer, reader } = channel();
    const sealed = writer.seal(random(30));
    sealed[pos] ^= 0x20;
    assert.throws(
      () => reader.push(sealed),
      (e) => e instanceof NoiseError && e.code === "decrypt",
    );
    // The reader refuses anything afterwards, even valid chunks.
    assert.throws(() => reader.push(writer.seal(random(3))), /failed earlier/);
  }
  // A changed length prefix misaligns the stream: it fails too.
  const { writer, reader } = channel();
  const sealed = writer.seal(random(30));
  sealed[1] -= 1;
  assert.throws(() => reader.push(sealed), NoiseError);
});

Deno.test("replayed and reordered chunks are fatal", () => {
  {
    const { writer, reader } = channel();
    const c0 = writer.seal(random(10));
    reader.push(c0);
    assert.throws(() => reader.push(c0), (e) => e instanceof NoiseError && e.code === "decrypt");
  }
  {
    const { writer, reader } = channel();
    const c0 = writer.seal(random(10));
    const c1 = writer.seal(random(10));
    assert.throws(
      () => reader.push(concatChunks([c1, c0])),
      (e) => e instanceof NoiseError && e.code === "decrypt",
    );
  }
  {
    // Chunks from the other direction (different key) are refused.
    const { writer, back } = channel();
    assert.throws(() => back.reader.push(writer.seal(random(10))), NoiseError);
  }
});

Deno.test("empty and short chunk lengths are errors", () => {
  for (const len of [0, 1, 16]) {
    const { reader } = channel();
    const bytes = new Uint8Array(2 + len);
    bytes[0] = len >> 8;
    bytes[1] = len & 0xff;
    assert.throws(
      () => reader.push(bytes),
      (e) => e instanceof NoiseError && e.code === "length" && /chunk length/.test(e.message),
    );
  }
  // Split header, same rule.
  const { reader } = channel();
  reader.push(new Uint8Array([0]));
  assert.throws(() => reader.push(new Uint8Array([0])), /chunk length is 0/);
});

Deno.test("writer and reader need keyed CipherStates; maxPlaintext is validated", () => {
  assert.throws(() => new SecureStreamWriter(new CipherState(null)), NoiseError);
  assert.throws(() => new SecureStreamReader(new CipherState(null)), NoiseError);
  const cs = new CipherState(new Uint8Array(32));
  assert.throws(() => new SecureStreamWriter(cs, { maxPlaintext: 0 }), RangeError);
  assert.throws(() => new SecureStreamWriter(cs, { maxPlaintext: 65520 }), RangeError);
});

Deno.test("nonce exhaustion in the writer is fatal", () => {
  const key = new Uint8Array(32).fill(9);
  const cs = new CipherState(key);
  cs.setNonce(0xffff_ffff_ffff_fffen);
  const w = new SecureStreamWriter(cs, { maxPlaintext: 10 });
  // Two chunks are needed, only one nonce is left.
  assert.throws(
    () => w.seal(new Uint8Array(15)),
    (e) => e instanceof NoiseError && e.code === "nonce",
  );
  assert.throws(() => w.seal(new Uint8Array(1)), /failed earlier/);
});
