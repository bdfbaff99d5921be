import assert from "node:assert/strict";
import { type Client, CommuCatError, connect, type ConnectOptions } from "../../client/sdk.ts";
import { generateKeypair } from "../../protocol/crypto.ts";
import { FrameType } from "../../protocol/frame.ts";
import { FakeServer, type FakeServerOptions } from "./fake_server.ts";

const encoder = new TextEncoder();

function options(server: FakeServer, extra: Partial<ConnectOptions> = {}): ConnectOptions {
  return {
    transport: "tcp",
    host: "127.0.0.1",
    port: server.port,
    deviceId: "dev-alice",
    keypair: generateKeypair(),
    serverKey: server.publicKeyHex,
    keepaliveMs: 0,
    ...extra,
  };
}

/** Runs `body` with a fake server and a connected client, closing both afterwards. */
async function withClient(
  serverOptions: FakeServerOptions,
  clientOptions: Partial<ConnectOptions>,
  body: (client: Client, server: FakeServer) => Promise<void>,
): Promise<void> {
  const server = FakeServer.start(serverOptions);
  let client: Client | null = null;
  try {
    client = await connect(options(server, clientOptions));
    await body(client, server);
  } finally {
    await client?.close();
    await server.close();
  }
}

for (const pattern of ["XK", "IK"] as const) {
  for (const version of [1, 2]) {
    Deno.test(`handshake ${pattern} v${version}: session, sequences, ACK matching`, async () => {
      await withClient({ versions: [version] }, { pattern }, async (client, server) => {
        assert.equal(client.protocolVersion, version);
        assert.equal(client.domain, "test.local");
        assert.equal(client.user?.handle, "alice");
        assert.ok(client.session);
        const conn = await server.connection();
        assert.equal(conn.version, version);
        assert.equal(conn.hello.pattern, pattern);
        assert.deepEqual(conn.hello.supported_versions, [1, 2]);
        const ack = await client.join(9, ["dev-alice", "dev-bob"]);
        const join = (await conn.waitFor(1, FrameType.Join))[0];
        // HELLO is 1, the XK AUTH is 2; requests follow.
        assert.equal(join.sequence, pattern === "XK" ? 3 : 2);
        assert.deepEqual(ack, { ack: join.sequence });
        assert.deepEqual(join.json, { members: ["dev-alice", "dev-bob"], relay: true });
        const sent = await client.send(9, "hi");
        assert.equal(sent.ack, join.sequence + 1);
        const msg = (await conn.waitFor(1, FrameType.Msg))[0];
        assert.equal(new TextDecoder().decode(msg.payload), "hi");
        assert.equal(msg.channel, 9);
      });
    });
  }
}

Deno.test("requests settle on their own ACK even when ACKs come back out of order", async () => {
  const held: { seq: number; channel: number }[] = [];
  await withClient(
    {
      onFrame(conn, frame) {
        held.push({ seq: frame.sequence, channel: frame.channel });
        if (held.length === 3) {
          for (const h of held.reverse()) {
            conn.control(FrameType.Ack, h.channel, { ack: h.seq, tag: h.channel });
          }
        }
      },
    },
    {},
    async (client) => {
      const results = await Promise.all([
        client.send(1, "a"),
        client.send(2, "b"),
        client.send(3, "c"),
      ]);
      assert.deepEqual(results.map((r) => r.tag), [1, 2, 3]);
      assert.deepEqual(results.map((r) => r.ack), [3, 4, 5]);
    },
  );
});

Deno.test("a non-fatal ERROR rejects only the request it names", async () => {
  await withClient(
    {
      onFrame(conn, frame) {
        if (frame.channel === 13) {
          conn.error({
            type: "about:blank",
            title: "Not A Member",
            status: 403,
            detail: "not a member of channel 13",
            fatal: false,
            sequence: frame.sequence,
          });
        } else {
          conn.control(FrameType.Ack, frame.channel, { ack: frame.sequence });
        }
      },
    },
    {},
    async (client) => {
      const bad = client.send(13, "x");
      const good = client.send(14, "y");
      await assert.rejects(bad, (e: unknown) => {
        assert.ok(e instanceof CommuCatError);
        assert.equal(e.title, "Not A Member");
        assert.equal(e.status, 403);
        assert.equal(e.fatal, false);
        assert.equal(e.source, "server");
        return true;
      });
      assert.equal((await good).ack, 4);
      assert.equal(client.connected, true);
    },
  );
});

Deno.test("a fatal ERROR rejects every pending request and closes the client", async () => {
  await withClient(
    {
      onFrame(conn) {
        conn.error({
          type: "about:blank",
          title: "Device Revoked",
          status: 403,
          detail: "device dev-alice is revoked",
          fatal: true,
        });
      },
    },
    { reconnect: true },
    async (client) => {
      const a = client.send(1, "a");
      const b = client.send(1, "b");
      for (const p of [a, b]) {
        await assert.rejects(
          p,
          (e: unknown) => e instanceof CommuCatError && e.title === "Device Revoked",
        );
      }
      // 403 is final: no reconnect loop, the client closes with the reason.
      const reason = await client.closed;
      assert.equal(reason?.title, "Device Revoked");
      assert.equal(client.connected, false);
      await assert.rejects(
        client.send(1, "c"),
        (e: unknown) => e instanceof CommuCatError && e.title === "Connection Closed",
      );
    },
  );
});

