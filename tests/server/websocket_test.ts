/**
 * The WebSocket upgrade of /connect against a real server: the origin rule (same origin, a
 * listed origin, a foreign one refused before any upgrade), and the bad-input list — a text
 * message, an oversized message, a socket that never handshakes, a close in the middle of a
 * frame, more sockets from one address than allowed — each refused with the titles the TCP
 * listener uses, and no connection left behind.
 */
import assert from "node:assert/strict";
import { decodeFrame, encodeControl, type Frame, FrameType } from "../../protocol/frame.ts";
import { WS_MAX_MESSAGE_BYTES } from "../../server/ws_transport.ts";
import { originAllowed, WS_CONNECTIONS_PER_ADDRESS } from "../../server/websocket.ts";
import {
  LogCapture,
  openTestStorage,
  type ServerHandle,
  startServer,
  testConfig,
  waitFor,
} from "./helpers/server.ts";

/** Sends a raw HTTP/1.1 upgrade request; returns the status code and the body (if any). */
async function rawUpgrade(
  port: number,
  headers: Record<string, string>,
): Promise<{ status: number; text: string }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const lines = [
      "GET /connect HTTP/1.1",
      `Host: 127.0.0.1:${port}`,
      "Upgrade: websocket",
      "Connection: Upgrade",
      "Sec-WebSocket-Version: 13",
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
      ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
      "",
      "",
    ];
    await conn.write(new TextEncoder().encode(lines.join("\r\n")));
    const buf = new Uint8Array(8192);
    let text = "";
    const deadline = Date.now() + 5000;
    while (!/\r\n\r\n/.test(text) || (/^HTTP\/1\.1 4/.test(text) && !text.includes("}"))) {
      if (Date.now() > deadline) break;
      const n = await conn.read(buf);
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
    return { status, text };
  } finally {
    conn.close();
  }
}

/** A WebSocket that collects the frames it receives and how it closed. */
class Probe {
  readonly socket: WebSocket;
  readonly frames: Frame[] = [];
  closeCode: number | null = null;
  #bytes = new Uint8Array(0);
  readonly opened: Promise<void>;
  readonly closed: Promise<void>;

