/**
 * The one logger: openStorage hands the process's logger to the ephemeral store, so its
 * warnings (here a malformed control message on the bus) reach the log, not console.warn.
 */
import assert from "node:assert/strict";
import { openStorage } from "../../storage/mod.ts";
import { MemoryHub } from "../../storage/ephemeral/memory.ts";

const dsn = Deno.env.get("COMMUCAT_TEST_PG_DSN") ?? "";

Deno.test({
  name: "openStorage: ephemeral warnings go to the logger it was given",
  ignore: dsn === "",
  async fn() {
    const warned: string[] = [];
    const log = { warn: (message: string) => void warned.push(message) };
    const storage = await openStorage({
      postgresDsn: dsn,
      redisUrl: null,
      dataDir: "",
      migrate: false,
      log,
      ephemeral: { hub: new MemoryHub() },
    });
    const printed: unknown[] = [];
    const original = console.warn;
    console.warn = (...args: unknown[]) => void printed.push(args);
    try {
      const events: unknown[] = [];
      const stop = await storage.ephemeral.subscribeControl((e) => events.push(e));
      await storage.ephemeral.publish("commucat:control", new TextEncoder().encode("not json"));
      await new Promise((r) => setTimeout(r, 10));
      await stop();
      assert.deepEqual(events, []);
      assert.equal(warned.length, 1);
      assert.match(warned[0], /ignored a control message that is not JSON/);
      assert.deepEqual(printed, []);
    } finally {
      console.warn = original;
      await storage.close();
    }
  },
});
