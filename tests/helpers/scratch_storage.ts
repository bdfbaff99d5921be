/**
 * A fresh, migrated database for one test, on each backend: PGlite in a temp dir (always), and
 * a scratch schema of COMMUCAT_TEST_PG_DSN (when it is set), each with storage on it over the
 * in-memory store; everything is closed and removed afterwards.
 */
import { type Db, openPglite, openPostgres } from "../../storage/db.ts";
import { openEphemeral } from "../../storage/ephemeral/mod.ts";
import { buildStorage, migrate, type Storage } from "../../storage/mod.ts";
import { scratchSchema } from "../storage/pg_scratch.ts";

/** COMMUCAT_TEST_PG_DSN, or "" when the real Postgres is not there. */
export const TEST_PG_DSN = Deno.env.get("COMMUCAT_TEST_PG_DSN") ?? "";

export type ScratchKind = "pglite" | "postgres";

/** What {@link withScratch} hands its body. */
export interface Scratch {
  kind: ScratchKind;
  /** The migrated database. */
  db: Db;
  /** Storage on `db`, with an in-memory ephemeral store. */
  storage: Storage;
  /**
   * Storage of a second node on the same database: its own connection on Postgres; on PGlite
   * (one process's database) `storage` itself.
   */
  another(): Promise<Storage>;
  /** A temp folder of the test's own (PGlite's data is in it too), removed afterwards. */
  dir: string;
}

/** An open scratch database; `close()` closes every storage on it and removes it. */
export interface OpenScratch extends Scratch {
  /** The scratch schema's DSN (Postgres), or null (PGlite). */
  dsn: string | null;
  close(): Promise<void>;
}

/** A fresh scratch database of `kind`, migrated, with storage on it. */
export async function openScratch(kind: ScratchKind): Promise<OpenScratch> {
  const dir = await Deno.makeTempDir({ prefix: `commucat-${kind}-scratch-` });
  const schema = kind === "postgres" ? await scratchSchema(TEST_PG_DSN) : null;
  const others: Storage[] = [];
  let storage: Storage | null = null;
  const close = async () => {
    for (const s of others) await s.close();
    await storage?.close();
    await schema?.drop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    const db = schema ? await openPostgres(schema.dsn) : await openPglite(`${dir}/db`);
    const first = storage = buildStorage(db, await openEphemeral(null));
    await migrate(db);
    return {
      kind,
      db,
      storage: first,
      dir,
      dsn: schema?.dsn ?? null,
      async another() {
        if (!schema) return first;
        const other = buildStorage(await openPostgres(schema.dsn), await openEphemeral(null));
        others.push(other);
        return other;
      },
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

/** Runs `body` on a fresh scratch database of `kind`, closed and removed afterwards. */
export async function withScratch(
  kind: ScratchKind,
  body: (scratch: Scratch) => Promise<void>,
): Promise<void> {
  const scratch = await openScratch(kind);
  try {
    await body(scratch);
  } finally {
    await scratch.close();
  }
}

/**
 * Registers one test per backend running `body` on a fresh scratch database: `names.pglite`
 * always, `names.postgres` ignored unless COMMUCAT_TEST_PG_DSN is set.
 */
export function scratchTests(
  names: Record<ScratchKind, string>,
  body: (scratch: Scratch, t: Deno.TestContext) => Promise<void>,
  options: Omit<Deno.TestDefinition, "name" | "fn" | "ignore"> = {},
): void {
  for (const kind of ["pglite", "postgres"] as const) {
    Deno.test({
      ...options,
      name: names[kind],
      ignore: kind === "postgres" && TEST_PG_DSN === "",
      fn: (t) => withScratch(kind, (scratch) => body(scratch, t)),
    });
  }
}
