/**
 * One database interface over two engines: a `pg` Pool against real Postgres, or embedded
 * PGlite (Postgres in WASM) keeping its data on disk. The repositories and the migration runner
 * speak only to `Db`, so the same SQL runs on both.
 *
 * Normalisation, so callers never see which engine answered:
 * - bytea comes back as a plain `Uint8Array` (never a Node `Buffer`);
 * - int8 (bigint, bigserial, count(*)) comes back as a decimal string;
 * - timestamptz comes back as a `Date`; json/jsonb parsed.
 * Every driver or connection error is wrapped in `DbFailure` (a `StorageFailure`) whose message
 * says what failed without ever including a password.
 */
import pg from "pg";
import { PGlite } from "@electric-sql/pglite";
import { StorageFailure } from "./errors.ts";

export interface QueryResult<T> {
  rows: T[];
  rowCount: number;
}

/** Options of one statement. */
export interface QueryOptions {
  /**
   * Run it as a named prepared statement: on real Postgres each connection parses and plans it
   * once and afterwards only binds and executes it (pg's `{ name, text, values }`). One name
   * always means one SQL text (a second text under a used name throws). PGlite ignores it. For
   * hot statements only: a prepared plan may become generic after five executions, and a
   * schema change to its tables makes Postgres re-plan it.
   */
  name?: string;
}

/** Something SQL can be sent to: the database, a transaction or a pinned connection. */
export interface Queryable {
  /** Run one parameterized statement ($1, $2, …), optionally as a named prepared statement. */
  query<T = Record<string, unknown>>(
    sql: string,
    params?: unknown[],
    options?: QueryOptions,
  ): Promise<QueryResult<T>>;
  /** Run a script of several statements without parameters (migrations only). */
  exec(sql: string): Promise<void>;
}

/** A single connection: statements run in order on it, and session state (locks) sticks. */
export interface Connection extends Queryable {
  /** Run `fn` inside BEGIN … COMMIT on this connection; ROLLBACK if it throws. */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>;
}

