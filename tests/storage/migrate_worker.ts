/**
 * Test helper process: migrate the database named by the DSN argument and print the names this
 * process applied as JSON. Used by migrate_test.ts to race two real processes.
 */
import { openPostgres } from "../../storage/db.ts";
import { migrate } from "../../storage/migrate.ts";

const db = await openPostgres(Deno.args[0], { max: 1 });
try {
  console.log(JSON.stringify(await migrate(db)));
} finally {
  await db.close();
}
