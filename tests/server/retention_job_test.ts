/**
 * The retention job inside running servers: two nodes on one database, both with the job every
 * second; the old key events end up archived exactly once (one node at a time) and deleted.
 * PGlite + memory (one shared storage), and Postgres (two pools, the advisory lock) when
 * COMMUCAT_TEST_PG_DSN is set.
 */
import assert from "node:assert/strict";
import { scratchTests } from "../helpers/scratch_storage.ts";
import { join } from "node:path";
import { type Db, type Storage } from "../../storage/mod.ts";
import { readManifest, verifyArchive } from "../../storage/archive/key_events.ts";
import { archiveSigner, archiveTarget } from "../../server/retention.ts";
import { LogCapture, startServer, testConfig, waitFor } from "./helpers/server.ts";

async function run(storages: [Storage, Storage], db: Db, dir: string) {
  const base = testConfig();
  const config = {
    ...base,
    retention: {
      keyEventsDays: 1,
      interval: 1,
      chunkEvents: 1,
      archive: { kind: "dir" as const, path: join(dir, "archive") },
    },
  };
  const [s] = storages;
  const user = await s.users.create({ handle: "retained" });
  await s.devices.register(
    { id: "old-phone", userId: user.id, publicKey: new Uint8Array(32).fill(7), status: "active" },
    "cli:op",
  );
  await s.devices.rotateKey("old-phone", new Uint8Array(32).fill(8), "cli:op");
  await s.devices.register(
    { id: "new-phone", userId: user.id, publicKey: new Uint8Array(32).fill(9), status: "active" },
    "cli:op",
  );
  const aged = await s.keyEventArchive.due(new Date(Date.now() + 1000), 10);
  assert.equal(aged.length, 3);
  // Make old-phone's events ten days old (the storage API never back-dates; tests may).
  await db.query(
    `UPDATE device_key_event SET recorded_at = recorded_at - interval '10 days' WHERE device_id = $1`,
    ["old-phone"],
  );
  const logs = new LogCapture().start();
  const a = await startServer(config, { storage: storages[0] });
  const b = await startServer(config, { storage: storages[1] });
  try {
    await waitFor(async () => (await s.keyEvents.export("old-phone")).length === 0, 15_000);
    assert.equal((await s.keyEvents.export("new-phone")).length, 1, "recent events stay");
    const target = archiveTarget(config);
    const { publicKey } = archiveSigner(config);
    const manifest = (await readManifest(target, publicKey))!;
    assert.equal(manifest.body.chunks.reduce((n, c) => n + c.events, 0), 2, "archived once");
    const report = await verifyArchive(target, publicKey, s.keyEventArchive);
    assert.deepEqual(report.problems, []);
    await waitFor(() => logs.has("key events archived"), 5000);
  } finally {
    await a.stop();
    await b.stop();
    logs.stop();
  }
}

scratchTests(
  {
    pglite: "retention job: two nodes on PGlite archive old key events once",
    postgres: "retention job: two nodes on Postgres archive old key events once (advisory lock)",
  },
  async ({ storage, db, dir, another }) => run([storage, await another()], db, dir),
  {
    sanitizeResources: false,
    sanitizeOps: false,
  },
);