export interface Db extends Queryable {
  readonly kind: "postgres" | "pglite";
  /** Run `fn` inside one transaction; it commits when `fn` resolves and rolls back if it throws. */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>;
  /** Run `fn` on one dedicated connection (needed for session-level advisory locks). */
  withConnection<T>(fn: (conn: Connection) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/** A database error, with the SQLSTATE code when the server reported one. */
export class DbFailure extends StorageFailure {
  constructor(
    message: string,
    readonly code: string | undefined,
    readonly constraint: string | undefined,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The SQLSTATE of a database error (e.g. "23505" unique violation), or undefined. */
export function sqlState(err: unknown): string | undefined {
  return err instanceof DbFailure ? err.code : undefined;
}

/** A DSN with its password removed, for messages: `postgres://user@host:port/db`. */
export function redactDsn(dsn: string): string {
  try {
    const url = new URL(dsn);
    url.password = "";
    url.search = "";
    return url.toString();
  } catch {
    return "(unparseable postgres DSN)";
  }
}

/** Every statement name in use and its SQL text, so a name is never reused for another text. */
const statementTexts = new Map<string, string>();

/**
 * Check a statement name: 1..63 characters (Postgres truncates longer identifiers, which would
 * make two names collide) and bound to one SQL text for the whole process.
 */
export function checkStatementName(name: string, sql: string): string {
  if (typeof name !== "string" || name.length < 1 || name.length > 63) {
    throw new StorageFailure(
      `invalid prepared statement name ${JSON.stringify(name)}: expected 1 to 63 characters`,
    );
  }
  const known = statementTexts.get(name);
  if (known === undefined) statementTexts.set(name, sql);
  else if (known !== sql) {
    throw new StorageFailure(
      `prepared statement name ${JSON.stringify(name)} is already used for another SQL text`,
    );
  }
  return name;
}

function errorFields(err: unknown): { code?: string; constraint?: string; message: string } {
  if (err && typeof err === "object") {
    const e = err as { code?: unknown; constraint?: unknown; message?: unknown };
    return {
      code: typeof e.code === "string" ? e.code : undefined,
      constraint: typeof e.constraint === "string" ? e.constraint : undefined,
      message: typeof e.message === "string" && e.message ? e.message : String(err),
    };
  }
  return { message: String(err) };
}

/** Wrap any driver error; `context` says what we were doing. Never includes the password. */
function wrap(err: unknown, context: string, secret?: string): DbFailure {
  if (err instanceof DbFailure) return err;
  const f = errorFields(err);
  // Only Postgres' five-character codes are SQLSTATEs; a socket error's code (ECONNREFUSED,
  // ENOTFOUND, …) is already in its message, and calling it a SQLSTATE would mislead.
  const sqlstate = f.code !== undefined && /^[0-9A-Z]{5}$/.test(f.code) ? f.code : undefined;
  let message = `${context}: ${f.message}${sqlstate ? ` (SQLSTATE ${sqlstate})` : ""}`;
  if (secret) message = message.split(secret).join("***");
  return new DbFailure(message, f.code, f.constraint, { cause: err });
}

// ---------------------------------------------------------------------------------------------
// Postgres through a pg Pool

const BYTEA_OID = 17;

/** Hex digit values by character code (-1: not a hex digit). */
const HEX_VALUE = new Int8Array(128).fill(-1);
for (let i = 0; i < 10; i++) HEX_VALUE[48 + i] = i;
for (let i = 0; i < 6; i++) HEX_VALUE[97 + i] = HEX_VALUE[65 + i] = 10 + i;

/**
 * bytea text format is `\x` + hex; decode into a plain Uint8Array (not a Buffer) that owns its
 * memory. Every relay payload passes through here, so it decodes with a lookup table straight
 * into the result (twice as fast as Buffer.from(hex) plus the copy out of Buffer's pool).
 */
function parseBytea(text: string): Uint8Array {
  if (!text.startsWith("\\x")) {
    // Escape format only appears with bytea_output=escape; let pg's parser handle it.
    const buf = pg.types.getTypeParser(BYTEA_OID, "text")(text) as Uint8Array;
    return new Uint8Array(buf);
  }
  const n = (text.length - 2) >> 1;
  const out = new Uint8Array(n);
  for (let i = 0, j = 2; i < n; i++, j += 2) {
    const hi = HEX_VALUE[text.charCodeAt(j)] ?? -1, lo = HEX_VALUE[text.charCodeAt(j + 1)] ?? -1;
    if (hi < 0 || lo < 0) throw new StorageFailure("the database sent malformed bytea hex");
    out[i] = (hi << 4) | lo;
  }
  return out;
}

const pgTypes = {
  // deno-lint-ignore no-explicit-any
  getTypeParser(oid: number, format?: any) {
    if (oid === BYTEA_OID && format !== "binary") return parseBytea;
    return pg.types.getTypeParser(oid, format);
  },
};

/** A pg result as a QueryResult (bytea already decoded by `pgTypes`). */
// deno-lint-ignore no-explicit-any
function pgResult<T>(res: any): QueryResult<T> {
  return { rows: res.rows as T[], rowCount: res.rowCount ?? 0 };
}

function pgQueryable(
  client: pg.Pool | pg.PoolClient,
  where: string,
  secret: string | undefined,
): Queryable {
  return {
    async query<T>(
      sql: string,
      params: unknown[] = [],
      options?: QueryOptions,
    ): Promise<QueryResult<T>> {
      const name = options?.name === undefined ? undefined : checkStatementName(options.name, sql);
      try {
        const res = name === undefined
          ? await client.query(sql, params)
          : await client.query({ name, text: sql, values: params });
        return pgResult<T>(res);
      } catch (err) {
        throw wrap(err, `postgres query failed on ${where}`, secret);
      }
    },
    async exec(sql: string): Promise<void> {
      try {
        await client.query(sql);
      } catch (err) {
        throw wrap(err, `postgres script failed on ${where}`, secret);
      }
    },
  };
}

async function pgTransaction<T>(
  client: pg.PoolClient,
  fn: (tx: Queryable) => Promise<T>,
  where: string,
  secret: string | undefined,
): Promise<T> {
  const q = pgQueryable(client, where, secret);
  await q.exec("BEGIN");
  let result: T;
  try {
    result = await fn(q);
  } catch (err) {
    try {
      await q.exec("ROLLBACK");
    } catch {
      // The connection is broken; the caller's error is the one worth reporting.
    }
    throw err;
  }
  await q.exec("COMMIT");
  return result;
}

/**
 * Open a pg Pool and check that it can connect. `warn` hears of idle connections that fail
 * (the process's logger; the next query reports the failure to its caller either way).
 */
export async function openPostgres(
  dsn: string,
  opts: { max?: number; warn?: (message: string) => void } = {},
): Promise<Db> {
  let secret: string | undefined;
  try {
    secret = decodeURIComponent(new URL(dsn).password) || undefined;
  } catch {
    throw new StorageFailure(`invalid postgres DSN: expected postgres://user@host:port/database`);
  }
  const where = redactDsn(dsn);
  const pool = new pg.Pool({
    connectionString: dsn,
    max: opts.max ?? 10,
    types: pgTypes,
    connectionTimeoutMillis: 10_000,
    idleTimeoutMillis: 10_000,
  });
  // An idle client losing its connection must not crash the process; the next query reports it.
  pool.on(
    "error",
    (err) => opts.warn?.(wrap(err, `postgres at ${where}: idle connection`, secret).message),
  );
  const connectErr = (err: unknown) => wrap(err, `cannot connect to postgres at ${where}`, secret);

  async function connect(): Promise<pg.PoolClient> {
    try {
      return await pool.connect();
    } catch (err) {
      throw connectErr(err);
    }
  }

  const base = pgQueryable(pool, where, secret);
  const db: Db = {
    kind: "postgres",
    query: base.query,
    exec: base.exec,
    async transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
      const client = await connect();
      let broken: Error | undefined;
      try {
        return await pgTransaction(client, fn, where, secret);
      } catch (err) {
        if (err instanceof DbFailure && err.code === undefined) broken = err;
        throw err;
      } finally {
        client.release(broken);
      }
    },
    async withConnection<T>(fn: (conn: Connection) => Promise<T>): Promise<T> {
      const client = await connect();
      let broken: Error | undefined;
      try {
        const q = pgQueryable(client, where, secret);
        return await fn({
          ...q,
          transaction: (inner) => pgTransaction(client, inner, where, secret),
        });
      } catch (err) {
        // Session state (advisory locks) must never leak back into the pool after a failure.
        broken = err instanceof Error ? err : new Error(String(err));
        throw err;
      } finally {
        client.release(broken);
      }
    },
    async close() {
      await pool.end();
    },
  };
  try {
    await db.query("SELECT 1");
  } catch (err) {
    await pool.end().catch(() => {});
    throw connectErr((err as { cause?: unknown }).cause ?? err);
  }
  return db;
}

// ---------------------------------------------------------------------------------------------
// Embedded PGlite

const INT8_OID = 20;

// deno-lint-ignore no-explicit-any
function pgliteQueryable(target: any, where: string): Queryable {
  return {
    async query<T>(
      sql: string,
      params: unknown[] = [],
      options?: QueryOptions,
    ): Promise<QueryResult<T>> {
      // PGlite has no named statements; the name is still checked so misuse shows up here too.
      if (options?.name !== undefined) checkStatementName(options.name, sql);
      try {
        // deno-lint-ignore no-explicit-any
        const res: any = await target.query(sql, params);
        // pg's rowCount: rows returned by a SELECT, rows changed by DML (PGlite reports
        // affectedRows = 0 for a SELECT, so take whichever is larger).
        const rowCount = Math.max(res.rows.length, res.affectedRows ?? 0);
        return { rows: res.rows as T[], rowCount };
      } catch (err) {
        throw wrap(err, `embedded database query failed (${where})`);
      }
    },
    async exec(sql: string): Promise<void> {
      try {
        await target.exec(sql);
      } catch (err) {
        throw wrap(err, `embedded database script failed (${where})`);
      }
    },
  };
}

/**
 * Open (creating if missing) the embedded database under `<dataDir>/pg`. A lock file
 * `<dataDir>/pg.lock` keeps a second process (or a second open in this one) out, since two
 * engines writing one directory would corrupt it.
 */
export async function openPglite(dataDir: string): Promise<Db> {
  const dir = `${dataDir.replace(/\/+$/, "") || "."}/pg`;
  let lockFile: Deno.FsFile;
  try {
    await Deno.mkdir(dir, { recursive: true });
    lockFile = await Deno.open(`${dir}.lock`, { create: true, write: true });
  } catch (err) {
    throw wrap(err, `cannot create the embedded database directory ${dir}`);
  }
  let locked = false;
  try {
    locked = await lockFile.tryLock(true);
  } catch (err) {
    lockFile.close();
    throw wrap(err, `cannot lock the embedded database ${dir}`);
  }
  if (!locked) {
    lockFile.close();
    throw new StorageFailure(
      `the embedded database ${dir} is in use by another process (or already open in this one); ` +
        `stop it, or set postgres_dsn to share a real Postgres between processes`,
    );
  }
  let engine: PGlite;
  try {
    engine = await PGlite.create(dir, {
      parsers: { [INT8_OID]: (text: string) => text, [BYTEA_OID]: parseBytea },
    });
  } catch (err) {
    lockFile.close();
    throw wrap(err, `cannot open the embedded database ${dir}`);
  }
  const base = pgliteQueryable(engine, dir);
  let closed = false;
  const db: Db = {
    kind: "pglite",
    query: base.query,
    exec: base.exec,
    async transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
      try {
        return await engine.transaction((tx) => fn(pgliteQueryable(tx, dir)));
      } catch (err) {
        // Errors thrown by `fn` (typed repo errors, wrapped query errors) pass through as they
        // are; only a raw engine error (from BEGIN/COMMIT themselves) needs wrapping.
        if (err && typeof err === "object" && "severity" in err) {
          throw wrap(err, `embedded database transaction failed (${dir})`);
        }
        throw err;
      }
    },
    withConnection<T>(fn: (conn: Connection) => Promise<T>): Promise<T> {
      // PGlite is a single connection already.
      return fn({ ...base, transaction: (inner) => db.transaction(inner) });
    },
    async close() {
      if (closed) return;
      closed = true;
      try {
        await engine.close();
      } finally {
        await lockFile.unlock().catch(() => {});
        lockFile.close();
      }
    },
  };
  return db;
}
