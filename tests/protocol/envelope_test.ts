import assert from "node:assert/strict";
import {
  assertValidPublicKey,
  type Conversation,
  ENVELOPE_VERSION,
  EnvelopeError,
  type EnvelopeErrorCode,
  MAX_BODY_LENGTH,
  MAX_RECIPIENTS,
  openEnvelope,
  paddedLength,
  parseEnvelope,
  REPLAY_WINDOW,
  ReplayWindow,
  sealEnvelope,
  WRAP_LENGTH,
} from "../../protocol/envelope.ts";
import { defaultBackend, type Keypair, nobleBackend } from "../../protocol/crypto.ts";
import { concatBytes } from "../../protocol/bytes.ts";

const te = new TextEncoder();
const td = new TextDecoder();

function isEnvelopeError(...codes: EnvelopeErrorCode[]) {
  return (err: unknown) => {
    assert.ok(err instanceof EnvelopeError, `expected EnvelopeError, got ${err}`);
    assert.ok(codes.includes(err.code), `got ${err.code}: ${err.message}`);
    return true;
  };
}

const alice = defaultBackend.generateKeypair();
const bob = defaultBackend.generateKeypair();
const carol = defaultBackend.generateKeypair();
const mallory = defaultBackend.generateKeypair();
const DM: Conversation = { kind: "members", members: ["bob", "alice"] };
const TRIO: Conversation = { kind: "members", members: ["alice", "bob", "carol"] };

function seal(
  body: string | Uint8Array,
  opts: {
    conversation?: Conversation;
    counter?: number;
    recipients?: [string, Keypair][];
    sender?: string;
    senderKey?: Keypair;
    contentKey?: Uint8Array;
  } = {},
): Uint8Array {
  return sealEnvelope({
    sender: opts.sender ?? "alice",
    senderKey: opts.senderKey ?? alice,
    conversation: opts.conversation ?? DM,
    counter: opts.counter ?? 1,
    recipients: (opts.recipients ?? [["bob", bob]]).map(([deviceId, k]) => ({
      deviceId,
      publicKey: k.publicKey,
    })),
    body: typeof body === "string" ? te.encode(body) : body,
    contentKey: opts.contentKey,
  });
}

function openAs(
  env: Uint8Array,
  recipient = "bob",
  key: Keypair = bob,
  extra: {
    serverSender?: string;
    conversation?: Conversation;
    senderKey?: Uint8Array;
  } = {},
) {
  return openEnvelope(env, {
    recipient,
    recipientKey: key,
    serverSender: "serverSender" in extra ? extra.serverSender : "alice",
    conversation: "conversation" in extra ? extra.conversation : DM,
    senderKey: "senderKey" in extra ? extra.senderKey : alice.publicKey,
  });
}

Deno.test("seal and open: 1:1, the sender's key proven, counter and conversation returned", () => {
  const env = seal("hello bob", { counter: 7 });
  const opened = openAs(env);
  assert.equal(td.decode(opened.plaintext), "hello bob");
  assert.equal(opened.sender, "alice");
  assert.deepEqual(opened.senderKey, alice.publicKey);
  assert.equal(opened.counter, 7n);
  assert.deepEqual(opened.conversation, { kind: "members", members: ["alice", "bob"] });
  assert.deepEqual(opened.recipients, ["bob"]);
  // Without a trusted key the caller gets the proven key to pin.
  assert.deepEqual(openAs(env, "bob", bob, { senderKey: undefined }).senderKey, alice.publicKey);
});

