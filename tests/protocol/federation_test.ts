import assert from "node:assert/strict";
import { bytesToHex } from "@noble/hashes/utils.js";
import { blake3 } from "@noble/hashes/blake3.js";
import { ed25519 } from "@noble/curves/ed25519.js";
import {
  canonicalJson,
  eventDigest,
  FederationError,
  type FederationEvent,
  federationKeypair,
  rfc3339ToNanos,
  signEvent,
  toRfc3339,
  verifyEvent,
} from "../../protocol/federation.ts";
import { nobleBackend, nodeBackend } from "../../protocol/crypto.ts";

const te = new TextEncoder();

function sampleEvent(): FederationEvent {
  return {
    event_id: "0b7e7c4e-7f1a-4d1e-9c35-1f0f7f2d9a10",
    origin: "alpha.example",
    scope: "beta.example",
    created_at: "2024-01-02T03:04:05.123456789Z",
    payload: {
      channel: 7,
      sequence: 42,
      payload: "0105070000",
      sender: "dev-a",
      target: "dev-b@beta.example",
    },
  };
}

const seed = te.encode("federation seed for tests");

Deno.test("created_at nanoseconds: known values", () => {
  // 2024-01-02T03:04:05Z: 19 724 days after 1970-01-01 (54 years × 365 + 13 leap days + 1),
  // 19 724 × 86 400 + 3 × 3600 + 4 × 60 + 5 = 1 704 164 645 s; plus .123456789 s
  // = 1 704 164 645 123 456 789 ns = 0x17a668b7375cff15, little endian 15 ff 5c 37 b7 68 a6 17.
  assert.equal(rfc3339ToNanos("2024-01-02T03:04:05.123456789Z"), 1_704_164_645_123_456_789n);
  assert.equal(rfc3339ToNanos("2024-01-02T05:04:05.123456789+02:00"), 1_704_164_645_123_456_789n);
  assert.equal(rfc3339ToNanos("2024-01-01T22:34:05.123456789-04:30"), 1_704_164_645_123_456_789n);
  assert.equal(rfc3339ToNanos("2024-01-02t03:04:05.1234567891z"), 1_704_164_645_123_456_789n);
  assert.equal(rfc3339ToNanos("1970-01-01T00:00:00Z"), 0n);
  assert.equal(rfc3339ToNanos("1969-12-31T23:59:59.5Z"), -500_000_000n);
  assert.equal(rfc3339ToNanos("2000-02-29T00:00:00.000001Z"), 951_782_400_000_001_000n);
  // i64 limits: 2262-04-11T23:47:16.854775807Z is the largest representable instant.
  assert.equal(rfc3339ToNanos("2262-04-11T23:47:16.854775807Z"), (1n << 63n) - 1n);
  assert.throws(() => rfc3339ToNanos("2262-04-11T23:47:16.854775808Z"), /64-bit/);
  for (
    const bad of [
      "2024-01-02",
      "2024-13-01T00:00:00Z",
      "2023-02-29T00:00:00Z",
      "2024-01-02T24:00:00Z",
      "2024-01-02T03:04:05",
      "2024-01-02T03:04:05+2:00",
      "",
    ]
  ) {
    assert.throws(() => rfc3339ToNanos(bad), FederationError, bad);
  }
  assert.equal(toRfc3339(new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 123))), "2024-01-02T03:04:05.123Z");
});

Deno.test("digest = BLAKE3(event_id ‖ origin ‖ scope ‖ i64le(ns) ‖ sorted compact JSON)", () => {
  const event = sampleEvent();
  const json = '{"channel":7,"payload":"0105070000","sender":"dev-a","sequence":42,' +
    '"target":"dev-b@beta.example"}';
  assert.equal(canonicalJson(event.payload), json);
  const expected = blake3(
    new Uint8Array([
      ...te.encode(event.event_id),
      ...te.encode(event.origin),
      ...te.encode(event.scope),
      0x15,
      0xff,
      0x5c,
      0x37,
      0xb7,
      0x68,
      0xa6,
      0x17,
      ...te.encode(json),
    ]),
  );
  assert.equal(bytesToHex(eventDigest(event)), bytesToHex(expected));
});

Deno.test("canonical JSON: key order does not matter, nested objects sorted, strings escaped", () => {
  const a = canonicalJson({ b: 1, a: { z: [3, { y: 1, x: 'é\n"' }], m: null }, c: true });
  const b = canonicalJson({ c: true, a: { m: null, z: [3, { x: 'é\n"', y: 1 }] }, b: 1 });
  assert.equal(a, b);
  assert.equal(a, '{"a":{"m":null,"z":[3,{"x":"é\\n\\"","y":1}]},"b":1,"c":true}');
  // Code point order: U+1F600 sorts after U+FF61, although its UTF-16 surrogate is lower.
  assert.equal(canonicalJson({ "😀": 1, "｡": 2 }), '{"｡":2,"😀":1}');
  assert.throws(() => canonicalJson({ x: NaN }), /payload\.x is not a finite number/);
  assert.throws(() => canonicalJson({ x: 1n }), /payload\.x/);

  const e1 = sampleEvent();
  const e2 = sampleEvent();
  const p = e2.payload;
  e2.payload = {
    target: p.target,
    sender: p.sender,
    payload: p.payload,
    sequence: p.sequence,
    channel: p.channel,
  };
  assert.deepEqual(eventDigest(e1), eventDigest(e2));
});

