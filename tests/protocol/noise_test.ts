import assert from "node:assert/strict";
import { bytesToHex } from "@noble/hashes/utils.js";
import {
  CipherState,
  HandshakeState,
  importStaticKey,
  MAX_MESSAGE_LENGTH,
  MAX_PLAINTEXT_LENGTH,
  NoiseError,
  ONE_WAY_PATTERNS,
  type PatternName,
  PATTERNS,
} from "../../protocol/noise.ts";
import {
  type CryptoBackend,
  defaultBackend,
  hkdf,
  type Keypair,
  nobleAead,
  nobleBackend,
  nobleBlake2s,
  nobleEd25519,
  nobleHmacBlake2s,
  nobleHmacNodeBlake2s,
  nobleX25519,
  nodeAead,
  nodeBackend,
  nodeBlake2s,
  nodeEd25519,
  nodeHmacBlake2s,
  nodeX25519,
  RemoteKey,
} from "../../protocol/crypto.ts";

const te = new TextEncoder();
const PROLOGUE = te.encode("commucat");

function random(n: number): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(n));
}

function isNoiseError(code: string, pattern?: RegExp) {
  return (err: unknown) => {
    assert.ok(err instanceof NoiseError, `expected NoiseError, got ${err}`);
    assert.equal(err.code, code, err.message);
    if (pattern) assert.match(err.message, pattern);
    return true;
  };
}

interface Pair {
  init: HandshakeState;
  resp: HandshakeState;
  client: Keypair;
  server: Keypair;
}

function pair(pattern: PatternName, opts: { backend?: CryptoBackend } = {}): Pair {
  const backend = opts.backend ?? defaultBackend;
  const client = backend.generateKeypair();
  const server = backend.generateKeypair();
  const def = PATTERNS[pattern];
  const initNeedsS = def.preInitiator.length > 0 ||
    def.messages.some((m, i) => i % 2 === 0 && (m as readonly string[]).includes("s"));
  const respNeedsS = def.preResponder.length > 0 ||
    def.messages.some((m, i) => i % 2 === 1 && (m as readonly string[]).includes("s"));
  const init = new HandshakeState({
    pattern,
    initiator: true,
    prologue: PROLOGUE,
    s: initNeedsS ? client : undefined,
    rs: def.preResponder.length ? server.publicKey : undefined,
    backend,
  });
  const resp = new HandshakeState({
    pattern,
    initiator: false,
    prologue: PROLOGUE,
    s: respNeedsS ? server : undefined,
    rs: def.preInitiator.length ? client.publicKey : undefined,
    backend,
  });
  return { init, resp, client, server };
}

/** Runs the handshake to completion, each message carrying a payload; returns the messages. */
function complete(p: Pair): Uint8Array[] {
  const messages: Uint8Array[] = [];
  let i = 0;
  while (!p.init.isComplete()) {
    const [w, r] = i % 2 === 0 ? [p.init, p.resp] : [p.resp, p.init];
    const payload = te.encode(`payload ${i}`);
    const msg = w.writeMessage(payload);
    assert.deepEqual(r.readMessage(msg), payload);
    messages.push(msg);
    i++;
  }
  assert.ok(p.resp.isComplete());
  return messages;
}

for (const pattern of Object.keys(PATTERNS) as PatternName[]) {
  Deno.test(`${pattern}: both sides agree on h and the transport keys`, () => {
    const p = pair(pattern);
    complete(p);
    assert.deepEqual(p.init.getHandshakeHash(), p.resp.getHandshakeHash());
    const m = te.encode("hello");
    if (ONE_WAY_PATTERNS.has(pattern)) {
      assert.throws(() => p.init.split(), isNoiseError("state", /one-way/));
      const send = p.init.splitOneWay(), recv = p.resp.splitOneWay();
      assert.deepEqual(recv.decrypt(send.encrypt(m)), m);
      return;
    }
    assert.throws(() => p.init.splitOneWay(), isNoiseError("state", /interactive/));
    const a = p.init.split(), b = p.resp.split();
    assert.deepEqual(b.recv.decrypt(a.send.encrypt(m)), m);
    assert.deepEqual(a.recv.decrypt(b.send.encrypt(m)), m);
  });
}

