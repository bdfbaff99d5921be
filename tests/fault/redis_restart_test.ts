/**
 * Fault: Redis restarts empty under two server processes, the recipient on the other node from
 * the sender. Numbered frames before, during and after the outage: every frame the server
 * acknowledged arrives (duplicates allowed and counted), and after Redis is back the frames
 * arrive within a bound with the recipient still connected (reconciliation, server/reconcile.ts).
 * Needs COMMUCAT_TEST_PG_DSN (the nodes share that Postgres) and redis-server (a Redis of the
 * test's own on another port; the shared one is never touched).
 */
import assert from "node:assert/strict";
import {
  connect,
  identity,
  NumberedInbox,
  NumberedSender,
  ready,
  REDIS_SERVER,
  until,
  withFaultNodes,
} from "./harness.ts";

const PG = Deno.env.get("COMMUCAT_TEST_PG_DSN") ?? null;

Deno.test({
  name: "fault: Redis restarts under two nodes; no acknowledged frame lost, none stuck",
  ignore: PG === null || REDIS_SERVER === null,
  sanitizeOps: false,
  sanitizeResources: false,
}, () =>
  withFaultNodes({ prefix: "redis", dsn: PG! }, async ({ nodes, keys, redis, track }) => {
    const [one, two] = nodes;
    const run = crypto.randomUUID().slice(0, 8);
    const inbox = new NumberedInbox(run);
    const aId = identity("redis-a");
    const bId = identity("redis-b");
    const a = await connect(one.tcpPort, keys.publicKey, aId);
    track(a);
    const b = await connect(two.tcpPort, keys.publicKey, bId, { sink: inbox.sink });
    track(b);
    await a.join(41, [bId.deviceId]);
    await new Promise((r) => setTimeout(r, 300)); // the route change crosses the bus
    const sender = new NumberedSender(a, 41, run);

    sender.send(0, 300);
    await sender.settle(20_000);
    await until(() => inbox.lost(sender.acked).length === 0, 10_000, "frames before the outage");

    await redis.kill();
    sender.send(300, 400); // during the outage: refused (503) or acknowledged, never lost
    await sender.settle(20_000);
    await redis.start(); // empty: routes, presence and streams are gone
    await until(async () => (await ready(one)) && (await ready(two)), 20_000, "nodes ready");

    sender.send(400, 1400);
    await sender.settle(30_000);
    // Within a few seconds of Redis coming back, with the recipient still connected.
    await until(
      () => inbox.lost(sender.acked).length === 0,
      15_000,
      `acknowledged frames arriving (missing ${inbox.lost(sender.acked).length})`,
    ).catch(() => {});
    const lost = inbox.lost(sender.acked);
    console.log(
      `redis restart: sent 1400, acknowledged ${sender.acked.size}, refused ` +
        `${sender.refused.size}, lost ${lost.length}, duplicates ${inbox.duplicates}`,
    );
    if (lost.length > 0) {
      console.log("lost:", lost[0], "…", lost[lost.length - 1]);
      for (const n of nodes) console.log(n.output.slice(-30).join("\n"));
    }
    assert.deepEqual(lost, [], "acknowledged frames that never arrived");
    assert.ok(sender.acked.size >= 1300, `most frames acknowledged (${sender.acked.size})`);
  }));
