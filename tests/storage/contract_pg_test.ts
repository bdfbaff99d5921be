/**
 * The storage contract against real Postgres (COMMUCAT_TEST_PG_DSN) and Redis
 * (COMMUCAT_TEST_REDIS_URL, else in-memory). Each run works in a fresh schema it drops after.
 * Without COMMUCAT_TEST_PG_DSN the test is registered as ignored, so the summary shows it.
 */
import { openPostgres } from "../../storage/db.ts";
import { openEphemeral } from "../../storage/ephemeral/mod.ts";
import { buildStorage, migrate } from "../../storage/mod.ts";
import { registerContract, STATIC_PEER } from "./contract.ts";
import { scratchSchema } from "./pg_scratch.ts";

const dsn = Deno.env.get("COMMUCAT_TEST_PG_DSN") ?? "";
const redisUrl = Deno.env.get("COMMUCAT_TEST_REDIS_URL") || null;

registerContract({
  name: redisUrl ? "postgres + redis" : "postgres + memory",
  ignore: dsn === "",
  async open() {
    const scratch = await scratchSchema(dsn);
    const db = await openPostgres(scratch.dsn);
    await migrate(db);
    const storage = buildStorage(db, await openEphemeral(redisUrl), [STATIC_PEER]);
    return {
      storage,
      db,
      async close() {
        await storage.close();
        await scratch.drop();
      },
    };
  },
});
