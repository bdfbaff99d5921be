/**
 * The migration runner: applies the numbered SQL files in migrations/ in order, each in its own
 * transaction, and records each one with its SHA-256 checksum in `commucat_schema_migrations`.
 *
 * A Postgres advisory lock is held around the whole run, so when two processes start against one
 * fresh database at once, one waits and then finds nothing left to do. A database whose recorded
 * checksum differs from the file on disk is refused: an applied migration was edited, and the
 * schema can no longer be trusted to be what the code expects.
 */
import type { Db, Queryable } from "./db.ts";
import { StorageFailure } from "./errors.ts";
import { bytesToHex } from "@noble/hashes/utils.js";

/** Where the SQL files live, resolved relative to this module (works from any cwd). */
export const MIGRATIONS_DIR = new URL("../migrations/", import.meta.url);

const SCHEMA_TABLE = "commucat_schema_migrations";
/** First key of the two-key advisory lock; the second is the hash of the current schema. */
export const MIGRATION_LOCK_CLASS = 0x636f6d6d; // "comm"

export interface MigrationFile {
  name: string;
  checksum: string;
  sql: string;
}

export interface MigrationProgress {
  name: string;
  /** 1-based position among the migrations this run applies. */
  index: number;
  total: number;
}

export interface MigrateOptions {
  onProgress?: (p: MigrationProgress) => void;
  /** Directory of migration files (tests only; default MIGRATIONS_DIR). */
  dir?: URL;
}

export interface MigrationStatus {
  applied: { name: string; checksum: string; appliedAt: Date }[];
  /** Files not yet applied, in order. */
  pending: string[];
  /** Applied files whose checksum differs from the file on disk. */
  mismatched: string[];
  /** Recorded migrations with no file (the database is newer than this code). */
  unknown: string[];
}

async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return bytesToHex(new Uint8Array(digest));
}

/** Read the migration files (`NNN_name.sql`) in name order. */
export async function readMigrations(dir: URL = MIGRATIONS_DIR): Promise<MigrationFile[]> {
  const names: string[] = [];
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (entry.isFile && /^\d+_[A-Za-z0-9_-]+\.sql$/.test(entry.name)) names.push(entry.name);
    }
  } catch (err) {
    throw new StorageFailure(`cannot read the migrations directory ${dir.pathname}: ${err}`, {
      cause: err,
    });
  }
  names.sort();
  const files: MigrationFile[] = [];
  for (const name of names) {
    const sql = await Deno.readTextFile(new URL(name, dir));
    files.push({ name, checksum: await sha256Hex(sql), sql });
  }
  return files;
}

async function ensureSchemaTable(q: Queryable): Promise<void> {
  await q.exec(
    `CREATE TABLE IF NOT EXISTS ${SCHEMA_TABLE} (
       name       text PRIMARY KEY,
       checksum   text NOT NULL,
       applied_at timestamptz NOT NULL DEFAULT now()
     )`,
  );
}

async function recorded(
  q: Queryable,
): Promise<{ name: string; checksum: string; appliedAt: Date }[]> {
  const exists = await q.query<{ t: string | null }>(
    `SELECT to_regclass($1)::text AS t`,
    [SCHEMA_TABLE],
  );
  if (!exists.rows[0]?.t) return [];
  const res = await q.query<{ name: string; checksum: string; applied_at: Date }>(
    `SELECT name, checksum, applied_at FROM ${SCHEMA_TABLE} ORDER BY name`,
  );
  return res.rows.map((r) => ({ name: r.name, checksum: r.checksum, appliedAt: r.applied_at }));
}

function compare(
  files: MigrationFile[],
  applied: { name: string; checksum: string; appliedAt: Date }[],
): MigrationStatus {
  const byName = new Map(files.map((f) => [f.name, f]));
  const appliedNames = new Set(applied.map((a) => a.name));
  return {
    applied,
    pending: files.filter((f) => !appliedNames.has(f.name)).map((f) => f.name),
    mismatched: applied.filter((a) =>
      byName.has(a.name) && byName.get(a.name)!.checksum !== a.checksum
    )
      .map((a) => a.name),
    unknown: applied.filter((a) => !byName.has(a.name)).map((a) => a.name),
  };
}

/** What is applied, pending or inconsistent, without changing anything (for `diagnose`). */
export async function migrationStatus(
  db: Db,
  opts: { dir?: URL } = {},
): Promise<MigrationStatus> {
  const files = await readMigrations(opts.dir);
  return compare(files, await recorded(db));
}

/** Throw a StorageFailure naming the first file whose recorded checksum differs. */
function refuseInconsistent(status: MigrationStatus): void {
  if (status.mismatched.length > 0) {
    const name = status.mismatched[0];
    throw new StorageFailure(
      `migration ${name} was changed after it was applied: its checksum differs from the one ` +
        `recorded in ${SCHEMA_TABLE}; restore the original file (refusing to start)`,
    );
  }
}

/**
 * Apply every pending migration, in order, each in its own transaction, under an advisory lock.
 * Returns the names applied by this call (empty when the database was already up to date).
 */
export async function migrate(db: Db, opts: MigrateOptions = {}): Promise<string[]> {
  const files = await readMigrations(opts.dir);
  return await db.withConnection(async (conn) => {
    await conn.query(`SELECT pg_advisory_lock($1, hashtext(current_schema()))`, [
      MIGRATION_LOCK_CLASS,
    ]);
    try {
      await ensureSchemaTable(conn);
      const status = compare(files, await recorded(conn));
      refuseInconsistent(status);
      const todo = files.filter((f) => status.pending.includes(f.name));
      const applied: string[] = [];
      for (const [i, file] of todo.entries()) {
        opts.onProgress?.({ name: file.name, index: i + 1, total: todo.length });
        try {
          await conn.transaction(async (tx) => {
            await tx.exec(file.sql);
            await tx.query(
              `INSERT INTO ${SCHEMA_TABLE} (name, checksum) VALUES ($1, $2)`,
              [file.name, file.checksum],
            );
          });
        } catch (err) {
          const why = err instanceof Error ? err.message : String(err);
          throw new StorageFailure(`migration ${file.name} failed: ${why}`, { cause: err });
        }
        applied.push(file.name);
      }
      return applied;
    } finally {
      await conn.query(`SELECT pg_advisory_unlock($1, hashtext(current_schema()))`, [
        MIGRATION_LOCK_CLASS,
      ])
        .catch(() => {});
    }
  });
}
