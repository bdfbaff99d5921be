/**
 * The one-way patterns N, K and X: every vector of the shared one-way file (cacophony),
 * reproduced byte for byte on both sides with each crypto backend, and the X helpers
 * (writeOneWayX / readOneWayX) against tampering, truncation, another prologue or recipient,
 * and low-order keys.
 */
import assert from "node:assert/strict";
import { bytesToHex } from "@noble/hashes/utils.js";
import { HandshakeState, NoiseError, readOneWayX, writeOneWayX } from "../../protocol/noise.ts";
import { defaultBackend } from "../../protocol/crypto.ts";
import {
  BACKENDS,
  fromHex,
  handshakes,
  keypair,
  loadVectors,
  patternOf,
} from "../helpers/noise_vectors.ts";

// A copy of shared/vectors/noise-oneway-25519-chachapoly-blake2s.json (public domain), kept in
// the repository so a clean clone can run it.
const VECTORS_PATH = new URL("./noise_oneway_vectors.json", import.meta.url);

const vectors = await loadVectors(VECTORS_PATH);
const te = new TextEncoder();

Deno.test("the one-way vector file covers N, K and X", () => {
  const names = vectors.map((v) => v.protocol_name).sort();
  assert.deepEqual(names, ["K", "N", "X"].map((p) => `Noise_${p}_25519_ChaChaPoly_BLAKE2s`));
});

for (const backend of BACKENDS) {
  for (const v of vectors) {
    const pattern = patternOf(v);
    Deno.test(`one-way vector ${v.protocol_name} (${backend.name} backend)`, () => {
      assert.ok(pattern, v.protocol_name);
      const { init, resp } = handshakes(v, pattern, backend);
      assert.equal(init.protocolName, v.protocol_name);
      assert.ok(init.oneWay && resp.oneWay);
      const [first, ...rest] = v.messages;
      const msg = init.writeMessage(fromHex(first.payload));
      assert.equal(bytesToHex(msg), first.ciphertext, "handshake message");
      assert.equal(bytesToHex(resp.readMessage(msg)), first.payload, "handshake payload");
      assert.ok(init.isComplete() && resp.isComplete());
      assert.equal(bytesToHex(init.getHandshakeHash()), v.handshake_hash);
      assert.equal(bytesToHex(resp.getHandshakeHash()), v.handshake_hash);
      // The responder knows the initiator's static key: pre-shared (K) or transmitted (X).
      if (v.init_static) {
        assert.equal(
          bytesToHex(resp.remoteStatic!),
          bytesToHex(backend.publicKeyOf(fromHex(v.init_static))),
        );
      } else {
        assert.equal(resp.remoteStatic, null);
      }
      const send = init.splitOneWay();
      const recv = resp.splitOneWay();
      for (const [i, m] of rest.entries()) {
        const ct = send.encrypt(fromHex(m.payload));
        assert.equal(bytesToHex(ct), m.ciphertext, `transport message ${i + 1}`);
        assert.equal(bytesToHex(recv.decrypt(ct)), m.payload, `transport payload ${i + 1}`);
      }
    });
  }
}

Deno.test("X vector through writeOneWayX / readOneWayX", () => {
  const v = vectors.find((x) => x.protocol_name.startsWith("Noise_X_"))!;
  for (const backend of BACKENDS) {
    const sender = keypair(backend, v.init_static)!;
    const recipient = keypair(backend, v.resp_static)!;
    const message = writeOneWayX({
      sender,
      recipient: recipient.publicKey,
      prologue: fromHex(v.init_prologue),
      payload: fromHex(v.messages[0].payload),
      e: keypair(backend, v.init_ephemeral),
      backend,
    });
    assert.equal(bytesToHex(message), v.messages[0].ciphertext);
    const read = readOneWayX({ recipient, prologue: fromHex(v.resp_prologue), message, backend });
    assert.equal(bytesToHex(read.payload), v.messages[0].payload);
    assert.deepEqual(read.senderStatic, sender.publicKey);
    assert.equal(bytesToHex(read.handshakeHash), v.handshake_hash);
  }
});

