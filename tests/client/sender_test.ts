/**
 * The SDK side of capability `sender` (ccp1.md §4.2), against the scripted fake server: the
 * stamp is taken off opaque payloads and read from JSON ones only when AUTH granted it; a bad
 * stamp is reported, not fatal. And end-to-end: a sealed MSG whose stamp names another device
 * than the envelope is refused.
 */
import assert from "node:assert/strict";
import { type Client, connect, type ConnectOptions } from "../../client/sdk.ts";
import { generateKeypair } from "../../protocol/crypto.ts";
import { FrameType } from "../../protocol/frame.ts";
import { senderPrefix } from "../../protocol/sender.ts";
import { sealEnvelope } from "../../protocol/envelope.ts";
import { concatBytes } from "../../protocol/bytes.ts";
import { FakeServer, type FakeServerOptions } from "./fake_server.ts";
import type { CommuCatError } from "../../client/errors.ts";

const encoder = new TextEncoder();

async function withClient(
  serverOptions: FakeServerOptions,
  extra: Partial<ConnectOptions>,
  body: (client: Client) => Promise<void>,
): Promise<void> {
  const server = FakeServer.start(serverOptions);
  let client: Client | null = null;
  try {
    client = await connect({
      transport: "tcp",
      host: "127.0.0.1",
      port: server.port,
      deviceId: "dev-bob",
      keypair: extra.keypair ?? generateKeypair(),
      serverKey: server.publicKeyHex,
      keepaliveMs: 0,
      ...extra,
    });
    await body(client);
  } finally {
    await client?.close();
    await server.close();
  }
}

async function take(client: Client, n: number) {
  const got = [];
  for await (const m of client.messages()) {
    got.push(m);
    if (got.length === n) break;
  }
  return got;
}

Deno.test("sender stamps: stripped from MSG/KEY_UPDATE, read from JSON, when granted", async () => {
  await withClient(
    {
      grant: ["sender"],
      replay(conn) {
        conn.opaque(FrameType.Msg, 5, concatBytes(senderPrefix("dev-alice"), encoder.encode("hi")));
        conn.opaque(
          FrameType.KeyUpdate,
          5,
          concatBytes(senderPrefix("carol@x.example"), encoder.encode("k")),
        );
        conn.control(FrameType.Typing, 5, { typing: true, sender: "dev-alice" });
      },
    },
    { capabilities: ["sender"] },
    async (client) => {
      assert.deepEqual(client.capabilities, ["sender"]);
      const [msg, key, typing] = await take(client, 3);
      assert.equal(msg.sender, "dev-alice");
      assert.equal(msg.text(), "hi");
      assert.equal(key.sender, "carol@x.example");
      assert.equal(key.text(), "k");
      assert.equal(typing.sender, "dev-alice");
    },
  );
});

Deno.test("sender stamps: untouched when not granted; a broken stamp is reported, not fatal", async () => {
  const raw = concatBytes(senderPrefix("dev-alice"), encoder.encode("hi"));
  await withClient(
    {
      replay(conn) {
        conn.opaque(FrameType.Msg, 5, raw);
      },
    },
    { capabilities: ["sender"] },
    async (client) => {
      assert.deepEqual(client.capabilities, []);
      const [msg] = await take(client, 1);
      assert.equal(msg.sender, undefined);
      assert.deepEqual(msg.payload, raw);
    },
  );
  await withClient(
    {
      grant: ["sender"],
      // Sent once the client speaks (its TYPING), so its "error" listener is in place.
      onFrame(conn, frame) {
        if (frame.type !== FrameType.Typing) return;
        conn.control(FrameType.Ack, 5, { ack: frame.sequence });
        conn.opaque(FrameType.Msg, 5, new Uint8Array([0x05, 0x61]));
        conn.opaque(FrameType.Msg, 5, concatBytes(senderPrefix("dev-alice"), encoder.encode("ok")));
      },
    },
    { capabilities: ["sender"] },
    async (client) => {
      const errors: CommuCatError[] = [];
      client.on("error", (e) => errors.push(e));
      await client.typing(5);
      const [bad, good] = await take(client, 2);
      assert.equal(bad.sender, undefined);
      assert.equal(good.sender, "dev-alice");
      assert.equal(errors.length, 1);
      assert.equal(errors[0].title, "Invalid Sender Stamp");
    },
  );
});

Deno.test("sealed MSG: an envelope naming another sender than the server's stamp is refused", async () => {
  const bob = generateKeypair(), mallory = generateKeypair();
  const envelope = sealEnvelope({
    sender: "dev-alice",
    senderKey: mallory,
    conversation: { kind: "members", members: ["dev-alice", "dev-bob"] },
    counter: 1,
    recipients: [{ deviceId: "dev-bob", publicKey: bob.publicKey }],
    body: encoder.encode("I am alice"),
  });
  await withClient(
    {
      grant: ["sender"],
      replay(conn) {
        conn.opaque(FrameType.Msg, 5, concatBytes(senderPrefix("dev-mallory"), envelope));
      },
    },
    { keypair: bob, e2e: true },
    async (client) => {
      const [m] = await take(client, 1);
      assert.equal(m.sealed, true);
      assert.equal(m.plaintext, null);
      assert.equal(m.e2eError?.code, "sender-mismatch");
      assert.equal(m.sender, "dev-mallory");
    },
  );
});
