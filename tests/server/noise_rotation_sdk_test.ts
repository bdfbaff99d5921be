/**
 * A server Noise key rotation followed by SDK clients connected across it: the client that
 * pinned the federation key picks up the next key from the catalog the server announces
 * (`serverKey` event, what an application persists), connects to the new key after the switch,
 * stays connected while the old key leaves the grace window (the node announces the changed
 * catalog), and reconnects with the new key once the old one is refused. A device that was away
 * falls back to the next key it persisted. A forged catalog (over the wire from a node with
 * another federation key, or handed to useKeyCatalog) is refused and changes nothing.
 * PGlite + memory, and Postgres + Redis when the environment names them.
 */
import assert from "node:assert/strict";
import { freePort } from "../helpers/wait.ts";
import { sdkOptions } from "../helpers/env_server.ts";
import { bytesToHex } from "@noble/hashes/utils.js";
import { type Client, CommuCatError, connect, type ServerKeyUpdate } from "../../client/sdk.ts";
import { generateKeypair, type Keypair } from "../../protocol/crypto.ts";
import { federationKeypair } from "../../protocol/federation.ts";
import type { Config } from "../../server/config/mod.ts";
import { keyCatalog } from "../../server/noise_keys.ts";
import {
  LogCapture,
  openTestStorage,
  type ServerHandle,
  startServer,
  storageKinds,
  testConfig,
  uid,
  waitFor,
} from "./helpers/server.ts";

type Pair = { privateKey: Uint8Array; publicKey: Uint8Array };

function withKeys(base: Config, current: Pair, extra: {
  next?: Pair;
  previous?: Pair;
  notAfter?: Date;
  federationSeed?: Uint8Array;
} = {}): Config {
  return {
    ...base,
    crypto: {
      ...base.crypto,
      federationSeed: extra.federationSeed ?? base.crypto.federationSeed,
      noisePrivate: current.privateKey,
      noisePublic: current.publicKey,
      noiseNext: extra.next?.privateKey ?? null,
      noisePrevious: extra.previous?.privateKey ?? null,
      noisePreviousNotAfter: extra.notAfter ?? null,
    },
  };
}

const hex = (k: Pair) => bytesToHex(k.publicKey);