function isNoise(code: string) {
  return (err: unknown) => {
    assert.ok(err instanceof NoiseError, `expected NoiseError, got ${err}`);
    assert.equal(err.code, code, err.message);
    return true;
  };
}

Deno.test("readOneWayX rejects tampering at every byte, truncation, another prologue or recipient", () => {
  const sender = defaultBackend.generateKeypair();
  const recipient = defaultBackend.generateKeypair();
  const other = defaultBackend.generateKeypair();
  const prologue = te.encode("commucat-rotate-key");
  const payload = te.encode("session-1");
  const message = writeOneWayX({ sender, recipient: recipient.publicKey, prologue, payload });
  assert.equal(message.length, 32 + 48 + payload.length + 16);
  for (let pos = 0; pos < message.length; pos++) {
    const bad = message.slice();
    bad[pos] ^= 0x01;
    assert.throws(() => readOneWayX({ recipient, prologue, message: bad }), (err) => {
      assert.ok(err instanceof NoiseError, String(err));
      assert.ok(err.code === "decrypt" || err.code === "key", err.message);
      return true;
    }, `byte ${pos}`);
  }
  assert.throws(
    () => readOneWayX({ recipient, prologue, message: message.subarray(0, 95) }),
    isNoise("length"),
  );
  assert.throws(
    () => readOneWayX({ recipient, prologue: te.encode("other"), message }),
    isNoise("decrypt"),
  );
  assert.throws(() => readOneWayX({ recipient: other, prologue, message }), isNoise("decrypt"));
  const ok = readOneWayX({ recipient, prologue, message });
  assert.deepEqual(ok.payload, payload);
  assert.deepEqual(ok.senderStatic, sender.publicKey);
});

Deno.test("X to a low-order recipient key, or with a low-order ephemeral, is a key error", () => {
  const sender = defaultBackend.generateKeypair();
  const recipient = defaultBackend.generateKeypair();
  const zero = new Uint8Array(32);
  const one = new Uint8Array(32);
  one[0] = 1;
  for (const bad of [zero, one]) {
    assert.throws(
      () =>
        writeOneWayX({
          sender,
          recipient: bad,
          prologue: te.encode("p"),
          payload: new Uint8Array(),
        }),
      isNoise("key"),
    );
  }
  const message = writeOneWayX({
    sender,
    recipient: recipient.publicKey,
    prologue: te.encode("p"),
    payload: new Uint8Array(),
  });
  message.set(zero, 0);
  assert.throws(
    () => readOneWayX({ recipient, prologue: te.encode("p"), message }),
    isNoise("key"),
  );
  assert.throws(
    () =>
      writeOneWayX({
        sender,
        recipient: new Uint8Array(31),
        prologue: te.encode("p"),
        payload: new Uint8Array(),
      }),
    isNoise("key"),
  );
});

Deno.test("one-way handshakes refuse a second message and split(); K needs the sender's key", () => {
  const sender = defaultBackend.generateKeypair();
  const recipient = defaultBackend.generateKeypair();
  const hs = new HandshakeState({ pattern: "N", initiator: true, rs: recipient.publicKey });
  hs.writeMessage(te.encode("x"));
  assert.throws(() => hs.writeMessage(), isNoise("state"));
  assert.throws(() => hs.split(), isNoise("state"));
  assert.throws(
    () => new HandshakeState({ pattern: "K", initiator: false, s: recipient }),
    isNoise("key"),
  );
  const k = new HandshakeState({
    pattern: "K",
    initiator: false,
    s: recipient,
    rs: sender.publicKey,
  });
  assert.equal(k.isMyTurn(), false);
  assert.throws(() => k.writeMessage(), isNoise("state"));
});
