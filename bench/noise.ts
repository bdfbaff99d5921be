/**
 * Noise and secure stream benchmark (issue 2 Performance targets).
 *
 * - XK and IK responder handshakes per second on one core, only the responder's work timed
 *   (initiator messages are produced outside the timed sections), next to the raw X25519
 *   shared-secret rate measured in the same run. The XK responder computes 3 DH (es, ee, se),
 *   the IK responder 4 (es, ss, ee, se); each also generates one ephemeral key (a fixed-base
 *   multiplication, cheaper than a DH and not counted in the ceiling).
 * - v2 secure stream encryption MB/s for 1 KiB and 64 KiB frames next to raw ChaCha20-Poly1305
 *   of the same backend over the same bytes.
 *
 * Each figure is the best of a few short rounds (other work on the machine only slows rounds
 * down), timed in process CPU time (user + system, `process.cpuUsage`) rather than wall time, so
 * other processes on a shared machine do not count against a round; the X25519 ceiling is
 * timed the same way. Bounded: a few seconds in total.
 *
 * @module
 */
import * as nodeCrypto from "node:crypto";
import process from "node:process";
import {
  CipherState,
  HandshakeState,
  importStaticKey,
  type PatternName,
} from "../protocol/noise.ts";
import { SecureStreamReader, SecureStreamWriter } from "../protocol/secure_stream.ts";
import {
  type CryptoBackend,
  defaultBackend,
  type Keypair,
  makeBackend,
  nobleBackend,
  nobleHmacBlake2s,
  nobleHmacNodeBlake2s,
  nodeBackend,
  nodeBlake2s,
  RemoteKey,
} from "../protocol/crypto.ts";

const ROUNDS = 3;
const PROLOGUE = new TextEncoder().encode("commucat");
const EMPTY = new Uint8Array(0);

