/** `peers list | add | set-status`: federation peers (database rows merged with [federation]). */
import { formatFlag, hexKey, oneOf, parseCommand, stringFlag, UsageError } from "../args.ts";
import type { Command } from "../command.ts";
import { hex, keyValues, table, toJson } from "../format.ts";
import { notifyNodes } from "./notify.ts";
import type { CliContext } from "../context.ts";
import type { FederationPeer, PeerStatus, Storage } from "../../storage/mod.ts";

const STATUSES = ["active", "pending", "blocked"] as const;
const listUsage = "peers list [--format text|json]";
const addUsage = "peers add <domain> <endpoint> <hexkey> [--status active|pending|blocked]";
const setUsage = "peers set-status <domain> active|pending|blocked";
const usage = [listUsage, addUsage, setUsage].join("\n");

/** Tells running servers a peer's status changed (they apply it at once). */
function announceStatus(ctx: CliContext, storage: Storage, peer: FederationPeer): Promise<void> {
  return notifyNodes(ctx, storage, `peer ${peer.domain} is ${peer.status}`, {
    kind: "peer-status",
    domain: peer.domain,
    status: peer.status,
  });
}

const peerLines = (p: FederationPeer) =>
  keyValues([
    ["domain", p.domain],
    ["endpoint", p.endpoint],
    ["public_key", hex(p.publicKey)],
    ["status", p.status],
    ["source", p.source],
  ]);

export const peersCommand: Command = {
  name: "peers",
  summary: "list, add and block or unblock federation peers",
  usage,
  help: `list        every peer: the [federation] peers of the config (source "config", read-only)
            and the federation_peer rows (source "database")
add         adds a database peer (new peers start pending unless --status is given), or
            updates the endpoint and key of an existing one; the key is its Ed25519 public
            key, 64 hex characters
set-status  moves a database peer to active, pending or blocked (allowed transitions only);
            running servers are told at once

Examples:
  deno task cli peers list
  deno task cli peers add chat.example.org https://chat.example.org/federation 3b6a…e1
  deno task cli peers set-status chat.example.org blocked`,
  async run(argv, ctx) {
    const [sub, ...rest] = argv;
    switch (sub) {
      case "list": {
        const args = parseCommand(rest, {
          usage: listUsage,
          flags: { format: { type: "string" } },
        });
        const format = formatFlag(args, listUsage);
        const peers = await (await ctx.storage()).peers.list();
        if (format === "json") {
          ctx.out(toJson(peers));
          return 0;
        }
        ctx.out(table(
          ["DOMAIN", "STATUS", "SOURCE", "ENDPOINT", "PUBLIC_KEY", "LAST_SEEN"],
          peers.map((p) => [p.domain, p.status, p.source, p.endpoint, p.publicKey, p.lastSeenAt]),
        ));
        return 0;
      }
      case "add": {
        const args = parseCommand(rest, {
          usage: addUsage,
          positionals: ["domain", "endpoint", "hexkey"],
          flags: { status: { type: "string" } },
        });
        const [domain, endpoint, keyText] = args.positionals;
        const publicKey = hexKey("hexkey", keyText, addUsage);
        const statusText = stringFlag(args, "status");
        const status = statusText === undefined
          ? undefined
          : oneOf<PeerStatus>("status", statusText, STATUSES, addUsage);
        const storage = await ctx.storage();
        const before = await storage.peers.get(domain);
        // The repository writes the audit entry in the same transaction.
        const peer = await storage.peers.upsert({ domain, endpoint, publicKey, status }, ctx.actor);
        if (before && before.status !== peer.status) {
          await announceStatus(ctx, storage, peer);
        }
        ctx.out(peerLines(peer));
        return 0;
      }
      case "set-status": {
        const args = parseCommand(rest, { usage: setUsage, positionals: ["domain", "status"] });
        const [domain, statusText] = args.positionals;
        const status = oneOf<PeerStatus>("status", statusText, STATUSES, setUsage);
        const storage = await ctx.storage();
        // The repository checks the transition and writes the audit entry in one transaction.
        const peer = await storage.peers.setStatus(domain, status, ctx.actor);
        await announceStatus(ctx, storage, peer);
        ctx.out(peerLines(peer));
        return 0;
      }
      case undefined:
        throw new UsageError("missing subcommand: list, add or set-status", listUsage);
      default:
        throw new UsageError(
          `unknown subcommand ${JSON.stringify(sub)}: expected list, add or set-status`,
          listUsage,
        );
    }
  },
};