Deno.test("seal and open: several recipients and a group, each reads it; bodies of 0, 64 KiB and the maximum", () => {
  const env = seal("to both", { conversation: TRIO, recipients: [["bob", bob], ["carol", carol]] });
  for (const [id, k] of [["bob", bob], ["carol", carol]] as const) {
    assert.equal(td.decode(openAs(env, id, k, { conversation: TRIO }).plaintext), "to both");
  }
  const group: Conversation = { kind: "group", groupId: "team" };
  const g = seal("group hi", { conversation: group, recipients: [["carol", carol]] });
  assert.equal(
    td.decode(openAs(g, "carol", carol, { conversation: group }).plaintext),
    "group hi",
  );
  for (const n of [0, 65536, MAX_BODY_LENGTH]) {
    const body = crypto.getRandomValues(new Uint8Array(Math.min(n, 65536)));
    const big = n === MAX_BODY_LENGTH ? new Uint8Array(n) : body;
    const e = seal(big);
    assert.deepEqual(openAs(e).plaintext, big);
  }
  assert.throws(() => seal(new Uint8Array(MAX_BODY_LENGTH + 1)), isEnvelopeError("too-large"));
});

Deno.test("the noble backend opens what the default backend sealed", () => {
  const env = seal("portable");
  const opened = openEnvelope(env, {
    recipient: "bob",
    recipientKey: bob,
    serverSender: "alice",
    senderKey: alice.publicKey,
    backend: nobleBackend,
  });
  assert.equal(td.decode(opened.plaintext), "portable");
});

Deno.test("layout: header, one 128-octet wrap per recipient, padded body", () => {
  const env = seal("x", { conversation: TRIO, recipients: [["bob", bob], ["carol", carol]] });
  const parsed = parseEnvelope(env);
  assert.equal(parsed.version, ENVELOPE_VERSION);
  assert.deepEqual([...env.subarray(0, 5)], [0x43, 0x43, 0x45, 1, 0]);
  assert.equal(WRAP_LENGTH, 128);
  assert.equal(parsed.body.length, paddedLength(1) + 16);
  assert.equal(env.length, parsed.header.length + 1 + (1 + 3) + (1 + 5) + 2 * 128 + 256 + 16);
});

Deno.test("padding: bodies of nearby lengths give envelopes of one length; overhead ≤ 12 %", () => {
  assert.equal(seal("a").length, seal("a".repeat(200)).length);
  let last = 0;
  for (let n = 0; n < 300_000; n += 997) {
    const p = paddedLength(n);
    assert.ok(p >= n + 4 && p >= last, `padded ${n} → ${p}`);
    if (n > 4096) assert.ok(p <= (n + 4) * 1.12, `padded ${n} → ${p}`);
    last = p;
  }
});

Deno.test("truncated at every length: refused, never opened", () => {
  const env = seal("truncate me");
  for (let n = 0; n < env.length; n++) {
    assert.throws(
      () => openAs(env.subarray(0, n)),
      isEnvelopeError("truncated", "tampered", "malformed"),
      `length ${n}`,
    );
  }
  assert.throws(() => openAs(new Uint8Array(0)), isEnvelopeError("truncated"));
});

Deno.test("one bit flipped anywhere: refused, never opened (another recipient's wrap only hurts that one)", () => {
  const env = seal("flip me", { conversation: TRIO, recipients: [["carol", carol], ["bob", bob]] });
  const p = parseEnvelope(env);
  const carolWrap = p.wraps.get("carol")!;
  const carolStart = carolWrap.byteOffset - env.byteOffset;
  for (let pos = 0; pos < env.length; pos++) {
    const bad = env.slice();
    bad[pos] ^= 0x01;
    const inCarolWrap = pos >= carolStart && pos < carolStart + WRAP_LENGTH;
    const [id, key] = inCarolWrap ? ["carol", carol] : ["bob", bob];
    assert.throws(
      () => openAs(bad, id, key, { conversation: TRIO }),
      (err) => err instanceof EnvelopeError,
      `octet ${pos}`,
    );
    if (inCarolWrap) {
      assert.equal(td.decode(openAs(bad, "bob", bob, { conversation: TRIO }).plaintext), "flip me");
    }
  }
});

