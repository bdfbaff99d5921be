/**
 * hash-wasm's BLAKE2s and HMAC-BLAKE2s (the default backend's hashes under Deno) give the same
 * bytes as noble's and node:crypto's, one call after another on the one shared hasher, for
 * inputs of every size the handshake and the rest of the protocol use and beyond.
 */
import assert from "node:assert/strict";
import { bytesToHex } from "@noble/hashes/utils.js";
import {
  defaultBackend,
  hasWasmBlake2s,
  hasWasmHmac,
  hkdf,
  makeBackend,
  nobleBackend,
  nobleBlake2s,
  nobleHmacBlake2s,
  nobleHmacWasmBlake2s,
  nodeBlake2s,
  wasmBlake2s,
  wasmHmacBlake2s,
} from "../../protocol/crypto.ts";

function random(n: number): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(n));
}

const te = new TextEncoder();
// Around the 64-byte block, past hash-wasm's 16 KiB input chunk, and a Noise message's maximum.
const SIZES = [0, 1, 31, 32, 33, 63, 64, 65, 127, 128, 129, 1000, 16384, 16385, 40000, 65535];

Deno.test("the default backend hashes with hash-wasm under Deno", () => {
  assert.ok(hasWasmBlake2s && hasWasmHmac);
  assert.equal(defaultBackend.blake2s, wasmBlake2s);
  assert.equal(defaultBackend.hmacBlake2s, wasmHmacBlake2s);
});

Deno.test("hash-wasm BLAKE2s: RFC 7693 answer and the same bytes as noble and node:crypto", () => {
  assert.equal(
    bytesToHex(wasmBlake2s.hash(te.encode("abc"))),
    "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982",
  );
  for (const n of SIZES) {
    for (const split of [0, 1, n >> 1]) {
      const m = random(n);
      const a = m.subarray(0, split), b = m.subarray(split);
      const h = nobleBlake2s.hash(m);
      assert.deepEqual(wasmBlake2s.hash(a, b), h, `${n} bytes split at ${split}`);
      assert.deepEqual(wasmBlake2s.hash(m), h);
      assert.deepEqual(nodeBlake2s.hash(a, b), h);
    }
  }
});

Deno.test("hash-wasm HMAC-BLAKE2s: the same bytes as noble's, one-shot and keyed", () => {
  for (const keyLength of [0, 1, 16, 32, 63, 64, 65, 100]) {
    for (const n of SIZES) {
      const key = random(keyLength), a = random(n), b = random(n % 7);
      const mac = nobleHmacBlake2s.hmac(key, a, b);
      assert.deepEqual(wasmHmacBlake2s.hmac(key, a, b), mac, `key ${keyLength}, data ${n}`);
      assert.deepEqual(nobleHmacWasmBlake2s.hmac(key, a, b), mac);
      // A keyed function gives the same MAC on every call, with other hashes and MACs on the
      // shared hasher before and between its calls.
      const keyed = wasmHmacBlake2s.keyed!(key);
      assert.deepEqual(wasmBlake2s.hash(b), nobleBlake2s.hash(b));
      assert.deepEqual(keyed(a, b), mac);
      assert.deepEqual(wasmHmacBlake2s.hmac(b, a), nobleHmacBlake2s.hmac(b, a));
      assert.deepEqual(keyed(a, b), mac);
      assert.deepEqual(keyed(b), nobleHmacBlake2s.hmac(key, b));
      assert.deepEqual(wasmBlake2s.hash(a), nobleBlake2s.hash(a));
      assert.deepEqual(wasmHmacBlake2s.hmac(key, b, a), nobleHmacBlake2s.hmac(key, b, a));
    }
  }
});

Deno.test("HKDF over hash-wasm equals HKDF over noble (2 and 3 outputs)", () => {
  const wasmOnly = makeBackend("hash-wasm hashes", {
    ...nobleBackend,
    blake2s: wasmBlake2s,
    hmacBlake2s: wasmHmacBlake2s,
  });
  const nobleOverWasm = makeBackend("noble hmac over hash-wasm", {
    ...nobleBackend,
    blake2s: wasmBlake2s,
    hmacBlake2s: nobleHmacWasmBlake2s,
  });
  for (const n of [0, 32, 100]) {
    const ck = random(32), ikm = random(n);
    for (const outputs of [2, 3] as const) {
      const want = hkdf(nobleBackend, ck, ikm, outputs);
      assert.deepEqual(hkdf(wasmOnly, ck, ikm, outputs), want);
      assert.deepEqual(hkdf(nobleOverWasm, ck, ikm, outputs), want);
      assert.deepEqual(hkdf(defaultBackend, ck, ikm, outputs), want);
    }
  }
});

// The interface protocol/crypto.ts declares for hash-wasm matches the package's own types.
import type * as HashWasm from "hash-wasm";
import type { HashWasmApi } from "../../protocol/crypto.ts";
const _api: HashWasmApi = {} as typeof HashWasm;
void _api;
