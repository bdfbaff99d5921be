/**
 * Every Noise_*_25519_ChaChaPoly_BLAKE2s vector of the shared file (cacophony), reproduced byte
 * for byte on both sides, with each crypto backend.
 */
import assert from "node:assert/strict";
import { bytesToHex } from "@noble/hashes/utils.js";
import { HandshakeState, type PatternName } from "../../protocol/noise.ts";
import {
  type CryptoBackend,
  defaultBackend,
  nobleBackend,
  nodeBackend,
} from "../../protocol/crypto.ts";

// A copy of shared/vectors/noise-25519-chachapoly-blake2s.json (public domain), kept in the
// repository so a clean clone can run it.
const VECTORS_PATH = new URL("./noise_vectors.json", import.meta.url);

interface Vector {
  protocol_name: string;
  init_prologue: string;
  init_static?: string;
  init_ephemeral: string;
  init_remote_static?: string;
  resp_prologue: string;
  resp_static?: string;
  resp_ephemeral: string;
  resp_remote_static?: string;
  handshake_hash: string;
  messages: { payload: string; ciphertext: string }[];
}

function fromHex(hex: string): Uint8Array {
  if (hex.length % 2 !== 0 || !/^[0-9a-f]*$/i.test(hex)) throw new Error(`bad hex ${hex}`);
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

async function loadVectors(): Promise<Vector[]> {
  return JSON.parse(await Deno.readTextFile(VECTORS_PATH)).vectors;
}

function keypair(backend: CryptoBackend, privHex?: string) {
  if (!privHex) return undefined;
  const privateKey = fromHex(privHex);
  return { privateKey, publicKey: backend.publicKeyOf(privateKey) };
}

const vectors = await loadVectors();
const BACKENDS = [defaultBackend, nobleBackend, nodeBackend];

Deno.test("the vector file covers NN, NK, KK, XX, XK and IK", () => {
  const names = new Set(vectors.map((v) => v.protocol_name));
  for (const p of ["NN", "NK", "KK", "XX", "XK", "IK"]) {
    assert.ok(names.has(`Noise_${p}_25519_ChaChaPoly_BLAKE2s`), p);
  }
});

for (const backend of BACKENDS) {
  for (const [i, v] of vectors.entries()) {
    const pattern = /^Noise_([A-Z]+)_25519_ChaChaPoly_BLAKE2s$/.exec(v.protocol_name)?.[1];
    Deno.test(`vector ${i} ${v.protocol_name} (${backend.name} backend)`, () => {
      assert.ok(pattern, v.protocol_name);
      const init = new HandshakeState({
        pattern: pattern as PatternName,
        initiator: true,
        prologue: fromHex(v.init_prologue),
        s: keypair(backend, v.init_static),
        e: keypair(backend, v.init_ephemeral),
        rs: v.init_remote_static ? fromHex(v.init_remote_static) : undefined,
        backend,
      });
      const resp = new HandshakeState({
        pattern: pattern as PatternName,
        initiator: false,
        prologue: fromHex(v.resp_prologue),
        s: keypair(backend, v.resp_static),
        e: keypair(backend, v.resp_ephemeral),
        rs: v.resp_remote_static ? fromHex(v.resp_remote_static) : undefined,
        backend,
      });
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
