import assert from "node:assert/strict";
import { join } from "node:path";
import { directChannelId, groupChannelId } from "../../client/channels.ts";
import { defaultKeyFile, KeystoreError, loadOrCreateIdentity } from "../../client/keystore.ts";
import { publicKeyOf } from "../../protocol/crypto.ts";

Deno.test("keystore: generated on first use with mode 0600, the same key afterwards", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = join(dir, "nested", "alice.json");
    const first = await loadOrCreateIdentity(file, "alice");
    assert.equal(first.created, true);
    assert.equal(first.deviceId, "alice");
    assert.deepEqual(publicKeyOf(first.keypair.privateKey), first.keypair.publicKey);
    if (Deno.build.os !== "windows") assert.equal((await Deno.stat(file)).mode! & 0o777, 0o600);
    const again = await loadOrCreateIdentity(file);
    assert.equal(again.created, false);
    assert.equal(again.deviceId, "alice");
    assert.deepEqual(again.keypair.privateKey, first.keypair.privateKey);
    const random = await loadOrCreateIdentity(join(dir, "r.json"));
    assert.match(random.deviceId, /^device-[0-9a-f]{8}$/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("keystore: wrong device, damaged file and bad ids are clear errors", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = join(dir, "k.json");
    await loadOrCreateIdentity(file, "alice");
    await assert.rejects(
      loadOrCreateIdentity(file, "bob"),
      (e: unknown) => e instanceof KeystoreError && /belongs to device alice/.test(e.message),
    );
    const broken = join(dir, "broken.json");
    await Deno.writeTextFile(broken, "{not json");
    await assert.rejects(loadOrCreateIdentity(broken), /not valid JSON; it was left untouched/);
    assert.equal(await Deno.readTextFile(broken), "{not json");
    const mismatched = join(dir, "m.json");
    const data = JSON.parse(await Deno.readTextFile(file));
    data.public_key = "11".repeat(32);
    await Deno.writeTextFile(mismatched, JSON.stringify(data));
    await assert.rejects(loadOrCreateIdentity(mismatched), /public_key does not belong/);
    await assert.rejects(loadOrCreateIdentity(join(dir, "x.json"), "no spaces"), KeystoreError);
    assert.throws(() => defaultKeyFile("../evil"), KeystoreError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("channel ids: both sides of a 1:1 derive the same id; groups and pairs differ", () => {
  const ab = directChannelId("alice", "bob");
  assert.equal(ab, directChannelId("bob", "alice"));
  assert.notEqual(ab, directChannelId("alice", "carol"));
  assert.notEqual(groupChannelId("team"), groupChannelId("team2"));
  for (const id of [ab, groupChannelId("team")]) {
    assert.ok(Number.isInteger(id) && id >= 1 && id <= 0xffff_ffff);
  }
  // Pinned so that every client version agrees on the derivation.
  assert.equal(directChannelId("alice", "bob"), 2265543941);
  assert.equal(groupChannelId("team"), 696534012);
});
