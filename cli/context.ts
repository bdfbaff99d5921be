/**
 * What a CLI command works with: the configuration, the database or the whole storage, the
 * ledger, the operator identity and the two output streams. Everything is opened lazily (so
 * `gen-keys` and `--help` never touch a database) and closed once by the entry point.
 */
import { userInfo } from "node:os";
import { ProblemError } from "../protocol/errors.ts";
import { type Config, loadConfig, unknownVariableWarnings } from "../server/config/mod.ts";
import { log, setLogSink } from "../server/log.ts";
import { createLedger, type Ledger } from "../storage/ledger.ts";
import type { AdminOps } from "../admin/ops.ts";
import { LocalAdmin } from "../admin/local.ts";
import { RemoteAdmin } from "../admin/remote.ts";
import { isLoopbackHost as isLoopback } from "../protocol/net.ts";
import { openEphemeral } from "../storage/ephemeral/mod.ts";
import {
  buildStorage,
  type Db,
  migrationStatus,
  openDb,
  type Storage,
  StorageFailure,
} from "../storage/mod.ts";

/** A failure the CLI explains itself (exit code 1); no troubleshooting hint is added. */
export class CliFailure extends ProblemError {
  constructor(message: string) {
    super("Command Failed", 400, message, { fatal: true });
    this.name = "CliFailure";
  }
}

/** The operator identity written to the audit log: `cli:<OS user>`. */
export function operatorActor(env: Record<string, string | undefined>): string {
  let name = env.USER || env.LOGNAME || env.USERNAME;
  if (!name) {
    try {
      name = userInfo().username;
    } catch {
      name = "unknown";
    }
  }
  return `cli:${name}`;
}

/** Where the embedded database of a data directory lives, and its lock file. */
export function embeddedPaths(dataDir: string): { dir: string; lock: string } {
  const dir = `${dataDir.replace(/\/+$/, "") || "."}/pg`;
  return { dir, lock: `${dir}.lock` };
}

/** The message shown when a running server holds the embedded database. */
export function embeddedInUseMessage(dir: string): string {
  return `the embedded database in ${dir} is in use by a running server; ` +
    "stop it or configure [storage] postgres_dsn";
}

/**
 * Refuses early, with a clear message, when another process holds the embedded database:
 * PGlite is one process's database, and the server keeps `<data_dir>/pg.lock` locked while it
 * runs. Only probes an existing lock file; creating the database is left to the storage module.
 */
export async function assertEmbeddedFree(dataDir: string): Promise<void> {
  const { dir, lock } = embeddedPaths(dataDir);
  let file: Deno.FsFile;
  try {
    file = await Deno.open(lock, { write: true });
  } catch {
    return; // no lock file yet: nobody has opened this database
  }
  try {
    const free = await file.tryLock(true);
    if (!free) throw new CliFailure(embeddedInUseMessage(dir));
    await file.unlock();
  } finally {
    file.close();
  }
}

/** True when another process (a running server) holds the embedded database. */
export async function embeddedHeld(dataDir: string): Promise<boolean> {
  try {
    await assertEmbeddedFree(dataDir);
    return false;
  } catch (err) {
    if (err instanceof CliFailure) return true;
    throw err;
  }
}

export class CliContext {
  #config: Config | null = null;
  #admin: AdminOps | null = null;
  /** `--server URL`: talk to that server's admin API instead of opening storage. */
  server: string | null = null;
  #db: Db | null = null;
  #storage: Storage | null = null;
  #ledger: Ledger | null = null;
  readonly actor: string;

  constructor(readonly env: Record<string, string | undefined>) {
    this.actor = operatorActor(env);
    // Log lines (e.g. a debug ledger) go to stderr so stdout stays the command's output.
    setLogSink((line) => console.error(line));
  }

  /** Prints command output (stdout). */
  out(text: string): void {
    console.log(text);
  }

  /** Prints a note, warning or progress line (stderr). */
  note(text: string): void {
    console.error(text);
  }

