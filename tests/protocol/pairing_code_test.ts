import assert from "node:assert/strict";
import {
  formatPairingCode,
  newPairingCode,
  normalizePairingCode,
  PAIRING_ALPHABET,
} from "../../protocol/pairing.ts";
import { isUserAddress } from "../../protocol/ids.ts";
import { parseJoin } from "../../protocol/control.ts";

Deno.test("pairing codes: 8 symbols of the alphabet, typed forgivingly", () => {
  const seen = new Set<string>();
  for (let i = 0; i < 200; i++) {
    const code = newPairingCode();
    assert.equal(code.length, 8);
    for (const c of code) assert.ok(PAIRING_ALPHABET.includes(c), code);
    seen.add(code);
    assert.equal(normalizePairingCode(formatPairingCode(code)), code);
    assert.equal(normalizePairingCode(formatPairingCode(code).toLowerCase()), code);
  }
  assert.equal(seen.size, 200);
  assert.equal(normalizePairingCode("abcd efgh"), "ABCDEFGH");
  assert.equal(normalizePairingCode("1LIO-0000"), "11100000");
  for (const bad of ["", "ABCDEFG", "ABCDEFGHJ", "ABCD-EFGU", 12345678, null, "x".repeat(40)]) {
    assert.equal(normalizePairingCode(bad), null, String(bad));
  }
});

Deno.test("user addresses in JOIN members", () => {
  for (const ok of ["@alice", "@alice@example.org", "@Алиса", "@u-1234"]) {
    assert.ok(isUserAddress(ok), ok);
  }
  for (const bad of ["alice", "@", "@@x", "@alice@", "@alice@-bad-", "@ a"]) {
    assert.ok(!isUserAddress(bad), bad);
  }
  assert.deepEqual(parseJoin({ members: ["@alice", "bob-phone"] }).members, [
    "@alice",
    "bob-phone",
  ]);
  assert.throws(() => parseJoin({ members: ["@"] }), /@handle/);
});
