/**
 * The SDK's scenarios over every transport from one table: TCP and the WebSocket upgrade of
 * /connect (and HTTP /connect for comparison), and under TLS (a TLS listener and wss:), each
 * under protocol v1 and v2, against real servers in this process sharing one storage. Scenarios: a 1:1 exchange with ACKs, presence of a peer going online
 * and offline, and the offline queue (one side away, three messages, received in order exactly
 * once on return).
 */
import assert from "node:assert/strict";
import { type Client, connect, type ConnectOptions } from "../../client/mod.ts";
import { directChannelId } from "../../client/channels.ts";
import { generateKeypair, type Keypair } from "../../protocol/crypto.ts";
import type { InboundMessage } from "../../client/sdk.ts";
import {
  LogCapture,
  openTestStorage,
  realServices,
  startServer,
  testConfig,
  uid,
  waitFor,
} from "../server/helpers/server.ts";

type Ports = { tcp: number; http: number };
type Row = {
  name: string;
  /** Runs against the TLS server (a self-signed certificate the client is told to trust). */
  tls: boolean;
  options: (ports: Ports, caCert: string) => Partial<ConnectOptions>;
};

const TRANSPORTS: Row[] = [
  { name: "tcp", tls: false, options: (p) => ({ transport: "tcp", port: p.tcp }) },
  {
    name: "ws",
    tls: false,
    options: (p) => ({ transport: "ws", url: `ws://127.0.0.1:${p.http}/connect` }),
  },
  {
    name: "http",
    tls: false,
    options: (p) => ({ transport: "http", url: `http://127.0.0.1:${p.http}/connect` }),
  },
  {
    name: "tls",
    tls: true,
    options: (p, ca) => ({ transport: "tls", host: "localhost", port: p.tcp, caCerts: [ca] }),
  },
  {
    name: "wss",
    tls: true,
    options: (p, ca) => ({
      transport: "ws",
      url: `wss://localhost:${p.http}/connect`,
      caCerts: [ca],
    }),
  },
];

/** A self-signed certificate for localhost (not a CA: rustls refuses a CA as end entity). */
async function selfSigned(): Promise<{ dir: string; cert: string; key: string }> {
  const dir = await Deno.makeTempDir({ prefix: "commucat-transports-tls-" });
  const cert = `${dir}/cert.pem`;
  const key = `${dir}/key.pem`;
  const out = await new Deno.Command("openssl", {
    args: [
      ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
      ...["-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost"],
      ...["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
      ...["-addext", "basicConstraints=critical,CA:FALSE"],
      ...["-addext", "keyUsage=digitalSignature"],
      ...["-addext", "extendedKeyUsage=serverAuth"],
    ],
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  return { dir, cert, key };
}

const VERSIONS = [[1], [2]];

/** The next message that is not PRESENCE, acknowledged at once. */
async function nextMessage(inbox: AsyncIterator<InboundMessage>): Promise<InboundMessage> {
  for (;;) {
    const { value, done } = await inbox.next();
    assert.ok(!done, "the message stream ended");
    value.ack();
    if (value.kind !== "PRESENCE") return value;
  }
}

/** Waits for a PRESENCE about `peer` in `state`, skipping everything else. */
async function presenceOf(
  inbox: AsyncIterator<InboundMessage>,
  peer: string,
  state: string,
): Promise<void> {
  for (;;) {
    const { value, done } = await inbox.next();
    assert.ok(!done, "the message stream ended");
    if (value.kind === "PRESENCE" && value.peer === peer && value.state === state) return;
  }
}

Deno.test({
  name: "SDK scenarios over tcp, ws, http /connect, tls and wss, protocol v1 and v2",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const logs = new LogCapture().start();
    const { storage, close } = await openTestStorage(realServices() ? "real" : "embedded");
    const config = testConfig();
    const server = await startServer(config, { storage });
    const files = await selfSigned();
    const caCert = await Deno.readTextFile(files.cert);
    const tlsConfig = testConfig({ server: { tlsCert: files.cert, tlsKey: files.key } });
    tlsConfig.crypto = config.crypto;
    const tlsServer = await startServer(tlsConfig, { storage });
    const clients: Client[] = [];
    try {
      for (const row of TRANSPORTS) {
        for (const versions of VERSIONS) {
          const label = `${row.name} v${versions[0]}`;
          const ports = row.tls ? tlsServer.ports : server.ports;
          const open = async (id: string, keypair: Keypair) => {
            const client = await connect({
              ...row.options(ports, caCert),
              versions,
              deviceId: id,
              keypair,
              serverKey: config.crypto.noisePublic,
              user: { handle: id },
              keepaliveMs: 0,
              handshakeTimeoutMs: 5_000,
            });
            clients.push(client);
            assert.equal(client.protocolVersion, versions[0]);
            return client;
          };

          await t.step(`${label}: exchange, presence, offline queue`, async () => {
            const aliceId = uid(`alice-${row.name}`);
            const bobId = uid(`bob-${row.name}`);
            const bobKey = generateKeypair();
            const channel = directChannelId(aliceId, bobId);
            const alice = await open(aliceId, generateKeypair());
            let bob = await open(bobId, bobKey);
            await alice.join(channel, [aliceId, bobId]);
            await bob.join(channel, [aliceId, bobId]);
            const aliceInbox = alice.messages();
            let bobInbox = bob.messages();

            const ack = await alice.send(channel, "hello bob");
            assert.ok(ack.ack > 0);
            const got = await nextMessage(bobInbox);
            assert.equal(got.text(), "hello bob");
            assert.equal(got.channel, channel);
            await bob.send(channel, "hello alice");
            assert.equal((await nextMessage(aliceInbox)).text(), "hello alice");

            // Bob leaves: alice hears it, sends three, bob returns and gets each once, in order.
            await bob.close();
            await presenceOf(aliceInbox, bobId, "offline");
            for (const n of [1, 2, 3]) await alice.send(channel, `away ${n}`);
            bob = await open(bobId, bobKey);
            await presenceOf(aliceInbox, bobId, "online");
            bobInbox = bob.messages();
            const replayed: string[] = [];
            for (let i = 0; i < 3; i++) replayed.push((await nextMessage(bobInbox)).text());
            assert.deepEqual(replayed, ["away 1", "away 2", "away 3"]);
            // Exactly once: the queue is empty once bob acknowledged, and a marker sent now is
            // the next message bob sees (no duplicate of the three before it).
            await waitFor(async () => (await storage.relay.depth(bobId)).depth === 0);
            await alice.send(channel, "marker");
            assert.equal((await nextMessage(bobInbox)).text(), "marker");
            await alice.close();
            await bob.close();
          });
        }
      }
      await t.step("the WebSocket connections were logged as transport ws", () => {
        assert.ok(logs.lines.some((l) => l.transport === "ws"), "a log line names transport ws");
      });
    } finally {
      for (const c of clients) await c.close();
      await server.stop();
      await tlsServer.stop();
      await Deno.remove(files.dir, { recursive: true }).catch(() => {});
      await close();
      logs.stop();
    }
  },
});
