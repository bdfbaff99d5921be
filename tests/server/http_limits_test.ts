/**
 * The HTTP listener's limits (server/http_front.ts), scaled down: unfinished headers are cut
 * after the header timeout, connections per address are capped, a `/connect` stream is closed
 * after its fatal ERROR even while the client keeps sending, a stalled `/federation/events` body
 * gets a 408 and its connection closed.
 */
import assert from "node:assert/strict";
import { LogCapture, openTestStorage, startServer, testConfig } from "./helpers/server.ts";
import { withTimeout } from "./helpers/client.ts";
import type { Config } from "../../server/config/mod.ts";
import { encodeVarint } from "../../protocol/varint.ts";

const enc = new TextEncoder();

/** Reads until the peer closes; resolves with everything read (as text). */
async function untilClosed(conn: Deno.Conn, ms: number): Promise<string> {
  const buf = new Uint8Array(65536);
  let text = "";
  const dec = new TextDecoder();
  await withTimeout(
    (async () => {
      for (;;) {
        const n = await conn.read(buf).catch(() => null);
        if (n === null) return;
        text += dec.decode(buf.subarray(0, n));
      }
    })(),
    ms,
    "connection close",
  );
  return text;
}

async function withServer(
  limits: Partial<Config["limits"]>,
  fn: (port: number, server: Awaited<ReturnType<typeof startServer>>) => Promise<void>,
) {
  const logs = new LogCapture().start();
  const { storage, close } = await openTestStorage("embedded");
  const server = await startServer(testConfig({ limits }), { storage });
  try {
    await fn(server.ports.http, server);
  } finally {
    await server.stop();
    await close();
    logs.stop();
  }
}

Deno.test("http: unfinished headers are cut after the header timeout; others are not held", async () => {
  await withServer({ httpHeaderTimeout: 1 }, async (port, server) => {
    const held: Deno.Conn[] = [];
    for (let i = 0; i < 20; i++) {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      await c.write(enc.encode("GET /healthz HTTP/1.1\r\nHost: x\r\n")); // never finished
      held.push(c);
    }
    // Every one is closed by the server within the timeout (plus the sweep).
    await Promise.all(held.map((c) => untilClosed(c, 5000)));
    for (const c of held) c.close();
    // A complete request is answered, on a connection kept alive for the next.
    const ok = await fetch(`http://127.0.0.1:${port}/healthz`);
    assert.equal(ok.status, 200);
    assert.equal((await ok.json()).status, "ok");
    const text = await server.metrics.exposition();
    assert.match(
      text,
      /commucat_connections_refused_total\{reason="http_header_timeout",[^}]*\} 20/,
    );
  });
});

Deno.test("http: connections per address are capped; a freed place is usable again", async () => {
  await withServer({ httpConnectionsPerAddress: 3 }, async (port) => {
    const held: Deno.Conn[] = [];
    for (let i = 0; i < 3; i++) held.push(await Deno.connect({ hostname: "127.0.0.1", port }));
    await new Promise((r) => setTimeout(r, 100)); // accepted by the listener
    const fourth = await Deno.connect({ hostname: "127.0.0.1", port });
    const answer = await untilClosed(fourth, 5000);
    fourth.close();
    assert.match(answer, /^HTTP\/1\.1 429 /);
    assert.match(answer, /too many connections from 127\.0\.0\.1/);
    held.shift()!.close();
    await new Promise((r) => setTimeout(r, 100));
    const res = await fetch(`http://127.0.0.1:${port}/healthz`);
    assert.equal(res.status, 200);
    await res.body?.cancel();
    for (const c of held) c.close();
  });
});

Deno.test("http: a /connect stream is closed after its fatal ERROR while the client trickles", async () => {
  await withServer({}, async (port) => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(enc.encode(
      "POST /connect HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    ));
    // A frame_len above the handshake limit: a fatal Frame Too Large.
    const bad = encodeVarint(1024 * 1024);
    await conn.write(enc.encode(`${bad.length.toString(16)}\r\n`));
    await conn.write(bad);
    await conn.write(enc.encode("\r\n"));
    let trickling = true;
    const trickle = (async () => {
      while (trickling) {
        await new Promise((r) => setTimeout(r, 50));
        await conn.write(enc.encode("1\r\nx\r\n")).catch(() => (trickling = false));
      }
    })();
    const answer = await untilClosed(conn, 8000);
    trickling = false;
    await trickle;
    conn.close();
    assert.match(answer, /^HTTP\/1\.1 200 /);
    assert.match(answer, /Frame Too Large/);
  });
});

Deno.test("http: a stalled /federation/events body gets a 408 and its connection closed", async () => {
  await withServer({ httpBodyTimeout: 1 }, async (port) => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(enc.encode(
      "POST /federation/events HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n" +
        'content-length: 1000\r\n\r\n{"partial":',
    ));
    const answer = await untilClosed(conn, 8000);
    conn.close();
    assert.match(answer, /^HTTP\/1\.1 408 /);
    assert.match(answer, /http_body_timeout/);
  });
});
