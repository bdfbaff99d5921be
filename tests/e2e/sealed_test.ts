/**
 * End-to-end encryption through a real server on Postgres: a message with a unique marker,
 * sealed by one SDK client for another device that is offline, appears nowhere in relay_queue,
 * in the server's log output or in the bytes the server wrote to its sockets; the recipient,
 * once back, reads it (plaintext, sender, unverified). A plain `send` of a second marker is the
 * control: it does show up in all three places, so the search would have found the first.
 *
 * Both clients speak protocol v1 (no tunnel encryption, allowed on loopback), so the sealed
 * envelope is the only thing between the marker and the wire.
 *
 * Needs COMMUCAT_TEST_PG_DSN and COMMUCAT_TEST_REDIS_URL; registered as ignored without them.
 */
import assert from "node:assert/strict";
import { connect, type InboundMessage } from "../../client/sdk.ts";
import { TrustStore } from "../../client/trust.ts";
import { directChannelId } from "../../client/channels.ts";
import { generateKeypair } from "../../protocol/crypto.ts";
import { openPostgres } from "../../storage/db.ts";
import { setLogLevel } from "../../server/log.ts";
import {
  LogCapture,
  openTestStorage,
  realServices,
  startServer,
  testConfig,
  uid,
  waitFor,
} from "../server/helpers/server.ts";

const encoder = new TextEncoder();

function contains(hay: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

/** A loopback TCP proxy that keeps every byte the server sends to its clients. */
function captureProxy(target: number) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const fromServer: Uint8Array[] = [];
  const conns = new Set<Deno.Conn>();
  const pumps: Promise<void>[] = [];
  const pump = async (from: Deno.Conn, to: Deno.Conn, keep: boolean) => {
    try {
      for await (const chunk of from.readable) {
        if (keep) fromServer.push(chunk.slice());
        await to.write(chunk);
      }
    } catch {
      // a side closed
    } finally {
      try {
        to.close();
      } catch {
        // already closed
      }
    }
  };
  const accepting = (async () => {
    for await (const client of listener) {
      const server = await Deno.connect({ hostname: "127.0.0.1", port: target });
      conns.add(client);
      conns.add(server);
      pumps.push(pump(client, server, false), pump(server, client, true));
    }
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    written(): Uint8Array {
      const total = fromServer.reduce((n, c) => n + c.length, 0);
      const out = new Uint8Array(total);
      let off = 0;
      for (const c of fromServer) {
        out.set(c, off);
        off += c.length;
      }
      return out;
    },
    async close() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch {
          // already closed
        }
      }
      await accepting;
      await Promise.allSettled(pumps);
    },
  };
}

Deno.test({
  name:
    "a sealed message is nowhere in relay_queue, the logs or the server's bytes; the recipient reads it",
  ignore: realServices() === null,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const real = realServices()!;
    const logs = new LogCapture().start();
    setLogLevel("debug");
    const { storage, close } = await openTestStorage("real");
    const config = testConfig();
    const server = await startServer(config, { storage });
    const proxy = captureProxy(server.ports.tcp);
    const db = await openPostgres(real.dsn, { max: 1 });
    const clients: { close(): Promise<void> }[] = [];
    try {
      const aliceId = uid("e2e-alice"), bobId = uid("e2e-bob");
      const aliceKeys = generateKeypair(), bobKeys = generateKeypair();
      const channel = directChannelId(aliceId, bobId);
      const open = async (deviceId: string, keypair: typeof aliceKeys, trust: TrustStore) => {
        const c = await connect({
          host: "127.0.0.1",
          port: proxy.port,
          versions: [1],
          deviceId,
          keypair,
          serverKey: config.crypto.noisePublic,
          e2e: { trust, directoryTtlMs: 0 },
          ackTimeoutMs: 10_000,
        });
        clients.push(c);
        return c;
      };
      const aliceTrust = new TrustStore(), bobTrust = new TrustStore();
      // bob registers, joins and goes offline.
      const bob1 = await open(bobId, bobKeys, bobTrust);
      await bob1.join(channel, [aliceId, bobId]);
      await bob1.close();

      const alice = await open(aliceId, aliceKeys, aliceTrust);
      await alice.join(channel, [aliceId, bobId]);
      const marker = `sealed-marker-${crypto.randomUUID()}`;
      const ack = await alice.sendSealed(channel, marker);
      assert.deepEqual(ack.recipients, [bobId]);
      const control = `plain-control-${crypto.randomUUID()}`;
      await alice.send(channel, control);

      // Queued for bob: two rows; the sealed one does not hold the marker, the plain one does.
      const rows = await db.query<{ payload: Uint8Array }>(
        "SELECT payload FROM relay_queue WHERE device_id = $1 ORDER BY envelope_id",
        [bobId],
      );
      assert.equal(rows.rows.length, 2, "both messages are queued for the offline recipient");
      const m = encoder.encode(marker), ctl = encoder.encode(control);
      assert.ok(rows.rows.every((r) => !contains(new Uint8Array(r.payload), m)));
      assert.ok(rows.rows.some((r) => contains(new Uint8Array(r.payload), ctl)), "control found");

      // bob comes back and reads both.
      const bob = await open(bobId, bobKeys, bobTrust);
      await bob.join(channel, [aliceId, bobId]);
      const got: InboundMessage[] = [];
      const it = bob.messages();
      while (got.length < 2) {
        const next = await it.next();
        assert.ok(!next.done);
        if (next.value.kind === "MSG") got.push(next.value);
      }
      await it.return?.();
      const [sealed, plain] = got;
      assert.equal(sealed.sealed, true);
      assert.equal(sealed.e2eError, null, String(sealed.e2eError));
      assert.equal(new TextDecoder().decode(sealed.plaintext!), marker);
      assert.equal(sealed.sender, aliceId);
      assert.equal(sealed.verified, false);
      assert.equal(plain.sealed, false);
      assert.equal(plain.plaintext, null);

      const written = proxy.written();
      assert.ok(!contains(written, m), "the marker is not in any byte the server wrote");
      assert.ok(contains(written, ctl), "the control is (the capture works)");
      const logText = logs.lines.map((l) => JSON.stringify(l)).join("\n");
      assert.ok(logs.lines.length > 0, "the server logged at debug level");
      assert.ok(!logText.includes(marker), "the marker is not in the server's log output");
      // The queue is empty once bob acknowledged.
      await bob.close();
      await waitFor(async () =>
        (await db.query("SELECT 1 FROM relay_queue WHERE device_id = $1", [bobId])).rows
          .length === 0
      );
    } finally {
      for (const c of clients) await c.close().catch(() => {});
      await proxy.close();
      await server.stop();
      await db.close();
      await close();
      setLogLevel("info");
      logs.stop();
    }
  },
});