Deno.test("XK and IK prove the initiator's static key to the responder", () => {
  for (const pattern of ["XK", "IK"] as const) {
    const p = pair(pattern);
    assert.equal(p.resp.remoteStatic, null, "unknown before the handshake");
    complete(p);
    assert.deepEqual(p.resp.remoteStatic, p.client.publicKey);
    assert.deepEqual(p.init.remoteStatic, p.server.publicKey);
  }
});

Deno.test("IK: responder learns rs after the first message", () => {
  const p = pair("IK");
  p.resp.readMessage(p.init.writeMessage());
  assert.deepEqual(p.resp.remoteStatic, p.client.publicKey);
});

Deno.test("tampered handshake message is rejected at every byte (XK msg1..3, IK msg1..2)", () => {
  const payload = te.encode("x");
  for (const pattern of ["XK", "IK"] as const) {
    const count = PATTERNS[pattern].messages.length;
    for (let target = 0; target < count; target++) {
      for (let pos = 0;; pos++) {
        // A fresh handshake driven up to message `target`, which gets one bit flipped at `pos`.
        const q = pair(pattern);
        for (let i = 0; i < target; i++) {
          const [w, r] = i % 2 === 0 ? [q.init, q.resp] : [q.resp, q.init];
          r.readMessage(w.writeMessage(payload));
        }
        const [w, r] = target % 2 === 0 ? [q.init, q.resp] : [q.resp, q.init];
        const msg = w.writeMessage(payload);
        if (pos >= msg.length) break;
        msg[pos] ^= 0x01;
        assert.throws(() => r.readMessage(msg), (err) => {
          assert.ok(err instanceof NoiseError, String(err));
          // A flipped ephemeral key is an unrelated point, so the decrypt fails; a low-order
          // point would be a key error instead.
          assert.ok(err.code === "decrypt" || err.code === "key", err.message);
          return true;
        }, `${pattern} message ${target + 1} byte ${pos}`);
        // The side that failed is unusable from then on.
        assert.throws(() => r.writeMessage(), isNoiseError("state", /failed earlier/));
      }
    }
  }
});

Deno.test("wrong prologue is rejected", () => {
  for (const pattern of ["XK", "IK", "NN"] as const) {
    const p = pair(pattern);
    const server = p.server;
    const resp = new HandshakeState({
      pattern,
      initiator: false,
      prologue: te.encode("commucaT"),
      s: pattern === "NN" ? undefined : server,
    });
    const init = new HandshakeState({
      pattern,
      initiator: true,
      prologue: PROLOGUE,
      s: pattern === "NN" ? undefined : p.client,
      rs: pattern === "NN" ? undefined : server.publicKey,
    });
    if (pattern === "NN") {
      // NN's first message has no key yet, so the mismatch shows on the second.
      resp.readMessage(init.writeMessage());
      assert.throws(() => init.readMessage(resp.writeMessage()), isNoiseError("decrypt"));
    } else {
      assert.throws(() => resp.readMessage(init.writeMessage()), isNoiseError("decrypt"));
    }
  }
});

Deno.test("XK/IK against the wrong responder static key fail", () => {
  for (const pattern of ["XK", "IK"] as const) {
    const server = defaultBackend.generateKeypair();
    const impostor = defaultBackend.generateKeypair();
    const client = defaultBackend.generateKeypair();
    const init = new HandshakeState({
      pattern,
      initiator: true,
      prologue: PROLOGUE,
      s: client,
      rs: server.publicKey,
    });
    const resp = new HandshakeState({
      pattern,
      initiator: false,
      prologue: PROLOGUE,
      s: impostor,
    });
    assert.throws(
      () => resp.readMessage(init.writeMessage(te.encode("hi"))),
      isNoiseError("decrypt"),
    );
  }
});