for (const kind of storageKinds()) {
  Deno.test({
    name: `server key rotation with SDK clients connected across it (${kind})`,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn() {
      const { storage, close } = await openTestStorage(kind);
      const logs = new LogCapture().start();
      const k1 = generateKeypair(), k2 = generateKeypair(), k3 = generateKeypair();
      const base = testConfig({ server: { tcpBind: { hostname: "127.0.0.1", port: freePort() } } });
      const federationKey = bytesToHex(federationKeypair(base.crypto.federationSeed).publicKey);
      let server: ServerHandle = await startServer(withKeys(base, k1), { storage });
      const clients: Client[] = [];
      const open = async (
        deviceId: string,
        keypair: Keypair,
        keys: { serverKey: string; nextServerKeys?: string[] },
      ) => {
        // The server key(s) the client pins come from `keys`, not from the running config.
        const client = await connect(sdkOptions({ server, config: base }, deviceId, keypair, {
          ...keys,
          federationKey,
          reconnect: { initialDelayMs: 50, maxDelayMs: 200 },
        }));
        clients.push(client);
        return client;
      };
      /** Stops the node and starts it again on the same port with `config`'s keys. */
      const restart = async (config: Config) => {
        await server.stop();
        server = await startServer(config, { storage });
      };
      try {
        // Where the application keeps its pinned server key (updated on "serverKey").
        let alicePinned: ServerKeyUpdate = { serverKey: hex(k1), nextServerKeys: [] };
        const aliceKeys = generateKeypair();
        const alice = await open(uid("rot-alice"), aliceKeys, alicePinned);
        alice.on("serverKey", (u) => (alicePinned = u));
        const carolKeys = generateKeypair();
        const carolId = uid("rot-carol");
        let carolPinned: ServerKeyUpdate = { serverKey: hex(k1), nextServerKeys: [] };
        const carol = await open(carolId, carolKeys, carolPinned);
        carol.on("serverKey", (u) => (carolPinned = u));
        // No rotation under way: nothing announced.
        assert.equal(logs.has("key catalog announced"), false);

        // Step 1, announce: the nodes restart with a next key; clients reconnect by themselves
        // with the key they know and are told the next one.
        await restart(withKeys(base, k1, { next: k2 }));
        await waitFor(() => alicePinned.nextServerKeys[0] === hex(k2), 20_000);
        assert.equal(alicePinned.serverKey, hex(k1));
        await waitFor(() => carolPinned.nextServerKeys[0] === hex(k2), 20_000);
        // Carol goes away with what she persisted (current k1, next k2).
        await carol.close();

        // Step 2, switch: k2 current, k1 previous for a grace window. Alice reconnects with k1,
        // still accepted, and is told k2 is the key now.
        const graceEnds = new Date(Date.now() + 12_000);
        const switched = withKeys(base, k2, { previous: k1, notAfter: graceEnds });
        await restart(switched);
        await waitFor(() => alicePinned.serverKey === hex(k2), 20_000);
        assert.deepEqual(alicePinned.nextServerKeys, []);
        assert.equal(alice.serverKey, hex(k2));
        await waitFor(() => alice.connected, 20_000);
        const session = alice.session;

        // The grace window ends while alice stays connected: the node announces the catalog.
        await waitFor(() => logs.has("key catalog announced", { sessions: 1 }), 30_000);
        assert.equal(alice.connected, true);
        assert.equal(alice.session, session, "the same connection throughout");
        // The old key is refused now; alice's next connection uses k2 and succeeds.
        await assert.rejects(
          connect({
            transport: "tcp",
            host: "127.0.0.1",
            port: server.ports.tcp,
            deviceId: uid("rot-late"),
            keypair: generateKeypair(),
            serverKey: hex(k1),
            keepaliveMs: 0,
          }),
          (err) => err instanceof CommuCatError && err.title === "Handshake Failed",
        );
        await alice.reconnect();
        assert.notEqual(alice.session, session);
        assert.equal((await alice.join(3, [alice.deviceId, carolId])).ack > 0, true);

        // Carol, away during the switch, starts from what she persisted: k1 is refused, the
        // next key she was told answers, and it becomes her key.
        const carolBack = await open(carolId, carolKeys, carolPinned);
        const carolNow = new Promise<ServerKeyUpdate>((r) => carolBack.on("serverKey", r));
        assert.equal((await carolNow).serverKey, hex(k2));
        assert.equal(carolBack.serverKey, hex(k2));

        // A forged catalog is refused and changes nothing: tampered, signed by another key, or
        // older than the one in use.
        const real = keyCatalog(switched);
        const tampered = structuredClone(real);
        tampered.body.keys[0].public_key = hex(k3);
        assert.throws(
          () => alice.useKeyCatalog(tampered),
          (e) => e instanceof CommuCatError && /does not verify/.test(e.detail),
        );
        const otherSeed = crypto.getRandomValues(new Uint8Array(32));
        assert.throws(
          () => alice.useKeyCatalog(keyCatalog(withKeys(base, k3, { federationSeed: otherSeed }))),
          /another federation key/,
        );
        assert.throws(
          () => alice.useKeyCatalog(keyCatalog(switched, new Date(Date.now() - 86_400_000))),
          /before the one in use/,
        );
        assert.equal(alice.serverKey, hex(k2));

        // Over the wire: a node whose catalog is signed by another federation key announces it
        // (a next key k3); the client refuses it ("error") and keeps its keys.
        const errors: CommuCatError[] = [];
        alice.on("error", (e) => errors.push(e));
        await restart(withKeys(base, k2, { next: k3, federationSeed: otherSeed }));
        await waitFor(() => errors.some((e) => e.title === "Invalid Key Catalog"), 20_000);
        assert.equal(alice.serverKey, hex(k2));
        assert.deepEqual(alice.nextServerKeys, []);
        assert.equal(alicePinned.serverKey, hex(k2));
      } finally {
        for (const c of clients) await c.close().catch(() => {});
        await server.stop();
        logs.stop();
        await close();
      }
    },
  });
}