/** Process CPU time in milliseconds (every thread: the JS thread and V8's GC helpers). */
function now(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

function best(rounds: number, measure: () => number): number {
  let top = 0;
  for (let i = 0; i < rounds; i++) top = Math.max(top, measure());
  return top;
}

/** Operations per second of `fn` run `n` times. */
function rate(n: number, fn: () => void): number {
  const t0 = now();
  for (let i = 0; i < n; i++) fn();
  return n / ((now() - t0) / 1000);
}

function fmt(n: number): string {
  return Math.round(n).toLocaleString("en-US");
}

function pct(x: number): string {
  return `${(x * 100).toFixed(0)} %`;
}

/** Raw X25519 with KeyObjects built once: the primitive alone, no import or checks. */
function rawNodeDhRate(n: number): number {
  const a = nodeCrypto.generateKeyPairSync("x25519");
  const b = nodeCrypto.generateKeyPairSync("x25519");
  return rate(
    n,
    () => nodeCrypto.diffieHellman({ privateKey: a.privateKey, publicKey: b.publicKey }),
  );
}

function backendDhRate(backend: CryptoBackend, n: number): number {
  const key = backend.x25519.generate();
  const peer = backend.x25519.generate().publicKey;
  return rate(n, () => backend.x25519.dh(key, peer));
}

/**
 * The X25519 work of one XK responder alone, per second: an ephemeral key, the initiator's e
 * and s imported, and the three DH (es, ee, se). What the Noise logic around it can approach.
 */
function xkDhFloorRate(backend: CryptoBackend, n: number): number {
  const x = backend.x25519;
  const s = x.generate();
  const re = x.generate().publicKey, rs = x.generate().publicKey;
  return rate(n, () => {
    const e = x.generate();
    const reKey = new RemoteKey(re), rsKey = new RemoteKey(rs);
    x.dh(s, reKey);
    x.dh(e, reKey);
    x.dh(e, rsKey);
  });
}

/**
 * Responder handshakes per second: initiators run untimed between the timed responder steps.
 * Payloads mimic the HELLO/AUTH use (msg2 carries a small JSON).
 */
function responderRate(
  pattern: PatternName,
  backend: CryptoBackend,
  server: Keypair,
  client: Keypair,
  n: number,
): number {
  const serverKey = importStaticKey(server, backend);
  const authPayload = new TextEncoder().encode(
    '{"session":"3f6c1a2e-8d4b-4f7a-9b1e-2c5d7e9f0a1b","domain":"example.org","protocol_version":2}',
  );
  const inits: HandshakeState[] = [];
  const m1: Uint8Array[] = [];
  for (let i = 0; i < n; i++) {
    const h = new HandshakeState({
      pattern,
      initiator: true,
      prologue: PROLOGUE,
      s: client,
      rs: server.publicKey,
    });
    inits.push(h);
    m1.push(h.writeMessage(EMPTY));
  }
  const resps: HandshakeState[] = new Array(n);
  const m2: Uint8Array[] = new Array(n);
  let elapsed = 0;
  let t0 = now();
  for (let i = 0; i < n; i++) {
    const r = new HandshakeState({
      pattern,
      initiator: false,
      prologue: PROLOGUE,
      s: serverKey,
      backend,
    });
    r.readMessage(m1[i]);
    m2[i] = r.writeMessage(authPayload);
    if (r.isComplete()) r.split();
    resps[i] = r;
  }
  elapsed += now() - t0;
  if (pattern === "XK") {
    const m3 = inits.map((h, i) => {
      h.readMessage(m2[i]);
      return h.writeMessage(EMPTY);
    });
    t0 = now();
    for (let i = 0; i < n; i++) {
      resps[i].readMessage(m3[i]);
      resps[i].split();
    }
    elapsed += now() - t0;
  } else {
    // Check the work was real: the initiator accepts the responder's message.
    for (let i = 0; i < n; i++) inits[i].readMessage(m2[i]);
  }
  return n / (elapsed / 1000);
}

/**
 * MB/s of `seal()` over `frameSize`-byte frames, of the reader, and of raw AEAD over the same
 * plaintext pieces (≤ 65519 octets, fresh nonce each) with the same backend.
 */
function streamRates(
  backend: CryptoBackend,
  frameSize: number,
  totalBytes: number,
): { seal: number; raw: number; open: number } {
  const key = crypto.getRandomValues(new Uint8Array(32));
  const frame = crypto.getRandomValues(new Uint8Array(frameSize));
  const frames = Math.max(1, Math.floor(totalBytes / frameSize));
  const mb = (frames * frameSize) / 1e6;
  const nonce = new Uint8Array(12);
  const view = new DataView(nonce.buffer);
  let n = 0;
  const rawRound = () => {
    const t0 = now();
    for (let i = 0; i < frames; i++) {
      for (let off = 0; off < frameSize; off += 65519) {
        view.setUint32(4, n++, true);
        backend.aead.encrypt(
          key,
          nonce,
          EMPTY,
          frame.subarray(off, Math.min(off + 65519, frameSize)),
        );
      }
    }
    return mb / ((now() - t0) / 1000);
  };
  const writer = new SecureStreamWriter(new CipherState(key, backend));
  const reader = new SecureStreamReader(new CipherState(key, backend));
  const sealed: Uint8Array[] = new Array(frames);
  const sealRound = () => {
    const t0 = now();
    for (let i = 0; i < frames; i++) sealed[i] = writer.seal(frame);
    return mb / ((now() - t0) / 1000);
  };
  const openRound = () => {
    const t0 = now();
    for (let i = 0; i < frames; i++) reader.push(sealed[i]);
    return mb / ((now() - t0) / 1000);
  };
  // Alternate raw and sealed rounds so both see the same machine conditions; the first pair
  // warms the JIT and is discarded.
  const out = { seal: 0, raw: 0, open: 0 };
  for (let r = 0; r <= ROUNDS; r++) {
    const raw = rawRound(), seal = sealRound(), open = openRound();
    if (r === 0) continue;
    out.raw = Math.max(out.raw, raw);
    out.seal = Math.max(out.seal, seal);
    out.open = Math.max(out.open, open);
  }
  return out;
}

/** Prints the figures. */
export async function run(): Promise<void> {
  const b = defaultBackend;
  console.log("## Noise (Noise_XK/IK_25519_ChaChaPoly_BLAKE2s) and v2 secure stream");
  console.log(`backend "${b.name}":`);
  console.log(`  X25519             ${b.x25519.name}`);
  console.log(`  ChaCha20-Poly1305  ${b.aead.name}`);
  console.log(`  BLAKE2s            ${b.blake2s.name}`);
  console.log(`  HMAC-BLAKE2s       ${b.hmacBlake2s.name}`);
  console.log(`  Ed25519            ${b.ed25519.name}`);

  const server = b.generateKeypair();
  const client = b.generateKeypair();
  // Warm up the JIT on every path measured below.
  rawNodeDhRate(300);
  backendDhRate(b, 300);
  responderRate("XK", b, server, client, 200);
  responderRate("IK", b, server, client, 200);

  let raw = 0, viaBackend = 0, keygen = 0, xk = 0, ik = 0, floor = 0;
  for (let r = 0; r < ROUNDS; r++) {
    raw = Math.max(raw, rawNodeDhRate(2000));
    viaBackend = Math.max(viaBackend, backendDhRate(b, 2000));
    keygen = Math.max(keygen, rate(2000, () => b.x25519.generate()));
    floor = Math.max(floor, xkDhFloorRate(b, 700));
    xk = Math.max(xk, responderRate("XK", b, server, client, 500));
    ik = Math.max(ik, responderRate("IK", b, server, client, 400));
  }
  const nobleDh = best(2, () => backendDhRate(nobleBackend, 100));
  const nobleXk = best(2, () => responderRate("XK", nobleBackend, server, client, 50));
  const nodeXk = best(2, () => responderRate("XK", nodeBackend, server, client, 400));
  const nobleHmacMix = makeBackend("node + noble hmac(noble blake2s)", {
    ...b,
    hmacBlake2s: nobleHmacBlake2s,
  });
  const mixXk = best(2, () => responderRate("XK", nobleHmacMix, server, client, 300));
  const nodeHashMix = makeBackend("node + noble hmac(node blake2s)", {
    ...b,
    blake2s: nodeBlake2s,
    hmacBlake2s: nobleHmacNodeBlake2s,
  });
  const nodeHashXk = best(2, () => responderRate("XK", nodeHashMix, server, client, 400));

  console.log("");
  console.log(`X25519 shared secret, raw (KeyObjects prebuilt):   ${fmt(raw)}/s`);
  console.log(`X25519 shared secret via backend (raw key bytes):  ${fmt(viaBackend)}/s`);
  console.log(`X25519 key generation (ephemeral):                 ${fmt(keygen)}/s`);
  console.log(`X25519 noble, for comparison:                      ${fmt(nobleDh)}/s`);
  console.log("");
  const xkCeil = raw / 3, ikCeil = raw / 4;
  console.log(
    `XK responder: ${fmt(xk)} handshakes/s; ceiling raw/3 = ${fmt(xkCeil)}/s -> ${
      pct(xk / xkCeil)
    } (target >= 60 %)`,
  );
  console.log(
    `IK responder: ${fmt(ik)} handshakes/s; ceiling raw/4 = ${fmt(ikCeil)}/s -> ${
      pct(ik / ikCeil)
    } (IK responder: es, ss, ee, se = 4 DH)`,
  );
  console.log(
    `  against the backend DH rate (includes importing the peer key): XK ${
      pct(xk / (viaBackend / 3))
    }, IK ${pct(ik / (viaBackend / 4))}`,
  );
  console.log(
    `  share of a handshake that is DH (3 x raw DH time) + keygen: ${
      pct(xk * (3 / raw + 1 / keygen))
    }`,
  );
  console.log(
    `  X25519 work of an XK responder alone (keygen, 2 key imports, 3 DH): ${fmt(floor)}/s -> ${
      pct(floor / xkCeil)
    } of the ceiling; the Noise logic (hashes, AEAD, state) costs ${
      fmt(1e6 / xk - 1e6 / floor)
    } us per handshake on top`,
  );
  console.log(
    `XK responder by backend: ${b.name} ${fmt(xk)}/s, all node:crypto ${fmt(nodeXk)}/s, ` +
      `node:crypto BLAKE2s + noble HMAC over it ${fmt(nodeHashXk)}/s, ` +
      `node + noble HMAC over noble BLAKE2s ${fmt(mixXk)}/s, all noble ${fmt(nobleXk)}/s`,
  );

  console.log("");
  for (const [label, size, total] of [["1 KiB", 1024, 3e6], ["64 KiB", 65536, 12e6]] as const) {
    const s = streamRates(b, size, total);
    const noble = streamRates(nobleBackend, size, size === 1024 ? 3e5 : 1e6);
    console.log(
      `secure stream ${label} frames: seal ${s.seal.toFixed(0)} MB/s vs raw ChaCha20-Poly1305 ` +
        `(${b.aead.name}) ${s.raw.toFixed(0)} MB/s -> ${pct(s.seal / s.raw)} (target >= 80 %); ` +
        `open ${s.open.toFixed(0)} MB/s; noble raw ${noble.raw.toFixed(0)} MB/s`,
    );
  }
  await Promise.resolve();
}

if (import.meta.main) await run();
