/**
 * Degrade, don't drop: when the ephemeral store (Redis) fails while a frame is handled, the
 * client gets a non-fatal 503 naming the part and its connection stays usable.
 */
import assert from "node:assert/strict";
import { FrameType } from "../../protocol/frame.ts";
import { LogCapture, openTestStorage, startServer, testConfig, uid } from "./helpers/server.ts";
import { clientOptions, TestClient } from "./helpers/client.ts";

Deno.test("a Redis failure during PRESENCE and JOIN answers a non-fatal 503; the connection stays", async () => {
  const logs = new LogCapture().start();
  const { storage, close } = await openTestStorage("embedded");
  const config = testConfig();
  const server = await startServer(config, { storage });
  const clients: TestClient[] = [];
  try {
    const a = await TestClient.connect(clientOptions(server, config, uid("deg-a")));
    clients.push(a);
    const b = await TestClient.connect(clientOptions(server, config, uid("deg-b")));
    clients.push(b);
    assert.equal((await a.join(5, [b.options.deviceId])).type, FrameType.Ack);
    await storage.ephemeral.close(); // every ephemeral call now fails, as with Redis down

    const seq = a.control(FrameType.Presence, 0, { state: "away" });
    const answer = await a.reply(seq);
    assert.equal(answer.type, FrameType.Error);
    const problem = answer.json as Record<string, unknown>;
    assert.equal(problem.status, 503);
    assert.equal(problem.fatal, false);
    assert.equal(problem.sequence, seq);
    assert.match(String(problem.detail), /^redis: /);

    // A JOIN needs the shared routes: refused the same way, non-fatal, nothing half-bound.
    const j = a.control(FrameType.Join, 6, { members: [b.options.deviceId] });
    const refusedJoin = (await a.reply(j)).json as Record<string, unknown>;
    assert.equal(refusedJoin.status, 503);
    assert.equal(refusedJoin.fatal, false);
    assert.match(String(refusedJoin.detail), /^redis: /);

    // The connection still relays on what this node knows: a message reaches b (its binding is
    // held here) and a gets its ACK.
    const m = a.msg(5, "still here");
    assert.equal((await a.reply(m)).type, FrameType.Ack);
    const got = await b.nextOfType(FrameType.Msg);
    assert.equal(new TextDecoder().decode(got.payload).endsWith("still here"), true);
    const text = await server.metrics.exposition();
    assert.match(text, /commucat_degraded_total\{part="redis",node="[^"]+"\} [1-9]/);
  } finally {
    for (const c of clients) await c.close();
    await server.stop();
    await close();
    logs.stop();
  }
});