const pending = {
  type: "about:blank" as const,
  title: "Device Pending Approval",
  status: 403,
  detail: "device dev-alice waits for operator approval",
  fatal: true,
};

Deno.test("handshake refused at HELLO rejects connect with the server's problem", async () => {
  const server = FakeServer.start({ refuseHello: pending });
  try {
    await assert.rejects(connect(options(server)), (e: unknown) => {
      assert.ok(e instanceof CommuCatError);
      assert.equal(e.title, "Device Pending Approval");
      assert.equal(e.status, 403);
      assert.equal(e.fatal, true);
      assert.match(e.detail, /approval/);
      return true;
    });
  } finally {
    await server.close();
  }
});

for (const plaintext of [false, true]) {
  Deno.test(`XK v2 refusal after msg3 (${plaintext ? "plaintext" : "inside the secure stream"})`, async () => {
    const server = FakeServer.start({ refuseAfterProof: pending, refusePlaintext: plaintext });
    try {
      await assert.rejects(connect(options(server)), (e: unknown) => {
        assert.ok(e instanceof CommuCatError);
        assert.equal(e.title, "Device Pending Approval");
        return true;
      });
    } finally {
      await server.close();
    }
  });
}

Deno.test("a server that does not hold the trusted key fails the handshake", async () => {
  const server = FakeServer.start();
  try {
    const wrong = generateKeypair().publicKey;
    await assert.rejects(
      connect(options(server, { serverKey: wrong })),
      (e: unknown) => e instanceof CommuCatError && e.fatal,
    );
  } finally {
    await server.close();
  }
});

Deno.test("a silent server hits the handshake timeout", async () => {
  const server = FakeServer.start({ silent: true });
  try {
    await assert.rejects(
      connect(options(server, { handshakeTimeoutMs: 150 })),
      (e: unknown) =>
        e instanceof CommuCatError && e.title === "Handshake Timeout" && e.status === 408,
    );
  } finally {
    await server.close();
  }
});

Deno.test("no common version: the client refuses a server that picks one it did not offer", async () => {
  const server = FakeServer.start({ versions: [1] });
  try {
    await assert.rejects(
      connect(options(server, { versions: [2] })),
      (e: unknown) => e instanceof CommuCatError && e.title === "Protocol Version Mismatch",
    );
  } finally {
    await server.close();
  }
});

Deno.test("bad options are refused before any connection", async () => {
  const base = { deviceId: "d1", keypair: generateKeypair(), serverKey: "00".repeat(32) };
  await assert.rejects(connect({ ...base, serverKey: "abc" }), /serverKey/);
  await assert.rejects(connect({ ...base, deviceId: "bad id" }), /deviceId/);
  await assert.rejects(connect({ ...base, versions: [3] }), /versions/);
  await assert.rejects(connect({ ...base, pattern: "NN" as "XK" }), /pattern/);
});

for (const chunkSize of [1, 7, 4099]) {
  Deno.test(`inbound frames reassemble across ${chunkSize}-byte chunks (v2), autoAck`, async () => {
    const big = new Uint8Array(70_000).map((_, i) => i % 251);
    await withClient(
      {
        chunkSize,
        replay(conn) {
          conn.opaque(FrameType.Msg, 5, encoder.encode("one"));
          conn.control(FrameType.Typing, 5, { typing: true });
          conn.opaque(FrameType.Msg, 5, big);
          conn.opaque(FrameType.KeyUpdate, 5, encoder.encode("key"));
          conn.control(FrameType.GroupEvent, 5, { event: "renamed" });
        },
      },
      { versions: [2] },
      async (client, server) => {
        const got = [];
        for await (const m of client.messages()) {
          got.push(m);
          if (got.length === 5) break;
        }
        assert.deepEqual(got.map((m) => m.kind), [
          "MSG",
          "TYPING",
          "MSG",
          "KEY_UPDATE",
          "GROUP_EVENT",
        ]);
        assert.equal(got[0].text(), "one");
        assert.deepEqual(got[1].json, { typing: true });
        assert.deepEqual(got[2].payload, big);
        assert.deepEqual(got[4].json, { event: "renamed" });
        // autoAck: each frame is acknowledged once the loop moves on (the last one on break).
        const conn = await server.connection();
        const acks = await conn.waitFor(5, FrameType.Ack);
        assert.deepEqual(
          acks.map((a) => (a.json as { ack: number }).ack),
          got.map((m) => m.sequence),
        );
        assert.deepEqual(acks.map((a) => a.channel), [5, 5, 5, 5, 5]);
      },
    );
  });
}

