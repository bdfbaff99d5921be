/**
 * `diagnose`: checks the configuration, the database, the migrations and the ephemeral store,
 * then writes and reads back a probe in each. One line per check, `ok` or `failed: <reason>`;
 * exit code 1 when any check failed, with the guide's troubleshooting hints on stderr.
 */
import { parseCommand } from "../args.ts";
import type { Command } from "../command.ts";
import { embeddedPaths } from "../context.ts";
import { redactUrlPassword } from "../../server/log.ts";
import { openEphemeral } from "../../storage/ephemeral/mod.ts";
import {
  buildStorage,
  type Db,
  type EphemeralStore,
  migrationStatus,
  nonconformingIds,
  redactDsn,
  RedisFailure,
  StorageFailure,
  troubleshootingHint,
} from "../../storage/mod.ts";

const usage = "diagnose";

type Outcome = { ok: true; detail?: string } | { ok: false; reason: string; error?: unknown };

const reasonOf = (err: unknown) =>
  redactUrlPassword(err instanceof Error ? err.message : String(err));

export const diagnoseCommand: Command = {
  name: "diagnose",
  summary: "check config, database, migrations and Redis; write and read a probe",
  usage,
  help: `Runs every check and prints one line each, "ok" or "failed: <reason>":
  config        the configuration loads (commucat.toml and COMMUCAT_* variables)
  database      Postgres (or the embedded database) answers
  migrations    none pending, and the recorded checksums match the files
  identifiers   every stored user id, handle, device id and group id follows the rules of
                docs/PROTOCOL.md (older releases stored some, like ".alice", that no client can use)
  ephemeral     Redis (or the in-memory store) answers
  db-probe      an audit entry is written and read back (action "diagnose.probe")
  ephemeral-probe  a short-lived route key is written, read back and removed
Exits 1 when any check failed, after printing the troubleshooting hints on stderr.

Example:
  deno task cli diagnose`,
  async run(argv, ctx) {
    parseCommand(argv, { usage });
    const results: [string, Outcome][] = [];
    const report = (name: string, outcome: Outcome) => {
      results.push([name, outcome]);
      const text = outcome.ok
        ? `ok${outcome.detail ? ` (${outcome.detail})` : ""}`
        : `failed: ${outcome.reason}`;
      ctx.out(`${(name + ":").padEnd(17)}${text}`);
    };
    const attempt = async (name: string, fn: () => Promise<string | undefined>) => {
      try {
        report(name, { ok: true, detail: await fn() });
        return true;
      } catch (err) {
        report(name, { ok: false, reason: reasonOf(err), error: err });
        return false;
      }
    };

    let config;
    try {
      config = await ctx.config();
      report("config", { ok: true, detail: config.source ?? "defaults and environment" });
    } catch (err) {
      report("config", { ok: false, reason: reasonOf(err).replaceAll("\n", " "), error: err });
      return finish(ctx, results);
    }

    // Filled in by the checks below (a holder, since closures assign them).
    const open: { db: Db | null; ephemeral: EphemeralStore | null } = { db: null, ephemeral: null };
    await attempt("database", async () => {
      open.db = await ctx.db();
      return config.storage.postgresDsn
        ? `postgres at ${redactDsn(config.storage.postgresDsn)}`
        : `embedded database in ${embeddedPaths(config.server.dataDir).dir}`;
    });

    let schemaReady = false;
    const db = open.db;
    if (db) {
      schemaReady = await attempt("migrations", async () => {
        const status = await migrationStatus(db);
        if (status.mismatched.length > 0) {
          throw new StorageFailure(
            `checksum differs for ${status.mismatched.join(", ")}: an applied migration was ` +
              "edited; restore the original file",
          );
        }
        if (status.pending.length > 0) {
          throw new StorageFailure(
            `${status.pending.length} pending (${status.pending.join(", ")}): ` +
              "run deno task cli migrate",
          );
        }
        const extra = status.unknown.length > 0
          ? `; the database also has ${status.unknown.join(", ")}, unknown to this version`
          : "";
        return `${status.applied.length} applied${extra}`;
      });
      if (schemaReady) {
        await attempt("identifiers", async () => {
          const bad = await nonconformingIds(db, 5);
          if (bad.total > 0) {
            const shown = bad.items.map((b) => `${b.kind} ${JSON.stringify(b.value)}`).join(", ");
            throw new StorageFailure(
              `${bad.total} stored identifier${bad.total === 1 ? "" : "s"} break the rules ` +
                `(${shown}${bad.total > bad.items.length ? ", …" : ""}): no client can use ` +
                "them; revoke or delete them (docs/PROTOCOL.md, Identifiers)",
            );
          }
          return "every stored id and handle follows the rules";
        });
      }
    } else {
      report("migrations", { ok: false, reason: "skipped: the database is not reachable" });
    }

    try {
      await attempt("ephemeral", async () => {
        const store = await openEphemeral(config.storage.redisUrl, {
          connectionName: "commucat-cli-diagnose",
          warn: ctx.warnOnce,
        });
        open.ephemeral = store;
        await store.ping();
        return store.kind === "redis"
          ? `redis at ${redactUrlPassword(config.storage.redisUrl ?? "")}`
          : "in-memory store; no redis_url, so this process only";
      });

      const probeId = crypto.randomUUID();
      const store = open.ephemeral;
      if (db && schemaReady && store) {
        const storage = buildStorage(db, store, config.federation.peers);
        await attempt("db-probe", async () => {
          const target = `probe:${probeId}`;
          const written = await storage.audit.append({
            actor: ctx.actor,
            action: "diagnose.probe",
            target,
            after: { probe: probeId },
          });
          const back = await storage.audit.list({ target, limit: 1 });
          const found = back.items[0];
          if (!found || found.id !== written.id) {
            throw new StorageFailure("the probe audit entry was written but not read back");
          }
          return `audit entry ${written.id} written and read back`;
        });
      } else {
        report("db-probe", { ok: false, reason: "skipped: the database is not ready" });
      }
      if (store) {
        await attempt("ephemeral-probe", async () => {
          const device = `diagnose-${probeId}`;
          await store.setRoute(device, { nodeId: "cli-diagnose", sessionId: probeId }, 10);
          const back = await store.getRoute(device);
          await store.clearRoute(device, probeId);
          if (back?.sessionId !== probeId) {
            throw new RedisFailure("redis failure: the probe key was written but not read back");
          }
          return "route key written, read back and removed";
        });
      } else {
        report("ephemeral-probe", { ok: false, reason: "skipped: the store did not open" });
      }
    } finally {
      await open.ephemeral?.close().catch(() => {});
    }
    return finish(ctx, results);
  },
};

/** Prints the hints for the failures seen (each once) and picks the exit code. */
function finish(ctx: { note(text: string): void }, results: [string, Outcome][]): number {
  const failed = results.filter(([, o]) => !o.ok);
  const hints = new Set<string>();
  for (const [, outcome] of failed) {
    const hint = outcome.ok ? null : troubleshootingHint(outcome.error);
    if (hint) hints.add(hint);
  }
  for (const hint of hints) ctx.note(`hint: ${hint}`);
  if (failed.length > 0) ctx.note(`${failed.length} check${failed.length === 1 ? "" : "s"} failed`);
  return failed.length > 0 ? 1 : 0;
}