  constructor(url: string) {
    this.socket = new WebSocket(url);
    this.socket.binaryType = "arraybuffer";
    this.opened = new Promise((resolve, reject) => {
      this.socket.onopen = () => resolve();
      this.socket.onerror = () => reject(new Error("websocket error"));
    });
    this.closed = new Promise((resolve) => {
      this.socket.onclose = (e) => {
        this.closeCode = e.code;
        resolve();
      };
    });
    this.socket.onmessage = (e) => {
      const data = new Uint8Array(e.data as ArrayBuffer);
      const joined = new Uint8Array(this.#bytes.length + data.length);
      joined.set(this.#bytes);
      joined.set(data, this.#bytes.length);
      this.#bytes = joined;
      for (;;) {
        const decoded = decodeFrame(this.#bytes);
        if (decoded === null) break;
        this.frames.push({ ...decoded.frame, payload: decoded.frame.payload.slice() });
        this.#bytes = this.#bytes.subarray(decoded.length);
      }
    };
  }

  /** The problem of the ERROR frame received, once the socket closed. */
  async error(): Promise<Record<string, unknown>> {
    await this.closed;
    const error = this.frames.find((f) => f.type === FrameType.Error);
    assert.ok(error, `an ERROR frame before the close (got ${this.frames.length} frames)`);
    return error.json as Record<string, unknown>;
  }
}

async function withServer(
  overrides: Parameters<typeof testConfig>[0],
  body: (server: ServerHandle, wsUrl: string) => Promise<void>,
): Promise<void> {
  const logs = new LogCapture().start();
  const { storage, close } = await openTestStorage("embedded");
  const server = await startServer(testConfig(overrides), { storage });
  try {
    await body(server, `ws://127.0.0.1:${server.ports.http}/connect`);
  } finally {
    await server.stop();
    await close();
    logs.stop();
  }
}

Deno.test("originAllowed: absent, same origin, listed, wildcard, foreign", () => {
  const request = new Request("http://127.0.0.1:8443/connect", {
    headers: { host: "127.0.0.1:8443" },
  });
  assert.equal(originAllowed(null, request, false, []), true);
  assert.equal(originAllowed("http://127.0.0.1:8443", request, false, []), true);
  assert.equal(originAllowed("https://127.0.0.1:8443", request, false, []), false);
  assert.equal(originAllowed("http://127.0.0.1:8444", request, false, []), false);
  assert.equal(originAllowed("http://evil.example", request, false, []), false);
  assert.equal(originAllowed("null", request, false, []), false);
  assert.equal(
    originAllowed("https://app.example", request, false, ["https://app.example"]),
    true,
  );
  assert.equal(originAllowed("http://evil.example", request, false, ["*"]), true);
});

Deno.test({
  name: "WebSocket /connect: origins and bad input",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    await withServer({
      server: { handshakeTimeout: 1, allowedOrigins: ["https://app.example"] },
    }, async (server, url) => {
      const port = server.ports.http;

      await t.step("a foreign origin is refused before the upgrade", async () => {
        const foreign = await rawUpgrade(port, { Origin: "http://evil.example" });
        assert.equal(foreign.status, 403);
        assert.match(foreign.text, /"title":"Origin Not Allowed"/);
        const same = await rawUpgrade(port, { Origin: `http://127.0.0.1:${port}` });
        assert.equal(same.status, 101);
        const listed = await rawUpgrade(port, { Origin: "https://app.example" });
        assert.equal(listed.status, 101);
        const none = await rawUpgrade(port, {});
        assert.equal(none.status, 101);
        await waitFor(() => server.node.connectionCount === 0);
      });

      await t.step("a text message is Invalid Frame Type, then the socket closes", async () => {
        const probe = new Probe(url);
        await probe.opened;
        probe.socket.send("hello");
        const problem = await probe.error();
        assert.equal(problem.title, "Invalid Frame Type");
        assert.equal(problem.status, 400);
        assert.equal(problem.fatal, true);
        assert.equal(probe.closeCode, 1003);
      });

      await t.step("an oversized message is Frame Too Large (close 1009)", async () => {
        const probe = new Probe(url);
        await probe.opened;
        probe.socket.send(new Uint8Array(WS_MAX_MESSAGE_BYTES + 1));
        const problem = await probe.error();
        assert.equal(problem.title, "Frame Too Large");
        assert.equal(problem.status, 413);
        assert.equal(probe.closeCode, 1009);
      });

      await t.step("a frame that is not a handshake is refused like on TCP", async () => {
        const probe = new Probe(url);
        await probe.opened;
        probe.socket.send(encodeControl(FrameType.Join, 1, 1, { members: ["x"] }));
        const problem = await probe.error();
        assert.equal(problem.title, "Handshake Required");
      });

      await t.step("a socket that never handshakes gets Handshake Timeout", async () => {
        const probe = new Probe(url);
        await probe.opened;
        const problem = await probe.error();
        assert.equal(problem.title, "Handshake Timeout");
        assert.equal(problem.status, 408);
      });

      await t.step("a close in the middle of a frame leaves nothing behind", async () => {
        const probe = new Probe(url);
        await probe.opened;
        const hello = encodeControl(FrameType.Hello, 0, 1, { pattern: "XK" });
        probe.socket.send(hello.subarray(0, Math.floor(hello.length / 2)));
        await new Promise((r) => setTimeout(r, 50));
        probe.socket.close();
        await probe.closed;
        await waitFor(() => server.node.connectionCount === 0);
        assert.equal(probe.frames.length, 0);
      });

      await t.step(
        `more than ${WS_CONNECTIONS_PER_ADDRESS} sockets from one address: 429`,
        async () => {
          const probes: Probe[] = [];
          try {
            for (let i = 0; i < WS_CONNECTIONS_PER_ADDRESS; i++) probes.push(new Probe(url));
            await Promise.all(probes.map((p) => p.opened));
            const over = await rawUpgrade(port, {});
            assert.equal(over.status, 429);
            assert.match(over.text, /"title":"Too Many Connections"/);
          } finally {
            for (const p of probes) p.socket.close();
            await Promise.all(probes.map((p) => p.closed));
          }
          await waitFor(() => server.node.connectionCount === 0);
          assert.equal((await rawUpgrade(port, {})).status, 101);
        },
      );

      await t.step("the upgrades are counted by result", async () => {
        const text = await server.metrics.exposition();
        assert.match(text, /commucat_websocket_upgrades_total\{result="origin",[^}]*\} 1/);
        assert.match(text, /commucat_websocket_upgrades_total\{result="per_address",[^}]*\} 1/);
      });
    });
  },
});