Deno.test("transport replay, reorder and tamper fail; a failed decrypt leaves the state unchanged", () => {
  const p = pair("XK");
  complete(p);
  const a = p.init.split(), b = p.resp.split();
  const c0 = a.send.encrypt(te.encode("zero"));
  const c1 = a.send.encrypt(te.encode("one"));
  // Reordered: c1 before c0.
  assert.throws(() => b.recv.decrypt(c1), isNoiseError("decrypt"));
  assert.equal(b.recv.nonce, 0n, "failed decrypt does not advance n");
  assert.deepEqual(b.recv.decrypt(c0), te.encode("zero"));
  // Replay of an already consumed ciphertext.
  assert.throws(() => b.recv.decrypt(c0), isNoiseError("decrypt", /replayed/));
  const t = new Uint8Array(c1);
  t[t.length - 1] ^= 0x80;
  assert.throws(() => b.recv.decrypt(t), isNoiseError("decrypt"));
  assert.deepEqual(b.recv.decrypt(c1), te.encode("one"));
  assert.equal(b.recv.nonce, 2n);
});

Deno.test("out-of-turn calls throw and change nothing", () => {
  const p = pair("XK");
  assert.throws(() => p.resp.writeMessage(), isNoiseError("state", /out of turn/));
  assert.throws(() => p.init.readMessage(new Uint8Array(48)), isNoiseError("state", /out of turn/));
  assert.throws(() => p.init.split(), isNoiseError("state", /not complete/));
  // The refused calls did not disturb the handshake.
  complete(p);
  assert.throws(() => p.init.writeMessage(), isNoiseError("state", /already complete/));
  assert.throws(() => p.resp.readMessage(new Uint8Array(64)), isNoiseError("state", /complete/));
  p.init.split();
  assert.throws(() => p.init.split(), isNoiseError("state", /already/));
});

Deno.test("missing keys and unknown patterns are refused with a named cause", () => {
  assert.throws(
    () => new HandshakeState({ pattern: "XK", initiator: true, prologue: PROLOGUE }),
    isNoiseError("key", /static key \(s\)/),
  );
  assert.throws(
    () =>
      new HandshakeState({
        pattern: "XK",
        initiator: true,
        prologue: PROLOGUE,
        s: defaultBackend.generateKeypair(),
      }),
    isNoiseError("key", /remote static public key \(rs\)/),
  );
  assert.throws(
    () => new HandshakeState({ pattern: "XK", initiator: false, prologue: PROLOGUE }),
    isNoiseError("key", /\(s\)/),
  );
  assert.throws(
    // deno-lint-ignore no-explicit-any
    () => new HandshakeState({ pattern: "QQ" as any, initiator: true }),
    isNoiseError("pattern", /unknown handshake pattern "QQ"/),
  );
  assert.throws(
    () =>
      new HandshakeState({
        pattern: "XK",
        initiator: true,
        s: defaultBackend.generateKeypair(),
        rs: new Uint8Array(31),
      }),
    isNoiseError("key", /rs must be a 32-byte/),
  );
});

Deno.test("handshake message length limits", () => {
  const p = pair("XK");
  // msg1 of XK = e (32) + payload + tag (16).
  assert.throws(
    () => p.init.writeMessage(new Uint8Array(MAX_MESSAGE_LENGTH - 48 + 1)),
    isNoiseError("length", /over 65535/),
  );
  const msg = p.init.writeMessage(new Uint8Array(MAX_MESSAGE_LENGTH - 48));
  assert.equal(msg.length, MAX_MESSAGE_LENGTH);
  assert.equal(p.resp.readMessage(msg).length, MAX_MESSAGE_LENGTH - 48);
  const q = pair("XK");
  assert.throws(
    () => q.resp.readMessage(new Uint8Array(MAX_MESSAGE_LENGTH + 1)),
    isNoiseError("length"),
  );
  const r = pair("XK");
  assert.throws(
    () => r.resp.readMessage(new Uint8Array(47)),
    isNoiseError("length", /at least 48/),
  );
});

Deno.test("a low-order remote ephemeral key is refused", () => {
  const p = pair("XK");
  const msg = p.init.writeMessage();
  msg.fill(0, 0, 32); // e = the all-zero point: every DH with it is zero
  assert.throws(() => p.resp.readMessage(msg), isNoiseError("key", /low-order/));
});

Deno.test("a prepared RemoteKey gives the same DH as raw bytes, reused, on both backends", () => {
  const a = random(32);
  const pb = nodeX25519.generate().publicKey;
  const expected = nobleX25519.dh(nobleX25519.fromPrivate(a), pb);
  for (const x of [nodeX25519, nobleX25519]) {
    const remote = new RemoteKey(pb);
    const key = x.fromPrivate(a);
    assert.deepEqual(x.dh(key, remote), expected);
    assert.deepEqual(x.dh(key, remote), expected); // second use takes the prepared form
    const zero = new RemoteKey(new Uint8Array(32));
    assert.throws(() => x.dh(key, zero), /low-order/);
    assert.throws(() => x.dh(key, new RemoteKey(new Uint8Array(31))), /32 bytes/);
  }
});

