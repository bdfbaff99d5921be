/**
 * CommuCat's shared storage module: `openStorage(options)` gives the relay server, the admin
 * console and the operator CLI the same repositories over Postgres (or embedded PGlite when no
 * DSN is configured) plus the ephemeral store (Redis, or in-memory when no URL is configured).
 */
import { type Db, openPglite, openPostgres } from "./db.ts";
import { openEphemeral } from "./ephemeral/mod.ts";
import { migrate, type MigrationProgress } from "./migrate.ts";
import { PgAnalyticsRepo } from "./repos/analytics.ts";
import { PgAuditRepo } from "./repos/audit.ts";
import { PgDeviceRepo } from "./repos/devices.ts";
import { PgOutboxRepo, PgPeerRepo, type StaticPeer } from "./repos/federation.ts";
import { PgGroupRepo } from "./repos/groups.ts";
import { PgIdempotencyRepo } from "./repos/idempotency.ts";
import { PgKeyEventRepo } from "./repos/key_events.ts";
import { PgKeyEventArchiveRepo } from "./repos/key_event_archive.ts";
import { PgPairingRepo } from "./repos/pairing.ts";
import { PgRemoteOffsetRepo } from "./repos/remote_offsets.ts";
import { PgOffsetRepo, PgRelayRepo } from "./repos/relay.ts";
import { PgSessionRepo } from "./repos/sessions.ts";
import { PgUserRepo } from "./repos/users.ts";
import type { EphemeralStore, Readiness, Storage, StorageOptions } from "./types.ts";

export * from "./types.ts";
export * from "./errors.ts";
export { type Connection, type Db, DbFailure, type Queryable, redactDsn, sqlState } from "./db.ts";
export {
  migrate,
  type MigrationProgress,
  MIGRATIONS_DIR,
  type MigrationStatus,
  migrationStatus,
} from "./migrate.ts";
export { type StaticPeer } from "./repos/federation.ts";
export { type NonconformingId, nonconformingIds } from "./repos/id_check.ts";
export { DEFAULT_LIMIT, MAX_LIMIT } from "./pagination.ts";
export { INTERRUPT_TTL_SECONDS } from "./ephemeral/shared.ts";
export { MAX_DEVICE_LIMIT, MAX_PAIRING_ATTEMPTS } from "./repos/pairing.ts";

/** `StorageOptions` plus what only some callers need. */
export interface OpenStorageOptions extends StorageOptions {
  /** Static `[federation]` peers: merged into peer listings, read-only for setStatus/upsert. */
  staticPeers?: StaticPeer[];
  /** Called before each migration file is applied (CLI progress). */
  onMigrationProgress?: (p: MigrationProgress) => void;
  /** Options passed to the ephemeral store (tests use a shared in-memory hub). */
  ephemeral?: Parameters<typeof openEphemeral>[1];
  /** Pool size for real Postgres (default 10). */
  poolSize?: number;
  /**
   * The process's logger (server/log.ts `Logger` fits): storage warnings (an idle Postgres
   * connection failed; Redis connection lost and regained, malformed bus messages) go to its
   * `warn`, unless `ephemeral.warn` says otherwise. Without one, the ephemeral store's go to
   * `console.warn` and the database's are dropped.
   */
  log?: { warn(message: string, fields?: Record<string, unknown>): void };
}

/**
 * Open only the database: Postgres when `postgresDsn` is set, else PGlite under
 * `<dataDir>/pg`. Migrations are not applied (see `migrate`).
 */
export async function openDb(
  opts: Pick<OpenStorageOptions, "postgresDsn" | "dataDir" | "poolSize" | "log">,
): Promise<Db> {
  if (opts.postgresDsn !== null && opts.postgresDsn.trim() !== "") {
    const log = opts.log;
    const warn = log ? (message: string) => log.warn(message) : undefined;
    return await openPostgres(opts.postgresDsn.trim(), { max: opts.poolSize, warn });
  }
  return await openPglite(opts.dataDir);
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Build the repositories over an open database and ephemeral store. */
export function buildStorage(
  db: Db,
  ephemeral: EphemeralStore,
  staticPeers: StaticPeer[] = [],
): Storage {
  const dbKind = db.kind;
  let closed = false;
  return {
    dbKind,
    users: new PgUserRepo(db),
    devices: new PgDeviceRepo(db),
    keyEvents: new PgKeyEventRepo(db),
    keyEventArchive: new PgKeyEventArchiveRepo(db),
    analytics: new PgAnalyticsRepo(db),
    sessions: new PgSessionRepo(db),
    relay: new PgRelayRepo(db),
    offsets: new PgOffsetRepo(db),
    groups: new PgGroupRepo(db),
    peers: new PgPeerRepo(db, staticPeers),
    outbox: new PgOutboxRepo(db),
    remoteOffsets: new PgRemoteOffsetRepo(db),
    audit: new PgAuditRepo(db),
    idempotency: new PgIdempotencyRepo(db),
    pairing: new PgPairingRepo(db),
    ephemeral,
    async readiness(): Promise<Readiness> {
      const postgres: Readiness["postgres"] = { ok: true, kind: dbKind };
      const redis: Readiness["redis"] = { ok: true, kind: ephemeral.kind };
      await Promise.all([
        db.query("SELECT 1").catch((err) => {
          postgres.ok = false;
          postgres.error = message(err);
        }),
        ephemeral.ping().catch((err) => {
          redis.ok = false;
          redis.error = message(err);
        }),
      ]);
      return { ok: postgres.ok && redis.ok, postgres, redis };
    },
    async close() {
      if (closed) return;
      closed = true;
      try {
        await ephemeral.close();
      } finally {
        await db.close();
      }
    },
  };
}

/**
 * Open storage: the database (migrated unless `migrate: false`), the ephemeral store and every
 * repository. Throws StorageFailure (database) or RedisFailure (malformed Redis URL).
 */
export async function openStorage(opts: OpenStorageOptions): Promise<Storage> {
  const db = await openDb(opts);
  try {
    if (opts.migrate !== false) await migrate(db, { onProgress: opts.onMigrationProgress });
    const log = opts.log;
    const warn = opts.ephemeral?.warn ?? (log ? (message: string) => log.warn(message) : undefined);
    const ephemeral = await openEphemeral(opts.redisUrl, { ...opts.ephemeral, warn });
    return buildStorage(db, ephemeral, opts.staticPeers);
  } catch (err) {
    await db.close().catch(() => {});
    throw err;
  }
}
