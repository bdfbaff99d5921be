/**
 * Server Noise key rotation: handshakes to the current, next and previous (in its grace) keys
 * with XK and IK; the previous key refused after its grace; the signed key catalog at
 * GET /.well-known/commucat; and a rotation with clients connected across it (a restart with
 * the next key made current and the old one previous).
 */
import assert from "node:assert/strict";
import { ed25519 } from "@noble/curves/ed25519.js";
import { blake3 } from "@noble/hashes/blake3.js";
import { generateKeypair } from "../../protocol/crypto.ts";
import { FrameType } from "../../protocol/frame.ts";
import { openStorage } from "../../storage/mod.ts";
import { acceptedKeys, CATALOG_PATH, verifyKeyCatalog } from "../../server/noise_keys.ts";
import type { Config } from "../../server/config/mod.ts";
import { clientOptions, HandshakeRefused, TestClient } from "./helpers/client.ts";
import { LogCapture, startServer, testConfig, uid } from "./helpers/server.ts";

const HOUR = 3_600_000;

function rotated(base: Config, keys: {
  current: { privateKey: Uint8Array; publicKey: Uint8Array };
  next?: Uint8Array | null;
  previous?: Uint8Array | null;
  notAfter?: Date | null;
}): Config {
  return {
    ...base,
    crypto: {
      ...base.crypto,
      noisePrivate: keys.current.privateKey,
      noisePublic: keys.current.publicKey,
      noiseNext: keys.next ?? null,
      noisePrevious: keys.previous ?? null,
      noisePreviousNotAfter: keys.notAfter ?? null,
    },
  };
}

Deno.test({
  name: "handshakes to current, next and previous keys; the catalog; a rotation across clients",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const dir = await Deno.makeTempDir({ prefix: "commucat-rotation-" });
    const storage = await openStorage({ postgresDsn: null, redisUrl: null, dataDir: dir });
    const logs = new LogCapture().start();
    const k0 = generateKeypair(), k1 = generateKeypair(), k2 = generateKeypair();
    const base = testConfig();
    const config = rotated(base, {
      current: k1,
      next: k2.privateKey,
      previous: k0.privateKey,
      notAfter: new Date(Date.now() + HOUR),
    });
    let server = await startServer(config, { storage });
    const clients: TestClient[] = [];
    try {
      await t.step("each accepted key completes XK and IK; an unknown key fails", async () => {
        let channel = 100;
        for (const pattern of ["XK", "IK"] as const) {
          for (const key of [k1, k2, k0]) {
            // The Noise handshake completes only with the key the server answered with.
            const id = uid(`rot-${pattern}`);
            const c = await TestClient.connect({
              ...clientOptions(server, config, id),
              serverStatic: key.publicKey,
              pattern,
            });
            const reply = await c.join(channel++, [id, uid("peer")]);
            assert.equal(reply.type, FrameType.Ack, JSON.stringify(reply.json));
            await c.close();
          }
        }
        const stranger = generateKeypair();
        await assert.rejects(
          TestClient.connect({
            ...clientOptions(server, config, uid("rot-x")),
            serverStatic: stranger.publicKey,
          }),
          (err) => err instanceof HandshakeRefused && err.problem.title === "Handshake Failed",
        );
      });

      await t.step("the catalog is signed by the federation key and lists the keys", async () => {
        const res = await fetch(`http://127.0.0.1:${server.ports.http}${CATALOG_PATH}`);
        assert.equal(res.status, 200);
        const catalog = await res.json();
        const fedKey = ed25519.getPublicKey(blake3(config.crypto.federationSeed));
        const body = verifyKeyCatalog(catalog, fedKey);
        assert.deepEqual(
          body.keys.map((k) => [k.status, k.public_key]),
          acceptedKeys(config).map((k) => [
            k.status,
            Array.from(k.publicKey, (b) => b.toString(16).padStart(2, "0")).join(""),
          ]),
        );
        assert.equal(body.keys.find((k) => k.status === "previous")!.not_after !== null, true);
        const forged = structuredClone(catalog);
        forged.body.keys[0].public_key = "00".repeat(32);
        assert.throws(() => verifyKeyCatalog(forged, fedKey), /signature does not verify/);
        assert.throws(
          () => verifyKeyCatalog(catalog, ed25519.getPublicKey(ed25519.utils.randomSecretKey())),
          /another federation key/,
        );
      });

      await t.step(
        "a rotation: the next key becomes current; connected clients come back",
        async () => {
          // Before: alice connected to the current key k1.
          const aliceId = uid("rot-alice");
          const alice = await TestClient.connect({
            ...clientOptions(server, config, aliceId),
            serverStatic: k1.publicKey,
          });
          clients.push(alice);
          await server.stop();
          // After: k2 current, k1 previous for an hour, no next yet; alice reconnects with what
          // she knows (k1), bob with the new key.
          const after = rotated(base, {
            current: k2,
            previous: k1.privateKey,
            notAfter: new Date(Date.now() + HOUR),
          });
          server = await startServer(
            { ...after, server: { ...after.server, bind: { hostname: "127.0.0.1", port: 0 } } },
            { storage },
          );
          const again = await TestClient.connect({
            ...clientOptions(server, after, aliceId, { keypair: alice.options.keypair }),
            serverStatic: k1.publicKey,
          });
          clients.push(again);
          const bob = await TestClient.connect({
            ...clientOptions(server, after, uid("rot-bob")),
            serverStatic: k2.publicKey,
          });
          clients.push(bob);
          assert.equal((await bob.join(9, [aliceId])).type, FrameType.Ack);
          assert.equal((await again.join(9, [bob.options.deviceId])).type, FrameType.Ack);
          assert.equal((await bob.reply(bob.msg(9, "after the rotation"))).type, FrameType.Ack);
          const got = await again.nextOfType(FrameType.Msg);
          assert.equal(new TextDecoder().decode(got.payload), "after the rotation");
          // The grace window over: k0 (two rotations ago) and an expired previous are refused.
          await server.stop();
          const expired = rotated(base, {
            current: k2,
            previous: k1.privateKey,
            notAfter: new Date(Date.now() - 1000),
          });
          server = await startServer(expired, { storage });
          await assert.rejects(
            TestClient.connect({
              ...clientOptions(server, expired, aliceId, { keypair: alice.options.keypair }),
              serverStatic: k1.publicKey,
            }),
            HandshakeRefused,
          );
        },
      );
    } finally {
      for (const c of clients) await c.close().catch(() => {});
      await server.stop();
      logs.stop();
      await storage.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
