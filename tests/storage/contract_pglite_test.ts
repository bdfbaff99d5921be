/** The storage contract against embedded PGlite (in a temp dir) and the in-memory store. */
import assert from "node:assert/strict";
import { openPglite } from "../../storage/db.ts";
import { openEphemeral } from "../../storage/ephemeral/mod.ts";
import { buildStorage, migrate, StorageFailure } from "../../storage/mod.ts";
import { registerContract, STATIC_PEER } from "./contract.ts";

let dataDir = "";

registerContract({
  name: "pglite + memory",
  ignore: false,
  async open() {
    dataDir = await Deno.makeTempDir({ prefix: "commucat-pglite-" });
    const db = await openPglite(dataDir);
    await migrate(db);
    const storage = buildStorage(db, await openEphemeral(null), [STATIC_PEER]);
    return {
      storage,
      db,
      async close() {
        await storage.close();
        await Deno.remove(dataDir, { recursive: true });
      },
    };
  },
  async extra(t) {
    await t.step("a data dir already open is refused with a clear message", async () => {
      await assert.rejects(openPglite(dataDir), (err) => {
        assert.ok(err instanceof StorageFailure);
        assert.match(err.message, /in use by another process/);
        assert.ok(err.message.includes(`${dataDir}/pg`));
        return true;
      });
    });
  },
});
