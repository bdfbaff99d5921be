/**
 * `peers list | add | set-status | retry | dead | replay`: federation peers (database rows
 * merged with [federation]), their outbox backoff, and dead letters.
 */
import { choiceFlag, hexKey, oneOf, parseCommand, stringFlag, subcommandError } from "../args.ts";
import type { Command } from "../command.ts";
import { hex, keyValues } from "../format.ts";
import { printNotes, runList } from "../page.ts";
import type { PeerStatus } from "../../storage/mod.ts";
import type { PeerView } from "../../admin/views.ts";

const STATUSES = ["active", "pending", "blocked"] as const;
const listUsage = "peers list [--format text|json]";
const addUsage = "peers add <domain> <endpoint> <hexkey> [--status active|pending|blocked]";
const setUsage = "peers set-status <domain> active|pending|blocked";
const retryUsage = "peers retry <domain>";
const deadUsage = "peers dead [--peer DOMAIN] [--limit N] [--format text|json]";
const replayUsage = "peers replay <outbox_id>";
const usage = [listUsage, addUsage, setUsage, retryUsage, deadUsage, replayUsage].join("\n");

const peerLines = (p: PeerView) =>
  keyValues([
    ["domain", p.domain],
    ["endpoint", p.endpoint],
    ["public_key", p.publicKey],
    ["status", p.status],
    ["source", p.source],
  ]);

export const peersCommand: Command = {
  name: "peers",
  summary: "federation peers: list, add, block or unblock, retry now, dead letters",
  usage,
  help: `list        every peer: the [federation] peers of the config (source "config", read-only)
            and the federation_peer rows (source "database"), with the outbox backlog:
            PENDING entries, ATTEMPTS of the most-tried one, NEXT_RETRY, DEAD entries
add         adds a database peer (new peers start pending unless --status is given), or
            updates the endpoint and key of an existing one; the key is its Ed25519 public
            key, 64 hex characters
set-status  moves a database peer to active, pending or blocked (allowed transitions only);
            running servers are told at once
retry       "retry now": the peer's pending outbox entries become due at once
dead        outbox entries given up (the peer kept refusing them), newest first, with the
            last error; --format json includes the signed event
replay      puts a dead entry back in the outbox, due now, attempts reset

Examples:
  deno task cli peers list
  deno task cli peers add chat.example.org https://chat.example.org/federation 3b6a…e1
  deno task cli peers set-status chat.example.org blocked
  deno task cli peers retry chat.example.org`,
  async run(argv, ctx) {
    const [sub, ...rest] = argv;
    switch (sub) {
      case "list":
        return await runList(rest, ctx, {
          usage: listUsage,
          query: async (_args, _paging, admin) => (await admin()).peers(),
          headers: [
            "DOMAIN",
            "STATUS",
            "SOURCE",
            "ENDPOINT",
            "PUBLIC_KEY",
            "LAST_SEEN",
            "PENDING",
            "ATTEMPTS",
            "NEXT_RETRY",
            "DEAD",
          ],
          row: (p) => [
            p.domain,
            p.status,
            p.source,
            p.endpoint,
            p.publicKey,
            p.lastSeenAt,
            p.pending,
            p.attempts,
            p.nextRetryAt,
            p.dead,
          ],
        });
      case "add": {
        const args = parseCommand(rest, {
          usage: addUsage,
          positionals: ["domain", "endpoint", "hexkey"],
          flags: { status: { type: "string" } },
        });
        const [domain, endpoint, keyText] = args.positionals;
        const publicKey = hex(hexKey("hexkey", keyText, addUsage));
        const status = choiceFlag<PeerStatus>(args, "status", STATUSES, addUsage);
        const r = await (await ctx.admin()).addPeer({ domain, endpoint, publicKey, status });
        printNotes(ctx, r.notes);
        ctx.out(peerLines(r.peer));
        return 0;
      }
      case "set-status": {
        const args = parseCommand(rest, { usage: setUsage, positionals: ["domain", "status"] });
        const [domain, statusText] = args.positionals;
        const status = oneOf<PeerStatus>("status", statusText, STATUSES, setUsage);
        const r = await (await ctx.admin()).setPeerStatus(domain, status);
        printNotes(ctx, r.notes);
        ctx.out(peerLines(r.peer));
        return 0;
      }
      case "retry": {
        const args = parseCommand(rest, { usage: retryUsage, positionals: ["domain"] });
        const r = await (await ctx.admin()).retryPeer(args.positionals[0]);
        printNotes(ctx, r.notes);
        ctx.out(keyValues([["domain", r.domain], ["due_now", r.dueNow]]));
        return 0;
      }
      case "dead":
        return await runList(rest, ctx, {
          usage: deadUsage,
          flags: { peer: { type: "string" }, limit: { type: "string" } },
          query: async (args, paging, admin) =>
            (await admin()).deadLetters({
              peerDomain: stringFlag(args, "peer"),
              limit: paging.limit,
            }),
          headers: ["ID", "PEER", "EVENT_ID", "ATTEMPTS", "DEAD_AT", "LAST_ERROR"],
          row: (e) => [e.id, e.peerDomain, e.eventId, e.attempts, e.deadAt, e.lastError],
        });
      case "replay": {
        const args = parseCommand(rest, { usage: replayUsage, positionals: ["outbox_id"] });
        const r = await (await ctx.admin()).replayDeadLetter(args.positionals[0]);
        printNotes(ctx, r.notes);
        ctx.out(keyValues([
          ["id", r.entry.id],
          ["peer", r.entry.peerDomain],
          ["event_id", r.entry.eventId],
          ["state", "pending"],
          ["next_attempt_at", r.entry.nextAttemptAt],
        ]));
        return 0;
      }
      default:
        throw subcommandError(
          sub,
          ["list", "add", "set-status", "retry", "dead", "replay"],
          listUsage,
        );
    }
  },
};
