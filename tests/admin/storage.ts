/**
 * Real storage for admin tests: a scratch schema of COMMUCAT_TEST_PG_DSN when it is set, else
 * the embedded database in a temporary directory; an in-memory ephemeral store.
 */
import { openStorage } from "../../storage/mod.ts";
import type { Storage } from "../../storage/types.ts";
import { scratchSchema } from "../storage/pg_scratch.ts";

export async function realStorage(): Promise<{ storage: Storage; close(): Promise<void> }> {
  const base = Deno.env.get("COMMUCAT_TEST_PG_DSN");
  const dataDir = await Deno.makeTempDir({ prefix: "commucat-admin-" });
  const scratch = base ? await scratchSchema(base) : null;
  const storage = await openStorage({
    postgresDsn: scratch?.dsn ?? null,
    redisUrl: null,
    dataDir,
    poolSize: 3,
  });
  return {
    storage,
    async close() {
      await storage.close();
      await scratch?.drop();
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    },
  };
}
