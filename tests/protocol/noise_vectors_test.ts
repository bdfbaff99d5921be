/**
 * Every Noise_*_25519_ChaChaPoly_BLAKE2s vector of the shared file (cacophony), reproduced byte
 * for byte on both sides, with each crypto backend.
 */
import assert from "node:assert/strict";
import { bytesToHex } from "@noble/hashes/utils.js";
import { BACKENDS, fromHex, handshakes, loadVectors, patternOf } from "../helpers/noise_vectors.ts";

// A copy of shared/vectors/noise-25519-chachapoly-blake2s.json (public domain), kept in the
// repository so a clean clone can run it.
const VECTORS_PATH = new URL("./noise_vectors.json", import.meta.url);

const vectors = await loadVectors(VECTORS_PATH);

Deno.test("the vector file covers NN, NK, KK, XX, XK and IK", () => {
  const names = new Set(vectors.map((v) => v.protocol_name));
  for (const p of ["NN", "NK", "KK", "XX", "XK", "IK"]) {
    assert.ok(names.has(`Noise_${p}_25519_ChaChaPoly_BLAKE2s`), p);
  }
});

for (const backend of BACKENDS) {
  for (const [i, v] of vectors.entries()) {
    const pattern = patternOf(v);
    Deno.test(`vector ${i} ${v.protocol_name} (${backend.name} backend)`, () => {
      assert.ok(pattern, v.protocol_name);
      const { init, resp } = handshakes(v, pattern, backend);
      assert.equal(init.protocolName, v.protocol_name);
      let m = 0;
      // Handshake: alternate writer/reader until both are complete.
      while (!init.isComplete()) {
        const [writer, reader] = m % 2 === 0 ? [init, resp] : [resp, init];
        const msg = v.messages[m];
        const ct = writer.writeMessage(fromHex(msg.payload));
        assert.equal(bytesToHex(ct), msg.ciphertext, `handshake message ${m}`);
        assert.equal(bytesToHex(reader.readMessage(ct)), msg.payload, `handshake payload ${m}`);
        m++;
      }
      assert.ok(resp.isComplete());
      assert.equal(bytesToHex(init.getHandshakeHash()), v.handshake_hash);
      assert.equal(bytesToHex(resp.getHandshakeHash()), v.handshake_hash);
      // Both sides learn the static keys the pattern transmits or pre-shares.
      if (v.init_static && pattern !== "NN" && pattern !== "NK") {
        assert.equal(
          bytesToHex(resp.remoteStatic!),
          bytesToHex(backend.publicKeyOf(fromHex(v.init_static))),
        );
      }
      if (v.resp_static) {
        assert.equal(
          bytesToHex(init.remoteStatic!),
          bytesToHex(backend.publicKeyOf(fromHex(v.resp_static))),
        );
      }
      const a = init.split();
      const b = resp.split();
      // Transport: after the handshake the next writer continues the alternation.
      for (; m < v.messages.length; m++) {
        const fromInit = m % 2 === 0;
        const [send, recv] = fromInit ? [a.send, b.recv] : [b.send, a.recv];
        const msg = v.messages[m];
        const ct = send.encrypt(fromHex(msg.payload));
        assert.equal(bytesToHex(ct), msg.ciphertext, `transport message ${m}`);
        assert.equal(bytesToHex(recv.decrypt(ct)), msg.payload, `transport payload ${m}`);
      }
    });
  }
}
