/**
 * A node's device cache (server/session/device_cache.ts) is a hint, never an admission: a device
 * revoked or rotated in storage with no bus event reaching the node (Redis down, an operator
 * tool writing to Postgres only) is refused on a node that still has it cached, with the refusal
 * that names why, and no session row is written for it. On both backends, two nodes.
 */
import assert from "node:assert/strict";
import { generateKeypair } from "../../protocol/crypto.ts";
import type { Storage } from "../../storage/types.ts";
import {
  clientOptions,
  expectRefused,
  HandshakeRefused,
  TestClient,
} from "../server/helpers/client.ts";
import { storageKinds, uid, withSharedNodes } from "../server/helpers/server.ts";
import { DeviceCache } from "../../server/session/device_cache.ts";

const refused = expectRefused;

async function sessionCount(storage: Storage, deviceId: string): Promise<number> {
  return (await storage.sessions.byDevice(deviceId, { limit: 100 })).items.length;
}

Deno.test("device cache: entries expire, another key misses, forget and the size bound", () => {
  const cache = new DeviceCache(50, 2);
  const k1 = generateKeypair().publicKey;
  const user = { id: "u", handle: "h", display_name: null, avatar_url: null };
  cache.put("d1", k1, user);
  assert.deepEqual(cache.get("d1", k1), user);
  assert.equal(cache.get("d1", generateKeypair().publicKey), null, "another key is a miss");
  assert.equal(cache.get("d1", k1), null, "and the entry is gone");
  cache.put("d1", k1, user);
  cache.put("d2", k1, user);
  cache.put("d3", k1, user);
  assert.equal(cache.size, 2);
  assert.equal(cache.get("d1", k1), null, "the oldest entry went first");
  cache.forget("d2");
  assert.equal(cache.get("d2", k1), null);
  const expired = new DeviceCache(-1);
  expired.put("d", k1, user);
  assert.equal(expired.get("d", k1), null, "an expired entry is not used");
});

for (const kind of storageKinds()) {
  Deno.test({
    name: `a revoked or rotated device is refused on a node that has it cached (${
      kind === "real" ? "Postgres + Redis" : "PGlite + memory"
    })`,
    sanitizeResources: true,
    sanitizeOps: true,
  }, async () => {
    await withSharedNodes(kind, 2, async ({ nodes, storage }) => {
      const [a, b] = nodes;
      for (const pattern of ["XK", "IK"] as const) {
        // Revoked in storage only: node b hears nothing of it.
        const id = uid(`cached-rev-${pattern}`);
        const keypair = generateKeypair();
        const onB = { ...clientOptions(b.server, b.config, id), keypair, pattern };
        await (await TestClient.connect(onB)).close();
        await (await TestClient.connect(onB)).close();
        assert.ok(b.server.node.devices.get(id, keypair.publicKey), "b has the device cached");
        assert.equal(await sessionCount(storage, id), 2);
        await storage.devices.revoke(id, "test");
        assert.ok(b.server.node.devices.get(id, keypair.publicKey), "still cached on b");
        await refused(onB, "Device Revoked", 403);
        await refused({ ...onB, port: a.server.ports.tcp }, "Device Revoked", 403);
        assert.equal(await sessionCount(storage, id), 2, "no session row for a revoked device");
        assert.equal(b.server.node.devices.get(id, keypair.publicKey), null, "b forgot it");
        await refused(onB, "Device Revoked", 403);

        // Rotated in storage only: the old key is refused on b, the new one admitted.
        const rid = uid(`cached-rot-${pattern}`);
        const oldKey = generateKeypair();
        const newKey = generateKeypair();
        const rotB = { ...clientOptions(b.server, b.config, rid), pattern };
        await (await TestClient.connect({ ...rotB, keypair: oldKey })).close();
        assert.ok(b.server.node.devices.get(rid, oldKey.publicKey));
        await storage.devices.rotateKey(rid, newKey.publicKey, "test");
        await assert.rejects(
          TestClient.connect({ ...rotB, keypair: oldKey }),
          (err: unknown) => err instanceof HandshakeRefused && err.problem.fatal === true,
        );
        assert.equal(await sessionCount(storage, rid), 1, "no session row for the old key");
        const fresh = await TestClient.connect({ ...rotB, keypair: newKey });
        await fresh.close();
        assert.equal(await sessionCount(storage, rid), 2);
      }

      // The stored user travels in the completion ACK even when the device was cached.
      const uidDev = uid("cached-user");
      const keypair = generateKeypair();
      const opts = { ...clientOptions(b.server, b.config, uidDev), keypair };
      const first = await TestClient.connect(opts);
      const userId = first.user.id as string;
      await first.close();
      await storage.users.update(userId, { displayName: "Renamed" });
      const second = await TestClient.connect(opts);
      assert.equal(second.user.display_name, "Renamed");
      await second.close();
    });
  });
}