Deno.test("a length or count past 2^53 is refused as too large, not thrown as a RangeError", () => {
  const env = seal("huge", { conversation: TRIO, recipients: [["carol", carol], ["bob", bob]] });
  const headerEnd = parseEnvelope(env).header.length;
  // Nine continuation octets then 0x01: a 64-bit value no JS number holds exactly.
  const huge = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
  const bad = concatBytes(env.subarray(0, headerEnd), huge, env.subarray(headerEnd + 1));
  assert.throws(
    () => openAs(bad, "bob", bob, { conversation: TRIO }),
    isEnvelopeError("too-large"),
  );
  // The same as a sender-id length, right after the flags octet.
  const badSender = concatBytes(env.subarray(0, 5), huge, env.subarray(6));
  assert.throws(() => openAs(badSender), isEnvelopeError("too-large"));
});

Deno.test("another version, no magic, reserved flags: typed refusals", () => {
  const env = seal("v");
  const v2 = env.slice();
  v2[3] = 2;
  assert.throws(() => openAs(v2), isEnvelopeError("version"));
  const plain = te.encode('{"v":1,"kind":"text"}');
  assert.throws(() => openAs(plain), isEnvelopeError("malformed"));
  const flags = env.slice();
  flags[4] = 1;
  assert.throws(() => openAs(flags), isEnvelopeError("malformed"));
});

Deno.test("a sender other than the server's is refused", () => {
  const env = seal("from alice");
  assert.throws(() => openAs(env, "bob", bob, { serverSender: "mallory" }), (err) => {
    assert.ok(err instanceof EnvelopeError && err.code === "sender-mismatch");
    assert.match(err.message, /claims sender alice.*from mallory/);
    return true;
  });
});

Deno.test("a forged sender: mallory seals with her own key claiming alice", () => {
  const forged = seal("I am alice", { senderKey: mallory });
  assert.throws(() => openAs(forged), isEnvelopeError("tampered"));
  // Without a trusted key the proven key is mallory's, for the trust store to refuse.
  assert.deepEqual(
    openAs(forged, "bob", bob, { senderKey: undefined }).senderKey,
    mallory.publicKey,
  );
});

Deno.test("a replay into another conversation is refused", () => {
  const env = seal("for the pair", { conversation: DM });
  assert.throws(
    () => openAs(env, "bob", bob, { conversation: TRIO }),
    isEnvelopeError("readdressed"),
  );
  assert.throws(
    () => openAs(env, "bob", bob, { conversation: { kind: "group", groupId: "team" } }),
    isEnvelopeError("readdressed"),
  );
  // Sealed for a member set without the recipient, or without the sender.
  const outside = seal("x", { conversation: { kind: "members", members: ["alice", "carol"] } });
  assert.throws(
    () => openAs(outside, "bob", bob, { conversation: undefined }),
    isEnvelopeError("readdressed"),
  );
  const notSender = seal("x", { conversation: { kind: "members", members: ["bob", "carol"] } });
  assert.throws(
    () => openAs(notSender, "bob", bob, { conversation: undefined }),
    isEnvelopeError("readdressed"),
  );
});

Deno.test("not addressed to this device, or read with another key", () => {
  const env = seal("only bob", { conversation: TRIO });
  assert.throws(
    () => openAs(env, "carol", carol, { conversation: TRIO }),
    isEnvelopeError("not-addressed"),
  );
  // bob's slot read with carol's key (a device whose key was replaced)
  assert.throws(
    () => openAs(env, "bob", carol, { conversation: TRIO }),
    isEnvelopeError("tampered"),
  );
});

