/**
 * The CLI against real Postgres + Redis, when COMMUCAT_TEST_PG_DSN and COMMUCAT_TEST_REDIS_URL
 * are set (passed to the CLI as COMMUCAT_PG_DSN / COMMUCAT_REDIS_URL). Also checks that
 * approve and revoke reach running servers: the control events arrive on the bus and the
 * interrupt key is set.
 */
import assert from "node:assert/strict";
import { x25519 } from "@noble/curves/ed25519.js";
import { cli, show } from "./run.ts";
import { operatorFlow } from "./flow.ts";
import { type ControlEvent, openStorage } from "../../storage/mod.ts";

const pgDsn = Deno.env.get("COMMUCAT_TEST_PG_DSN");
const redisUrl = Deno.env.get("COMMUCAT_TEST_REDIS_URL");
const ignore = !pgDsn || !redisUrl;

Deno.test({
  name: "cli on Postgres + Redis: the operator flow, and servers hear approve and revoke",
  ignore,
  async fn(t) {
    const dir = await Deno.makeTempDir({ prefix: "commucat-cli-pg-" });
    const tag = crypto.randomUUID().slice(0, 8);
    const ledgerFile = `${dir}/ledger.ndjson`;
    const env = {
      COMMUCAT_DATA_DIR: `${dir}/data`,
      COMMUCAT_PG_DSN: pgDsn!,
      COMMUCAT_REDIS_URL: redisUrl!,
      COMMUCAT_LEDGER: "file",
      COMMUCAT_LEDGER_TARGET: ledgerFile,
    };
    const openHere = () =>
      openStorage({ postgresDsn: pgDsn!, redisUrl: redisUrl!, dataDir: dir, migrate: false });
    try {
      await operatorFlow(t, { env, cwd: dir, openStorage: openHere, ledgerFile, tag });

      await t.step(
        "approve and revoke publish control events; revoke sets the interrupt",
        async () => {
          const storage = await openHere();
          const events: ControlEvent[] = [];
          const unsubscribe = await storage.ephemeral.subscribeControl((e) => events.push(e));
          try {
            const user = await storage.users.create({ handle: `bus_${tag}` });
            const id = `bus-${tag}`;
            await storage.devices.register(
              { id, userId: user.id, publicKey: x25519.keygen().publicKey, status: "pending" },
              "test",
            );
            for (const args of [["approve-device", id], ["revoke-device", id]]) {
              const r = await cli(args, env, dir);
              assert.equal(r.code, 0, show(args, r));
            }
            const deadline = Date.now() + 5000;
            while (events.filter((e) => "deviceId" in e && e.deviceId === id).length < 2) {
              if (Date.now() > deadline) break;
              await new Promise((resolve) => setTimeout(resolve, 20));
            }
            const mine = events.filter((e) => "deviceId" in e && e.deviceId === id);
            assert.deepEqual(mine.map((e) => e.kind), ["device-approved", "device-revoked"]);
            assert.equal(await storage.ephemeral.getInterrupt(id), "device revoked by operator");
          } finally {
            await unsubscribe();
            await storage.close();
          }
        },
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