Deno.test("sign and verify; the key comes from BLAKE3(seed)", () => {
  const kp = federationKeypair(seed);
  assert.deepEqual(kp.secretKey, blake3(seed));
  assert.deepEqual(kp.publicKey, ed25519.getPublicKey(blake3(seed)));
  assert.deepEqual(federationKeypair(seed, nobleBackend), kp);
  const event = sampleEvent();
  const sig = signEvent(event, kp.secretKey);
  assert.equal(sig.length, 64);
  assert.deepEqual(signEvent(event, kp.secretKey, nobleBackend), sig, "same bytes from noble");
  assert.ok(verifyEvent(event, sig, kp.publicKey));
  assert.ok(verifyEvent(event, sig, kp.publicKey, nobleBackend));
  assert.ok(verifyEvent(event, sig, kp.publicKey, nodeBackend));
  // Equal instants written differently digest the same.
  assert.ok(
    verifyEvent({ ...event, created_at: "2024-01-02T05:04:05.123456789+02:00" }, sig, kp.publicKey),
  );
});

Deno.test("any change to any field breaks verification", () => {
  const kp = federationKeypair(seed);
  const sig = signEvent(sampleEvent(), kp.secretKey);
  const mutations: ((e: FederationEvent) => void)[] = [
    (e) => (e.event_id += "x"),
    (e) => (e.origin = "alpha.example."),
    (e) => (e.scope = "gamma.example"),
    (e) => (e.created_at = "2024-01-02T03:04:05.123456788Z"),
    (e) => (e.payload.channel = 8),
    (e) => (e.payload.sequence = 43),
    (e) => (e.payload.payload = "0105070001"),
    (e) => (e.payload.sender = "dev-c"),
    (e) => (e.payload.target = "dev-b@gamma.example"),
    (e) => (e.payload.extra = 1),
    // Moving bytes between adjacent fields changes the JSON or the instant.
    (e) => (e.payload.sequence = 4),
  ];
  for (const [i, mutate] of mutations.entries()) {
    const e = sampleEvent();
    mutate(e);
    assert.equal(verifyEvent(e, sig, kp.publicKey), false, `mutation ${i}`);
  }
});

Deno.test("forged signatures, wrong keys and garbage never verify and never throw", () => {
  const kp = federationKeypair(seed);
  const other = federationKeypair(te.encode("another seed"));
  const event = sampleEvent();
  const sig = signEvent(event, kp.secretKey);
  assert.equal(verifyEvent(event, sig, other.publicKey), false, "wrong key");
  assert.equal(verifyEvent(event, signEvent(event, other.secretKey), kp.publicKey), false);
  for (let i = 0; i < 64; i += 9) {
    const forged = new Uint8Array(sig);
    forged[i] ^= 1;
    assert.equal(verifyEvent(event, forged, kp.publicKey), false, `bit flip at ${i}`);
  }
  assert.equal(verifyEvent(event, new Uint8Array(64), kp.publicKey), false);
  assert.equal(verifyEvent(event, sig.subarray(0, 63), kp.publicKey), false);
  assert.equal(verifyEvent(event, new Uint8Array([...sig, 0]), kp.publicKey), false);
  assert.equal(verifyEvent(event, sig, kp.publicKey.subarray(0, 31)), false);
  assert.equal(verifyEvent(event, sig, new Uint8Array(32).fill(0xff)), false);
  // deno-lint-ignore no-explicit-any
  const junk: any[] = [null, undefined, "sig", 42, {}];
  for (const j of junk) {
    assert.equal(verifyEvent(event, j, kp.publicKey), false);
    assert.equal(verifyEvent(event, sig, j), false);
    assert.equal(verifyEvent(j, sig, kp.publicKey), false);
  }
  assert.equal(verifyEvent({ ...event, created_at: "yesterday" }, sig, kp.publicKey), false);
  // deno-lint-ignore no-explicit-any
  assert.equal(verifyEvent({ ...event, payload: null as any }, sig, kp.publicKey), false);
  assert.throws(() => signEvent({ ...event, created_at: "yesterday" }, kp.secretKey), /RFC 3339/);
  assert.throws(() => federationKeypair(new Uint8Array(0)), FederationError);
});