Deno.test("without autoAck nothing is acknowledged until ack(sequence)", async () => {
  await withClient(
    {
      replay(conn) {
        conn.opaque(FrameType.Msg, 8, encoder.encode("a"));
        conn.opaque(FrameType.Msg, 8, encoder.encode("b"));
      },
    },
    { autoAck: false },
    async (client, server) => {
      const it = client.messages();
      const a = (await it.next()).value!;
      const b = (await it.next()).value!;
      await it.return!();
      client.ack(b.sequence);
      client.ack(b.sequence); // idempotent
      client.ack(999); // unknown: ignored
      await client.send(8, "sync"); // a frame after the ACK: everything before it has arrived
      const conn = await server.connection();
      await conn.waitFor(1, FrameType.Msg);
      const acks = conn.received.filter((f) => f.type === FrameType.Ack);
      assert.deepEqual(acks.map((f) => f.json), [{ ack: b.sequence }]);
      a.ack();
      await client.send(8, "sync2");
      await conn.waitFor(2, FrameType.Msg);
      assert.equal(conn.received.filter((f) => f.type === FrameType.Ack).length, 2);
    },
  );
});

Deno.test("frames queued in one tick leave in one write, in sequence order", async () => {
  await withClient({}, {}, async (client, server) => {
    const sends = [];
    for (let i = 0; i < 50; i++) sends.push(client.send(3, `m${i}`));
    const acks = await Promise.all(sends);
    assert.deepEqual(acks.map((a) => a.ack), Array.from({ length: 50 }, (_, i) => i + 3));
    const conn = await server.connection();
    const msgs = await conn.waitFor(50, FrameType.Msg);
    assert.deepEqual(
      msgs.map((m) => new TextDecoder().decode(m.payload)),
      Array.from({ length: 50 }, (_, i) => `m${i}`),
    );
  });
});

Deno.test("a request without an ACK times out without closing the connection", async () => {
  await withClient({ onFrame() {} }, { ackTimeoutMs: 100 }, async (client) => {
    await assert.rejects(
      client.send(1, "x"),
      (e: unknown) => e instanceof CommuCatError && e.title === "Ack Timeout" && !e.fatal,
    );
    assert.equal(client.connected, true);
  });
});

Deno.test("presence resolves once written (the server sends no ACK for it)", async () => {
  await withClient({ onFrame() {} }, {}, async (client, server) => {
    await client.presence("away");
    const conn = await server.connection();
    const [p] = await conn.waitFor(1, FrameType.Presence);
    assert.deepEqual(p.json, { state: "away" });
  });
});

Deno.test("groups: GROUP_CREATE and GROUP_INVITE payloads and ACKs", async () => {
  await withClient(
    {
      onFrame(conn, frame) {
        const json = frame.json as Record<string, unknown>;
        conn.control(FrameType.Ack, frame.channel, {
          ack: frame.sequence,
          group_id: json.group_id ?? "g-new",
          ...(json.device ? { device: json.device } : {}),
        });
      },
    },
    {},
    async (client, server) => {
      const created = await client.createGroup({
        members: ["dev-alice", "dev-bob"],
        roles: { "dev-bob": "admin" },
      });
      assert.equal(created.group_id, "g-new");
      const invited = await client.invite("g-new", "dev-carol", "member");
      assert.equal(invited.device, "dev-carol");
      const conn = await server.connection();
      const [create] = await conn.waitFor(1, FrameType.GroupCreate);
      assert.deepEqual(create.json, {
        members: ["dev-alice", "dev-bob"],
        roles: { "dev-bob": "admin" },
        relay: true,
      });
      const [invite] = await conn.waitFor(1, FrameType.GroupInvite);
      assert.deepEqual(invite.json, { group_id: "g-new", device: "dev-carol", role: "member" });
    },
  );
});

Deno.test("reconnect: a dropped connection comes back, re-joins, and the iterator goes on", async () => {
  let connections = 0;
  await withClient(
    {
      replay(conn) {
        connections++;
        conn.opaque(FrameType.Msg, 4, encoder.encode(`hello ${connections}`));
      },
    },
    { reconnect: { initialDelayMs: 20 } },
    async (client, server) => {
      await client.join(4, ["dev-alice", "dev-bob"]);
      const it = client.messages();
      assert.equal((await it.next()).value!.text(), "hello 1");
      const first = await server.connection(0);
      first.close();
      const next = await it.next();
      assert.equal(next.value!.text(), "hello 2");
      const second = await server.connection(1);
      const [rejoin] = await second.waitFor(1, FrameType.Join);
      // A new connection starts its sequences again: HELLO 1, AUTH 2, the re-JOIN 3.
      assert.equal(rejoin.sequence, 3);
      assert.deepEqual(rejoin.json, { members: ["dev-alice", "dev-bob"], relay: true });
      await it.return!();
      assert.equal(client.connected, true);
    },
  );
});