Deno.test("cut and paste: a wrap moved into another envelope, or a body swapped by a recipient", () => {
  const key = crypto.getRandomValues(new Uint8Array(32));
  const a = seal("first", { conversation: TRIO, recipients: [["bob", bob], ["carol", carol]] });
  const b = seal("second", { conversation: TRIO, recipients: [["bob", bob], ["carol", carol]] });
  const pa = parseEnvelope(a), pb = parseEnvelope(b);
  const moved = { ...pb, wraps: new Map(pb.wraps).set("bob", pa.wraps.get("bob")!) };
  assert.throws(
    () => openEnvelope(moved, { recipient: "bob", recipientKey: bob, conversation: TRIO }),
    isEnvelopeError("tampered"),
  );
  // bob knows the content key of an envelope for him and carol; he re-encrypts another body
  // under it and keeps carol's wrap: carol refuses it (the wrap binds the body).
  const env = seal("real", {
    conversation: TRIO,
    recipients: [["bob", bob], ["carol", carol]],
    contentKey: key,
  });
  const p = parseEnvelope(env);
  const fake = defaultBackend.aead.encrypt(key, new Uint8Array(12), p.header, p.body.subarray(16));
  const swapped = { ...p, body: fake.subarray(0, p.body.length) };
  assert.throws(
    () =>
      openEnvelope(swapped, {
        recipient: "carol",
        recipientKey: carol,
        conversation: TRIO,
        senderKey: alice.publicKey,
      }),
    isEnvelopeError("tampered"),
  );
});

Deno.test("recipient keys off the curve, of low order or the wrong length are refused before sealing", () => {
  // 2 is a u-coordinate on the twist (u^3 + A u^2 + u = 8 + 4A + 2 is not a square).
  const twist = new Uint8Array(32);
  twist[0] = 2;
  const zero = new Uint8Array(32);
  const one = new Uint8Array(32);
  one[0] = 1;
  const high = bob.publicKey.slice();
  high[31] |= 0x80;
  for (const bad of [twist, zero, one, high, new Uint8Array(31)]) {
    assert.throws(() => assertValidPublicKey(bad), isEnvelopeError("bad-key"));
    assert.throws(
      () =>
        sealEnvelope({
          sender: "alice",
          senderKey: alice,
          conversation: DM,
          counter: 1,
          recipients: [{ deviceId: "bob", publicKey: bad }],
          body: te.encode("x"),
        }),
      isEnvelopeError("bad-key"),
    );
  }
  for (let i = 0; i < 20; i++) assertValidPublicKey(defaultBackend.generateKeypair().publicKey);
});

Deno.test("limits: recipients, duplicate recipients, counter 0", () => {
  const many = Array.from({ length: MAX_RECIPIENTS + 1 }, (_, i) => ({
    deviceId: `d${i}`,
    publicKey: bob.publicKey,
  }));
  assert.throws(
    () =>
      sealEnvelope({
        sender: "alice",
        senderKey: alice,
        conversation: DM,
        counter: 1,
        recipients: many,
        body: new Uint8Array(),
      }),
    isEnvelopeError("too-large"),
  );
  assert.throws(
    () => seal("x", { recipients: [["bob", bob], ["bob", bob]] }),
    isEnvelopeError("malformed"),
  );
  assert.throws(() => seal("x", { counter: 0 }), RangeError);
});

Deno.test("replay window: duplicates and too-old counters refused, gaps reported, late ones accepted once", () => {
  const w = new ReplayWindow();
  assert.equal(w.check(1000n), 0, "the first counter seen");
  w.accept(1000n);
  assert.equal(w.check(1002n), 1);
  w.highest = 0n;
  w.bitmap = 0n;
  assert.equal(w.check(1n), 0);
  w.accept(1n);
  assert.throws(() => w.check(1n), isEnvelopeError("replayed"));
  assert.equal(w.check(4n), 2);
  w.accept(4n);
  assert.equal(w.check(2n), 0); // late, inside the window
  w.accept(2n);
  assert.throws(() => w.check(2n), isEnvelopeError("replayed"));
  assert.throws(() => w.check(4n), isEnvelopeError("replayed"));
  w.accept(BigInt(4 + REPLAY_WINDOW));
  assert.throws(() => w.check(3n), isEnvelopeError("replayed")); // fell out of the window
  const copy = new ReplayWindow(w.highest, w.bitmap);
  assert.throws(() => copy.check(BigInt(4 + REPLAY_WINDOW)), isEnvelopeError("replayed"));
});