Deno.test("CipherState: nonce encoding, exhaustion at 2^64-1, transport size limit", () => {
  const key = random(32);
  const cs = new CipherState(key);
  // Nonce 4 zero bytes ‖ n as u64 LE: compare with a direct AEAD call.
  cs.setNonce(0x0102030405060708n);
  const ct = cs.encrypt(te.encode("n"));
  const nonce = new Uint8Array([0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1]);
  assert.deepEqual(ct, nobleAead.encrypt(key, nonce, new Uint8Array(0), te.encode("n")));
  assert.equal(cs.nonce, 0x0102030405060709n);

  cs.setNonce(0xffff_ffff_ffff_fffen);
  cs.encrypt(new Uint8Array(1)); // n = 2^64-2 is the last usable nonce
  assert.throws(() => cs.encrypt(new Uint8Array(1)), isNoiseError("nonce", /exhausted/));
  const rx = new CipherState(key);
  rx.setNonce(0xffff_ffff_ffff_ffffn);
  assert.throws(() => rx.decrypt(new Uint8Array(17)), isNoiseError("nonce", /exhausted/));
  assert.throws(() => cs.setNonce(1n << 64n), isNoiseError("nonce"));

  const big = new CipherState(key);
  assert.throws(
    () => big.encrypt(new Uint8Array(MAX_PLAINTEXT_LENGTH + 1)),
    isNoiseError("length"),
  );
  assert.equal(big.encrypt(new Uint8Array(MAX_PLAINTEXT_LENGTH)).length, MAX_MESSAGE_LENGTH);
  assert.throws(() => big.decrypt(new Uint8Array(MAX_MESSAGE_LENGTH + 1)), isNoiseError("length"));
  assert.throws(() => big.decrypt(new Uint8Array(15)), isNoiseError("length"));
});

Deno.test("CipherState: counting across 2^32 and rekey", () => {
  const key = random(32);
  const a = new CipherState(key), b = new CipherState(key);
  a.setNonce(0xffff_ffffn);
  b.setNonce(0xffff_ffffn);
  for (let i = 0; i < 3; i++) {
    assert.deepEqual(b.decrypt(a.encrypt(te.encode(`${i}`))), te.encode(`${i}`));
  }
  assert.equal(a.nonce, 0x1_0000_0002n);
  a.rekey();
  b.rekey();
  assert.deepEqual(b.decrypt(a.encrypt(te.encode("after"))), te.encode("after"));
  const c = new CipherState(key);
  c.setNonce(a.nonce);
  assert.throws(() => b.decrypt(c.encrypt(te.encode("old key"))), isNoiseError("decrypt"));
});

Deno.test("importStaticKey gives the same handshake as raw key bytes", () => {
  const server = defaultBackend.generateKeypair();
  const client = defaultBackend.generateKeypair();
  const e = defaultBackend.generateKeypair();
  const run = (s: Keypair | ReturnType<typeof importStaticKey>) => {
    const init = new HandshakeState({
      pattern: "IK",
      initiator: true,
      prologue: PROLOGUE,
      s: client,
      e,
      rs: server.publicKey,
    });
    const resp = new HandshakeState({ pattern: "IK", initiator: false, prologue: PROLOGUE, s });
    resp.readMessage(init.writeMessage());
    return resp.getHandshakeHash();
  };
  assert.deepEqual(run(importStaticKey(server)), run(server));
});

