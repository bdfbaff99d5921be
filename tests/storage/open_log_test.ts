/**
 * The one logger: openStorage hands the process's logger to the ephemeral store and the
 * database, so their warnings (a malformed control message on the bus, an idle Postgres
 * connection that failed) reach the log, not console.warn or nowhere.
 */
import assert from "node:assert/strict";
import { openDb, openStorage } from "../../storage/mod.ts";
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

Deno.test({
  name: "openDb: an idle Postgres connection that fails is reported to the logger",
  ignore: dsn === "",
  async fn() {
    const name = `commucat_open_log_${crypto.randomUUID().slice(0, 8)}`;
    const url = new URL(dsn);
    url.searchParams.set("application_name", name);
    const warned: string[] = [];
    const db = await openDb({
      postgresDsn: url.toString(),
      dataDir: "",
      log: { warn: (message: string) => void warned.push(message) },
    });
    const other = await openDb({ postgresDsn: dsn, dataDir: "" });
    try {
      await db.query("SELECT 1"); // leaves one idle connection in the pool
      const ended = await other.query<{ ok: boolean }>(
        "SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = $1",
        [name],
      );
      assert.deepEqual(ended.rows.map((r) => r.ok), [true]);
      for (let i = 0; i < 200 && warned.length === 0; i++) {
        await new Promise((r) => setTimeout(r, 25));
      }
      assert.equal(warned.length, 1, "one warning for the one idle connection");
      assert.match(warned[0], /^postgres at .*: idle connection: /);
      // The pool recovers: the next query opens a new connection.
      assert.deepEqual((await db.query<{ n: number }>("SELECT 1 AS n")).rows, [{ n: 1 }]);
    } finally {
      await other.close();
      await db.close();
    }
  },
});
