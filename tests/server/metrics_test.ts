/**
 * The metric path production uses: real frames through a running server (its connections
 * count them by type code as they are read and written), read back from GET /metrics the way
 * a Prometheus scraper reads them.
 *
 * Runs on the embedded defaults always, and on Postgres + Redis when the environment names them.
 */
import assert from "node:assert/strict";
import { FrameType } from "../../protocol/frame.ts";
import { clientOptions, TestClient } from "./helpers/client.ts";
import { storageKinds, uid, withSharedNodes } from "./helpers/server.ts";

const TOKEN = "metrics-test-token";

/** Scrapes /metrics with the admin token. */
async function scrape(port: number): Promise<string> {
  const http = Deno.createHttpClient({});
  try {
    const res = await fetch(`http://127.0.0.1:${port}/metrics`, {
      headers: { authorization: `Bearer ${TOKEN}` },
      client: http,
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /^text\/plain/);
    return await res.text();
  } finally {
    http.close();
  }
}

/** The value of one sample (0 when the series is not there yet). */
function sample(text: string, name: string, labels: Record<string, string>): number {
  const line = text.split("\n").find((l) => {
    if (!l.startsWith(`${name}{`)) return false;
    const inside = l.slice(name.length + 1, l.lastIndexOf("}"));
    return Object.entries(labels).every(([k, v]) => inside.split(",").includes(`${k}="${v}"`));
  });
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(" ") + 1));
}

for (const kind of storageKinds()) {
  const label = kind === "real" ? "Postgres + Redis" : "PGlite + memory";

  Deno.test(`/metrics counts the frames a server really reads and writes (${label})`, () =>
    withSharedNodes(kind, 1, async ({ nodes: [{ server, config }], track }) => {
      const port = server.ports.http;
      const before = await scrape(port);
      const msgIn = sample(before, "commucat_frames_in_total", { type: "MSG" });
      const msgOut = sample(before, "commucat_frames_out_total", { type: "MSG" });
      const joinIn = sample(before, "commucat_frames_in_total", { type: "JOIN" });
      const ok = { pattern: "XK", result: "ok" };
      const handshakesOk = sample(before, "commucat_handshakes_total", ok);

      const aliceId = uid("mx-alice");
      const bobId = uid("mx-bob");
      const alice = track(await TestClient.connect(clientOptions(server, config, aliceId)));
      const bob = track(await TestClient.connect(clientOptions(server, config, bobId)));
      assert.equal((await alice.join(7, [bobId])).type, FrameType.Ack);
      const sent = 5;
      for (let i = 0; i < sent; i++) {
        assert.equal((await alice.reply(alice.msg(7, `m${i}`))).type, FrameType.Ack);
      }
      for (let i = 0; i < sent; i++) await bob.nextOfType(FrameType.Msg);

      // Every frame above was answered or received, so each has been counted.
      const after = await scrape(port);
      assert.equal(sample(after, "commucat_frames_in_total", { type: "MSG" }), msgIn + sent);
      assert.equal(sample(after, "commucat_frames_out_total", { type: "MSG" }), msgOut + sent);
      assert.equal(sample(after, "commucat_frames_in_total", { type: "JOIN" }), joinIn + 1);
      assert.ok(
        sample(after, "commucat_frames_out_total", { type: "ACK" }) >= sent + 1,
        "the server acknowledged the JOIN and every MSG",
      );
      assert.equal(sample(after, "commucat_handshakes_total", ok), handshakesOk + 2);
      assert.equal(sample(after, "commucat_connections", {}), 2);
      // The series carry the node's id, so nodes of one deployment can be told apart.
      assert.match(after, new RegExp(`commucat_frames_in_total\\{[^}]*node="${server.nodeId}"`));
      // A second scrape adds nothing that did not happen.
      const again = await scrape(port);
      assert.equal(sample(again, "commucat_frames_in_total", { type: "MSG" }), msgIn + sent);
    }, { admin: { token: TOKEN } }));
}
