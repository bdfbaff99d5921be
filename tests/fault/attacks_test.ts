/**
 * Attacks, scaled down, against a real server process: memory amplification before
 * authentication (huge declared frames, trickled bodies, many half-open handshakes) and held HTTP
 * connections (unfinished headers). The node refuses what is over its limits and its resident
 * memory and open files stay bounded. Each connection is loopback; figures are printed.
 */
import assert from "node:assert/strict";
import { generateKeypair } from "../../protocol/crypto.ts";
import { encodeVarint } from "../../protocol/varint.ts";
import { fdsOf, nodeEnv, type NodeProcess, rssOf, spawnNode, stopNode, until } from "./harness.ts";

const MIB = 1024 * 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<boolean> {
  try {
    let off = 0;
    while (off < bytes.length) off += await conn.write(bytes.subarray(off));
    return true;
  } catch {
    return false;
  }
}

/** Whether the server closed `conn` (reads until EOF or an error, within `ms`). */
async function closedWithin(conn: Deno.Conn, ms: number): Promise<boolean> {
  const buf = new Uint8Array(4096);
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const n = await Promise.race([
      conn.read(buf).catch(() => null),
      sleep(Math.max(1, deadline - Date.now())).then(() => -1),
    ]);
    if (n === null) return true;
    if (n === -1) return false;
  }
  return false;
}

async function withNode(extra: Record<string, string>, fn: (node: NodeProcess) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "commucat-fault-attack-" });
  // The embedded database: one process, nothing shared.
  const env = nodeEnv(generateKeypair(), { dsn: "", redis: "" }, extra);
  const node = await spawnNode(env, dir);
  try {
    await fn(node);
  } finally {
    await stopNode(node);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

Deno.test({
  name: "attack: memory amplification before authentication stays bounded",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  await withNode({ COMMUCAT_UNAUTHENTICATED_PER_ADDRESS: "32" }, async (node) => {
    const pid = node.child.pid;
    await sleep(500);
    const before = rssOf(pid);
    // 1. Twenty connections declare 16 MiB frames and trickle 4 MiB each (80 MiB in all).
    const big: Deno.Conn[] = [];
    for (let i = 0; i < 20; i++) {
      big.push(await Deno.connect({ hostname: "127.0.0.1", port: node.tcpPort }));
    }
    const chunk = new Uint8Array(64 * 1024).fill(0x61);
    let sent = 0;
    await Promise.all(big.map(async (c) => {
      if (!(await writeAll(c, encodeVarint(16 * MIB - 1)))) return;
      for (let k = 0; k < 64; k++) {
        if (!(await writeAll(c, chunk))) return;
        sent += chunk.length;
      }
    }));
    const closed = await Promise.all(big.map((c) => closedWithin(c, 5000)));
    for (const c of big) c.close();
    assert.ok(closed.every((x) => x), "every oversize declaration is refused and closed");

    // 2. Sixty-four connections each hold a HELLO just under the 256 KiB limit, unfinished;
    //    past 32 per address they are refused at once.
    const half: Deno.Conn[] = [];
    for (let i = 0; i < 64; i++) {
      const c = await Deno.connect({ hostname: "127.0.0.1", port: node.tcpPort });
      half.push(c);
      await writeAll(c, encodeVarint(256 * 1024));
      await writeAll(c, new Uint8Array(200 * 1024).fill(0x20));
    }
    await sleep(500);
    const peak = rssOf(pid);
    const refused = (await Promise.all(half.map((c) => closedWithin(c, 300)))).filter((x) => x);
    for (const c of half) c.close();
    await sleep(1000);
    const after = rssOf(pid);
    console.log(
      `amplification: ${Math.round(sent / MIB)} MiB trickled; RSS before ${
        Math.round(before / MIB)
      } MiB, peak ${Math.round(peak / MIB)} MiB, after ${Math.round(after / MIB)} MiB; ` +
        `${refused.length} of 64 half-open handshakes refused`,
    );
    assert.ok(refused.length >= 32, `${refused.length} refused past the per-address cap`);
    // Without the limits this grew by ~1.7 GiB at full scale (80 MiB in, ~21× amplification).
    assert.ok(peak - before < 160 * MIB, `peak growth ${Math.round((peak - before) / MIB)} MiB`);
  });
});

Deno.test({
  name: "attack: held HTTP connections are capped and cut after the header timeout",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  await withNode({
    COMMUCAT_HTTP_HEADER_TIMEOUT: "2",
    COMMUCAT_HTTP_CONNECTIONS_PER_ADDRESS: "200",
  }, async (node) => {
    const pid = node.child.pid;
    await sleep(300);
    const baseline = fdsOf(pid);
    const held: Deno.Conn[] = [];
    for (let i = 0; i < 1000; i++) {
      const c = await Deno.connect({ hostname: "127.0.0.1", port: node.httpPort });
      held.push(c);
      writeAll(c, new TextEncoder().encode("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "));
    }
    await sleep(300);
    const during = fdsOf(pid);
    await until(() => fdsOf(pid) <= baseline + 20, 10_000, "held connections released");
    const after = fdsOf(pid);
    for (const c of held) c.close();
    console.log(
      `header hold: 1000 connections; node fds baseline ${baseline}, while held ${during}, ` +
        `after the header timeout ${after}`,
    );
    // A held connection costs the node one socket per request begun (plus the relay's two).
    assert.ok(during <= baseline + 3 * 200 + 50, `fds while held ${during}`);
    // The listener still answers.
    const res = await fetch(`http://127.0.0.1:${node.httpPort}/healthz`);
    assert.equal(res.status, 200);
    await res.body?.cancel();
  });
});
