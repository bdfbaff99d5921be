/** `key-events`: a device's key history, as a table, JSON or CSV (export). */
import { formatFlag, parseCommand, timeFlag } from "../args.ts";
import type { Command } from "../command.ts";
import { table } from "../format.ts";
import { CSV_HEADER, csvLine, jsonRow } from "../../admin/export.ts";
import type { KeyEventView } from "../../admin/views.ts";
import {
  ARCHIVE_SUBCOMMANDS,
  archiveHelp,
  archiveUsage,
  runArchiveSubcommand,
} from "./key_events_archive.ts";

const usage = "key-events <device_id> [--format text|json|csv] [--from TIME] [--to TIME]";

/** Exports above this many rows report progress on stderr. */
const PROGRESS_EVERY = 1000;

const row = (e: KeyEventView) => [e.recordedAt, e.kind, e.eventId, e.publicKey, e.actor];

export const keyEventsCommand: Command = {
  name: "key-events",
  summary: "show or export a device's key events",
  usage: `${usage}\n${archiveUsage}`,
  help: `Prints every key event of a device (registered, approved, rotated, revoked, …), oldest
first: time, kind, event id, public key and who caused it. --format json or csv exports them
(for reports, or to compare with the ledger); --from/--to limit the time range [from, to).
Large exports report progress on stderr.

Example:
  deno task cli key-events laptop-01 --format csv > laptop-01-keys.csv

${archiveHelp}
A device whose id is one of these words is shown with "key-events -- <id>".`,
  async run(argv, ctx) {
    if ((ARCHIVE_SUBCOMMANDS as readonly string[]).includes(argv[0])) {
      return await runArchiveSubcommand(argv, ctx);
    }
    const args = parseCommand(argv, {
      usage,
      positionals: ["device_id"],
      flags: { format: { type: "string" }, from: { type: "string" }, to: { type: "string" } },
    });
    const [deviceId] = args.positionals;
    const format = formatFlag(args, usage, ["text", "json", "csv"]);
    const from = timeFlag(args, "from", usage);
    const to = timeFlag(args, "to", usage);
    const events = await (await ctx.admin()).keyEvents(deviceId, { from, to });
    const progress = (done: number) => {
      if (events.length > PROGRESS_EVERY) ctx.note(`exported ${done}/${events.length} events`);
    };
    if (format === "text") {
      ctx.out(table(["RECORDED_AT", "KIND", "EVENT_ID", "PUBLIC_KEY", "ACTOR"], events.map(row)));
      return 0;
    }
    // Rows are written in batches: one write per PROGRESS_EVERY rows, then a progress line.
    const encoder = new TextEncoder();
    let buffered: string[] = [];
    const flush = async () => {
      const bytes = encoder.encode(buffered.join(""));
      buffered = [];
      let written = 0;
      while (written < bytes.length) written += await Deno.stdout.write(bytes.subarray(written));
    };
    const emit = async (text: string, done: number) => {
      buffered.push(text);
      if (done % PROGRESS_EVERY === 0) {
        await flush();
        progress(done);
      }
    };
    if (format === "csv") {
      // The one export format of the console and the API (admin/export.ts).
      buffered.push(CSV_HEADER);
      for (const [i, e] of events.entries()) await emit(csvLine(e), i + 1);
    } else {
      buffered.push("[");
      for (const [i, e] of events.entries()) {
        await emit((i === 0 ? "\n  " : ",\n  ") + jsonRow(e), i + 1);
      }
      buffered.push(events.length === 0 ? "]\n" : "\n]\n");
    }
    await flush();
    if (events.length % PROGRESS_EVERY !== 0) progress(events.length);
    return 0;
  },
};