  #warned = new Set<string>();
  /** Prints a warning from a background client once (a reconnecting client repeats itself). */
  readonly warnOnce = (message: string): void => {
    if (this.#warned.has(message)) return;
    this.#warned.add(message);
    this.note(`warning: ${message}`);
  };

  /** The loaded configuration (COMMUCAT_CONFIG / ./commucat.toml and COMMUCAT_* variables). */
  async config(): Promise<Config> {
    if (!this.#config) {
      for (const warning of unknownVariableWarnings(this.env)) this.note(warning);
      this.#config = await loadConfig({ env: this.env });
    }
    return this.#config;
  }

  /** Only the database, without applying migrations (migrate and diagnose use this). */
  async db(): Promise<Db> {
    if (this.#db) return this.#db;
    if (this.#storage) throw new Error("storage is already open");
    const config = await this.config();
    if (!config.storage.postgresDsn) await assertEmbeddedFree(config.server.dataDir);
    this.#db = await translateInUse(
      openDb({ postgresDsn: config.storage.postgresDsn, dataDir: config.server.dataDir }),
      config,
    );
    return this.#db;
  }

  /** Closes the database opened by `db()` (when `storage()` has not taken it over). */
  async closeDb(): Promise<void> {
    const db = this.#db;
    this.#db = null;
    await db?.close();
  }

  /**
   * The whole storage. Migrations are not applied here (that is `migrate`'s job): a schema with
   * pending or edited migrations is refused with a message that says what to do.
   */
  async storage(): Promise<Storage> {
    if (this.#storage) return this.#storage;
    const config = await this.config();
    const db = await this.db();
    this.#db = null; // from here on the storage owns it
    try {
      await assertSchemaCurrent(db);
      const ephemeral = await openEphemeral(config.storage.redisUrl, {
        connectionName: "commucat-cli",
        warn: this.warnOnce,
      });
      this.#storage = buildStorage(db, ephemeral, config.federation.peers);
    } catch (err) {
      await db.close().catch(() => {});
      throw err;
    }
    return this.#storage;
  }

  /**
   * The operator actions: against storage when this process can open it, or through a running
   * server's admin API — with `--server URL`, or when a running server holds the embedded
   * database (then the console on console_bind, with the start-up token file on loopback or
   * the admin token).
   */
  async admin(): Promise<AdminOps> {
    if (this.#admin) return this.#admin;
    const config = await this.config();
    let baseUrl = this.server;
    if (baseUrl === null && !config.storage.postgresDsn) {
      if (await embeddedHeld(config.server.dataDir)) {
        const bind = config.server.consoleBind;
        const host = bind.hostname.includes(":") ? `[${bind.hostname}]` : bind.hostname;
        const scheme = config.server.tlsCert && config.server.tlsKey ? "https" : "http";
        baseUrl = `${scheme}://${host === "0.0.0.0" ? "127.0.0.1" : host}:${bind.port}`;
        this.note(
          `note: a running server holds the embedded database; using its admin API at ${baseUrl}`,
        );
      }
    }
    if (baseUrl !== null) {
      this.#admin = new RemoteAdmin({
        baseUrl,
        token: await this.#adminToken(config, baseUrl),
        actor: this.actor,
      });
      return this.#admin;
    }
    const storage = await this.storage();
    this.#admin = new LocalAdmin({
      storage,
      actor: this.actor,
      staticPeerDomains: config.federation.peers.map((p) => p.domain),
      reachesServers: await this.sharesBus(),
      // Opened only when an action records something (rotate-keys).
      ledger: { record: async (kind, metadata) => (await this.ledger()).record(kind, metadata) },
    });
    return this.#admin;
  }

  /** The admin token, or the console's start-up token file when the server is on loopback. */
  async #adminToken(config: Config, baseUrl: string): Promise<string> {
    if (config.admin.token) return config.admin.token;
    const file = `${config.server.dataDir.replace(/\/+$/, "") || "."}/console-token`;
    if (isLoopback(new URL(baseUrl).hostname)) {
      try {
        const token = (await Deno.readTextFile(file)).trim();
        if (token) return token;
      } catch {
        // fall through to the explanation
      }
    }
    throw new CliFailure(
      `no admin token for ${baseUrl}: set [admin] token (or COMMUCAT_ADMIN_TOKEN)` +
        (isLoopback(new URL(baseUrl).hostname)
          ? `; the start-up token file ${file} is missing`
          : ""),
    );
  }

  /** The ledger configured in [ledger]; file mode opens its file now, so a bad path fails. */
  async ledger(): Promise<Ledger> {
    if (this.#ledger) return this.#ledger;
    const config = await this.config();
    const ledger = createLedger({ mode: config.ledger.mode, target: config.ledger.target }, log);
    await ledger.ready();
    this.#ledger = ledger;
    return ledger;
  }

  /** True when control events reach other nodes (a shared Redis is configured). */
  async sharesBus(): Promise<boolean> {
    return !!(await this.config()).storage.redisUrl;
  }

  /** Closes whatever was opened; errors while closing are not worth a failed exit code. */
  async close(): Promise<void> {
    const storage = this.#storage;
    const ledger = this.#ledger;
    this.#storage = null;
    this.#ledger = null;
    await Promise.allSettled([
      storage?.close(),
      ledger?.close(),
      this.closeDb(),
    ]);
  }
}

/** Refuses a database whose schema is behind the code or whose applied migrations were edited. */
async function assertSchemaCurrent(db: Db): Promise<void> {
  const status = await migrationStatus(db);
  if (status.mismatched.length > 0) {
    throw new StorageFailure(
      `migration ${status.mismatched[0]} was changed after it was applied (its checksum differs ` +
        "from the recorded one); restore the original file",
    );
  }
  if (status.pending.length > 0) {
    const n = status.pending.length;
    throw new StorageFailure(
      `the database schema is not up to date: ${n} pending migration${n === 1 ? "" : "s"} ` +
        `(${status.pending.join(", ")}); run deno task cli migrate`,
    );
  }
}

/** The storage module's own "in use" message says "another process"; say what it means. */
async function translateInUse<T>(opening: Promise<T>, config: Config): Promise<T> {
  try {
    return await opening;
  } catch (err) {
    if (
      !config.storage.postgresDsn && err instanceof StorageFailure &&
      /in use by another process/.test(err.message)
    ) {
      throw new CliFailure(embeddedInUseMessage(embeddedPaths(config.server.dataDir).dir));
    }
    throw err;
  }
}
