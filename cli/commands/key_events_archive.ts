/**
 * `key-events archive|verify|restore|archived`: the key-event archive by hand. `archive` runs
 * one retention pass now (the same as the server's periodic job, under the same lock);
 * `verify` checks the whole archive (signature, chunk hashes, hash chain, unlisted objects,
 * database index); `restore` puts archived events back; `archived` lists the archived ranges,
 * or a device's archived events.
 */
import { parseCommand, stringFlag, timeFlag } from "../args.ts";
import type { CliContext } from "../context.ts";
import { CliFailure } from "../context.ts";
import { table, toJson } from "../format.ts";
import { printAs } from "../page.ts";
import {
  archivedHistory,
  restoreKeyEvents,
  verifyArchive,
} from "../../storage/archive/key_events.ts";
import {
  archiveSigner,
  archiveTarget,
  retentionCutoff,
  runRetentionPass,
} from "../../server/retention.ts";

export const ARCHIVE_SUBCOMMANDS = ["archive", "verify", "restore", "archived"] as const;

export const archiveUsage = [
  "key-events archive [--dry-run] [--before TIME]",
  "key-events verify [--format text|json]",
  "key-events restore [--device ID] [--from TIME] [--to TIME]",
  "key-events archived [--device ID] [--format text|json]",
].join("\n");

export const archiveHelp =
  `The archive ([retention] in the configuration): key events older than key_events_days are
moved to the archive target (a directory, or an S3-compatible bucket) as hash-chained JSON
Lines chunks under a manifest signed with the federation key, then deleted from the database.
  archive   run one retention pass now (one node at a time; --before TIME archives everything
            recorded before TIME instead of the configured period; --dry-run only counts)
  verify    check the manifest signature, every chunk's hash, the chain, objects the manifest
            does not list and the database index; exit code 1 when anything is wrong
  restore   put archived events back (all, one --device, or a --from/--to range); restored
            events are deleted again after the retention period, without a second archive
  archived  the archived ranges (chunks), or with --device that device's archived events`;

export async function runArchiveSubcommand(argv: string[], ctx: CliContext): Promise<number> {
  const [sub, ...rest] = argv;
  const usage = archiveUsage;
  const config = await ctx.config();
  const target = archiveTarget(config);
  const { publicKey } = archiveSigner(config);
  if (sub === "archive") {
    const args = parseCommand(rest, {
      usage,
      flags: { "dry-run": { type: "boolean" }, before: { type: "string" } },
    });
    const before = timeFlag(args, "before", usage);
    if (before === undefined && retentionCutoff(config) === null) {
      throw new CliFailure(
        "[retention] key_events_days is 0 (keep forever): nothing is due; " +
          "give --before TIME to archive events recorded before TIME",
      );
    }
    const storage = await ctx.storage();
    const result = await runRetentionPass(config, storage, {
      cutoff: before,
      dryRun: args.flags["dry-run"] === true,
      maxChunks: 100_000,
    });
    if ("disabled" in result) return 0; // unreachable: checked above
    if (!result.locked) {
      throw new CliFailure("another node is running the retention job now; try again shortly");
    }
    if (result.due !== undefined) {
      ctx.out(`${result.due} key events are due for the archive ${target.id}`);
      return 0;
    }
    ctx.out(
      `archived ${result.archived} key events in ${result.chunks} chunks to ${target.id}; ` +
        `deleted ${result.deleted}` +
        (result.reconciled ? `; finished ${result.reconciled} interrupted chunks` : "") +
        (result.restoredPurged ? `; removed ${result.restoredPurged} restored events` : ""),
    );
    return 0;
  }
  if (sub === "verify") {
    const args = parseCommand(rest, { usage, flags: { format: { type: "string" } } });
    const storage = await ctx.storage();
    const report = await verifyArchive(target, publicKey, storage.keyEventArchive);
    if (stringFlag(args, "format") === "json") {
      ctx.out(toJson({ target: target.id, ...report }));
    } else {
      ctx.out(
        `${target.id}: ${report.chunks} chunks, ${report.events} events` +
          (report.range ? `, ${report.range.from} .. ${report.range.to}` : ""),
      );
      for (const p of report.problems) ctx.out(`PROBLEM: ${p}`);
      ctx.out(report.ok ? "the archive verifies" : `${report.problems.length} problems found`);
    }
    return report.ok ? 0 : 1;
  }
  if (sub === "restore") {
    const args = parseCommand(rest, {
      usage,
      flags: { device: { type: "string" }, from: { type: "string" }, to: { type: "string" } },
    });
    const storage = await ctx.storage();
    const r = await restoreKeyEvents(storage.keyEventArchive, target, publicKey, {
      deviceId: stringFlag(args, "device"),
      from: timeFlag(args, "from", usage),
      to: timeFlag(args, "to", usage),
    });
    ctx.out(
      `read ${r.chunks} chunks: ${r.matched} events matched, ${r.restored} restored, ` +
        `${r.present} already present, ${r.unknownDevice} of unknown devices skipped`,
    );
    return 0;
  }
  // archived
  const args = parseCommand(rest, {
    usage,
    flags: { device: { type: "string" }, format: { type: "string" } },
  });
  const storage = await ctx.storage();
  const format = stringFlag(args, "format") === "json" ? "json" : "text";
  const device = stringFlag(args, "device");
  if (device !== undefined) {
    const h = await archivedHistory(storage.keyEventArchive, target, device);
    printAs(ctx, format, h.events, (events) =>
      table(
        ["RECORDED_AT", "KIND", "EVENT_ID", "PUBLIC_KEY", "ACTOR"],
        events.map((e) => [e.recorded_at, e.kind, e.event_id, e.public_key, e.actor]),
      ));
    if (h.truncated) ctx.note("showing the first 1000 archived events");
    return 0;
  }
  return printAs(ctx, format, await storage.keyEventArchive.chunks(), (chunks) =>
    table(
      ["SEQ", "FIRST", "LAST", "EVENTS", "SHA256", "ARCHIVED_AT", "TARGET"],
      chunks.map((c) => [
        c.seq,
        c.firstAt,
        c.lastAt,
        c.events,
        c.sha256.slice(0, 16),
        c.archivedAt,
        c.target,
      ]),
    ));
}
