/**
 * Fault: Postgres restarts (an immediate stop, like a crash) under two server processes, the
 * recipient on the other node from the sender, so every frame goes through the relay queue.
 * During the outage frames are refused with a non-fatal 503 (never acknowledged); after it, every
 * acknowledged frame arrives with both clients still connected. The test runs its own Postgres
 * (initdb in a temp dir) and its own Redis, on other ports; the shared ones are never touched.
 */
import assert from "node:assert/strict";
import {
  connect,
  identity,
  NumberedInbox,
  NumberedSender,
  OwnPostgres,
  postgresBin,
  ready,
  REDIS_SERVER,
  until,
  withFaultNodes,
} from "./harness.ts";

const PG_BIN = postgresBin();

Deno.test({
  name: "fault: Postgres restarts under two nodes; refused frames say so, none acknowledged lost",
  ignore: PG_BIN === null || REDIS_SERVER === null,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const pg = new OwnPostgres(PG_BIN!);
  try {
    await pg.init();
    await pg.start();
    await withFaultNodes({ prefix: "pg-nodes", dsn: pg.dsn }, async ({ nodes, keys, track }) => {
      const [one, two] = nodes;
      const run = crypto.randomUUID().slice(0, 8);
      const inbox = new NumberedInbox(run);
      const bId = identity("pg-b");
      const a = await connect(one.tcpPort, keys.publicKey, identity("pg-a"));
      track(a);
      const b = await connect(two.tcpPort, keys.publicKey, bId, { sink: inbox.sink });
      track(b);
      await a.join(43, [bId.deviceId]);
      await new Promise((r) => setTimeout(r, 300));
      const sender = new NumberedSender(a, 43, run);

      sender.send(0, 300);
      await sender.settle(20_000);
      await until(() => inbox.lost(sender.acked).length === 0, 10_000, "frames before the outage");

      await pg.stop();
      sender.send(300, 400);
      await sender.settle(20_000);
      const refusedDuring = sender.refused.size;
      await pg.start();
      await until(async () => (await ready(one)) && (await ready(two)), 30_000, "nodes ready");

      sender.send(400, 1400);
      await sender.settle(30_000);
      await until(() => inbox.lost(sender.acked).length === 0, 15_000, "acknowledged frames")
        .catch(() => {});
      const lost = inbox.lost(sender.acked);
      console.log(
        `postgres restart: sent 1400, acknowledged ${sender.acked.size}, refused ` +
          `${sender.refused.size} (${refusedDuring} during the outage), lost ${lost.length}, ` +
          `duplicates ${inbox.duplicates}`,
      );
      assert.deepEqual(lost, [], "acknowledged frames that never arrived");
      assert.ok(refusedDuring > 0, "frames sent while Postgres was down are refused, not taken");
      assert.ok(sender.acked.size + sender.refused.size === 1400, "every frame was answered");
    });
  } finally {
    await pg.remove();
  }
});