Deno.test("backends give byte-identical outputs (node:crypto vs noble)", () => {
  for (let round = 0; round < 20; round++) {
    const a = random(32), b = random(32);
    const pa = nobleX25519.fromPrivate(a).publicKey;
    const pb = nodeX25519.fromPrivate(b).publicKey;
    assert.deepEqual(nodeX25519.fromPrivate(a).publicKey, pa);
    assert.deepEqual(nobleX25519.fromPrivate(b).publicKey, pb);
    assert.deepEqual(
      nodeX25519.dh(nodeX25519.fromPrivate(a), pb),
      nobleX25519.dh(nobleX25519.fromPrivate(a), pb),
    );
    assert.deepEqual(nodeX25519.fromPrivate(a).privateKey(), a);
    const g = nodeX25519.generate();
    assert.deepEqual(nobleX25519.fromPrivate(g.privateKey()).publicKey, g.publicKey);

    const key = random(32), nonce = random(12), ad = random(round % 3 === 0 ? 0 : 32);
    const pt = random([0, 1, 15, 16, 64, 1000, 65519][round % 7]);
    const ct = nodeAead.encrypt(key, nonce, ad, pt);
    assert.deepEqual(ct, nobleAead.encrypt(key, nonce, ad, pt));
    const into = new Uint8Array(ct.length + 5);
    nobleAead.encryptInto(key, nonce, ad, pt, into, 3);
    assert.deepEqual(into.subarray(3, 3 + ct.length), ct);
    assert.deepEqual(nodeAead.decrypt(key, nonce, ad, ct), pt);
    assert.deepEqual(nobleAead.decrypt(key, nonce, ad, ct), pt);

    const m1 = random(round * 7), m2 = random(round);
    const h = nobleBlake2s.hash(m1, m2);
    assert.deepEqual(nodeBlake2s.hash(m1, m2), h);
    assert.deepEqual(nodeBlake2s.hash(new Uint8Array([...m1, ...m2])), h);
    const mac = nobleHmacBlake2s.hmac(key, m1, m2);
    assert.deepEqual(nodeHmacBlake2s.hmac(key, m1, m2), mac);
    assert.deepEqual(nobleHmacNodeBlake2s.hmac(key, m1, m2), mac);
    assert.deepEqual(hkdf(nodeBackend, key, m1, 3), hkdf(nobleBackend, key, m1, 3));

    const seed = random(32), msg = random(round * 5);
    const sig = nodeEd25519.sign(msg, seed);
    assert.deepEqual(nobleEd25519.sign(msg, seed), sig);
    assert.deepEqual(nodeEd25519.publicKeyOf(seed), nobleEd25519.publicKeyOf(seed));
    const pub = nodeEd25519.publicKeyOf(seed);
    assert.ok(nodeEd25519.verify(sig, msg, pub) && nobleEd25519.verify(sig, msg, pub));
  }
});

Deno.test("BLAKE2s and HMAC-BLAKE2s known answers", () => {
  // RFC 7693 Appendix B: BLAKE2s-256("abc").
  assert.equal(
    bytesToHex(defaultBackend.hash(te.encode("abc"))),
    "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982",
  );
  assert.equal(
    bytesToHex(defaultBackend.hash(te.encode("ab"), te.encode("c"))),
    bytesToHex(nobleBackend.hash(te.encode("abc"))),
  );
});

Deno.test("AEAD decrypt failures are reported, not returned", () => {
  for (const aead of [nodeAead, nobleAead]) {
    const key = random(32), nonce = random(12);
    const ct = aead.encrypt(key, nonce, new Uint8Array(0), te.encode("secret"));
    ct[0] ^= 1;
    assert.throws(() => aead.decrypt(key, nonce, new Uint8Array(0), ct), /decryption failed/);
    assert.throws(() => aead.decrypt(key, nonce, new Uint8Array(0), ct.subarray(0, 10)), /shorter/);
  }
});

Deno.test("handshakes interoperate across backends", () => {
  const backends = [defaultBackend, nobleBackend, nodeBackend];
  for (const bi of backends) {
    for (const br of backends) {
      const server = br.generateKeypair();
      const client = bi.generateKeypair();
      const init = new HandshakeState({
        pattern: "XK",
        initiator: true,
        prologue: PROLOGUE,
        s: client,
        rs: server.publicKey,
        backend: bi,
      });
      const resp = new HandshakeState({
        pattern: "XK",
        initiator: false,
        prologue: PROLOGUE,
        s: server,
        backend: br,
      });
      resp.readMessage(init.writeMessage());
      init.readMessage(resp.writeMessage());
      resp.readMessage(init.writeMessage());
      assert.deepEqual(init.getHandshakeHash(), resp.getHandshakeHash(), `${bi.name}/${br.name}`);
    }
  }
});
