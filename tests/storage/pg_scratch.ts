/** A fresh Postgres schema for one test run, selected through the DSN's search_path. */
import { openPostgres } from "../../storage/db.ts";

export interface Scratch {
  /** The DSN with `options=-c search_path=<schema>`. */
  dsn: string;
  schema: string;
  drop(): Promise<void>;
}

/** Create an empty schema `commucat_test_<random>`; `drop()` removes it and everything in it. */
export async function scratchSchema(baseDsn: string): Promise<Scratch> {
  const schema = `commucat_test_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
  const admin = await openPostgres(baseDsn, { max: 1 });
  try {
    await admin.exec(`CREATE SCHEMA ${schema}`);
  } finally {
    await admin.close();
  }
  const url = new URL(baseDsn);
  url.searchParams.set("options", `-c search_path=${schema}`);
  return {
    dsn: url.toString(),
    schema,
    async drop() {
      const db = await openPostgres(baseDsn, { max: 1 });
      try {
        await db.exec(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      } finally {
        await db.close();
      }
    },
  };
}
