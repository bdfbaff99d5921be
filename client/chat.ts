/**
 * `deno task client`: a command-line chat client built on the SDK. Two terminals, two
 * devices:
 *
 * ```sh
 * deno task client --device alice --peer bob     # terminal 1
 * deno task client --device bob --peer alice     # terminal 2
 * ```
 *
 * Lines typed are sent as MSG frames; incoming messages print with sender and time; "✓ sent"
 * shows the server's ACK and '✓✓ "<first words>" delivered to <device>' the other device's receipt.
 * Run with `--help` for every flag. See docs/CLIENT.md.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { join } from "node:path";
import { bytesToHex, hexToBytes, isHex } from "../protocol/hex.ts";
import { federationKeypair } from "../protocol/federation.ts";
import { ProblemError } from "../protocol/errors.ts";
import { directChannelId, groupChannelId } from "./channels.ts";
import { decodeEnvelope, encodeEnvelope, messageId, type TextEnvelope } from "./chat_envelope.ts";
import { CommuCatError } from "./errors.ts";
import { E2EError } from "./e2e.ts";
import {
  defaultKeyFile,
  type DeviceIdentity,
  KeystoreError,
  loadOrCreateIdentity,
  openTrustStore,
  readServerPin,
  replaceIdentityKey,
  serverPinFileFor,
  trustFileFor,
  writeServerPin,
} from "./keystore.ts";
import { type Client, connect, type ConnectOptions, type InboundMessage } from "./sdk.ts";
import "./transport_deno.ts";
import type { TransportKind } from "./transport.ts";

const USAGE = `usage: deno task client [flags]

  --device ID          this device's id (default: from the key file, else generated)
  --peer DEVICE        talk 1:1 with DEVICE (channel id derived from both device ids)
  --peer @HANDLE       talk with a user: every device of theirs, and your other devices
                       get copies of what you send
  --group ID           talk in group ID (channel id derived from the group id)
  --create-group       create --group first, with --members as members (you become owner)
  --members A,B        members for --create-group
  --channel N          use channel N with --members (instead of --peer / --group)

  --server HOST:PORT   server address (default 127.0.0.1:9443, the server's tcp_bind;
                       127.0.0.1:8443, its bind, with --transport http or ws)
  --transport KIND     tcp (default), tls, http (POST /connect) or ws (WebSocket /connect)
  --url URL            full /connect URL for --transport http or ws
  --ca-cert FILE       PEM certificate to trust (self-signed server)
  --server-key HEX|FILE  the server's Noise static public key (printed on start), or a file
                       holding it (hex, or the server's data_dir/keys.json)
  --federation-key HEX the server's Ed25519 federation key (printed on start): follow the
                       server's key rotations (signed catalogs), pinning new keys in
                       ~/.commucat/NAME.servers.json (read from keys.json when given one)
  --data-dir DIR       read the key from DIR/keys.json (a local server's data_dir;
                       default ./data or $COMMUCAT_DATA_DIR when no key is given)
  --pattern XK|IK      Noise pattern (default XK)
  --protocol 1|2       force one protocol version (default: offer both, server picks)
  --prologue TEXT      Noise prologue (default commucat)

  --profile NAME       key file ~/.commucat/NAME.json (default: the device id, or "default")
  --key-file FILE      key file path (overrides --profile)
  --handle NAME        user handle sent when the server provisions the user
  --display-name NAME  user display name sent likewise
  --no-e2e             send plaintext (debugging only: the server can read it); by default
                       every message is sealed end to end for the other devices
  --pair CODE          join the user --handle names as a new device, with the code another
                       device of that user printed with /link (first connect only)

  commands while chatting: /quit  /presence STATE  /invite DEVICE [admin|member]
                           /verify DEVICE [confirm]  /trust DEVICE  /rotate-key
                           /devices  /link  /unlink DEVICE  /help`;

/** Where the chat reads and writes; tests substitute their own. */
export interface ChatIo {
  stdin: ReadableStream<Uint8Array>;
  out(line: string): void;
  err(line: string): void;
}

/** Parsed command line. */
interface ChatFlags {
  device?: string;
  peer?: string;
  group?: string;
  createGroup: boolean;
  members: string[];
  channel?: number;
  transport: TransportKind;
  host: string;
  port: number;
  url?: string;
  caCert?: string;
  serverKey?: string;
  federationKey?: string;
  dataDir?: string;
  pattern: "XK" | "IK";
  protocol?: number;
  prologue?: string;
  profile?: string;
  keyFile?: string;
  handle?: string;
  displayName?: string;
  e2e: boolean;
  pair?: string;
}

class UsageError extends ProblemError {
  constructor(message: string) {
    super("Usage Error", 400, message, { fatal: true });
  }
}

/** Parses argv; throws UsageError naming the bad flag. */
export function parseChatArgs(argv: string[]): ChatFlags | "help" {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        device: { type: "string" },
        peer: { type: "string" },
        group: { type: "string" },
        "create-group": { type: "boolean" },
        members: { type: "string" },
        channel: { type: "string" },
        server: { type: "string" },
        transport: { type: "string" },
        url: { type: "string" },
        "ca-cert": { type: "string" },
        "server-key": { type: "string" },
        "federation-key": { type: "string" },
        "data-dir": { type: "string" },
        pattern: { type: "string" },
        protocol: { type: "string" },
        prologue: { type: "string" },
        profile: { type: "string" },
        "key-file": { type: "string" },
        handle: { type: "string" },
        "display-name": { type: "string" },
        "no-e2e": { type: "boolean" },
        pair: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const v = parsed.values;
  if (v.help) return "help";
  const transport = (v.transport ?? "tcp") as TransportKind;
  if (!["tcp", "tls", "http", "ws"].includes(transport)) {
    throw new UsageError(`--transport must be tcp, tls, http or ws, got ${v.transport}`);
  }
  const onBind = transport === "http" || transport === "ws";
  const defaultServer = onBind ? "127.0.0.1:8443" : "127.0.0.1:9443";
  const server = v.server ?? defaultServer;
  const match = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(server);
  if (!match || Number(match[2]) < 1 || Number(match[2]) > 65535) {
    throw new UsageError(`--server must be HOST:PORT (e.g. 127.0.0.1:9443), got ${server}`);
  }
  const pattern = (v.pattern ?? "XK").toUpperCase();
  if (pattern !== "XK" && pattern !== "IK") {
    throw new UsageError(`--pattern must be XK or IK, got ${v.pattern}`);
  }
  let protocol: number | undefined;
  if (v.protocol !== undefined) {
    protocol = Number(v.protocol);
    if (protocol !== 1 && protocol !== 2) {
      throw new UsageError(`--protocol must be 1 or 2, got ${v.protocol}`);
    }
  }
  let channel: number | undefined;
  if (v.channel !== undefined) {
    channel = Number(v.channel);
    if (!Number.isInteger(channel) || channel < 1 || channel > 0xffff_ffff) {
      throw new UsageError(`--channel must be an integer in 1..4294967295, got ${v.channel}`);
    }
  }
  const members = (v.members ?? "").split(",").map((m) => m.trim()).filter((m) => m !== "");
  const modes = [v.peer, v.group, channel].filter((x) => x !== undefined).length;
  if (modes !== 1) {
    throw new UsageError("choose exactly one of --peer DEVICE, --group ID or --channel N");
  }
  if (v["create-group"] && v.group === undefined) {
    throw new UsageError("--create-group needs --group ID");
  }
  if (v.pair !== undefined && v.handle === undefined) {
    throw new UsageError("--pair CODE needs --handle NAME (the user the code belongs to)");
  }
  if (v["federation-key"] !== undefined && !isHex(v["federation-key"].trim(), 32)) {
    throw new UsageError("--federation-key must be 64 hex characters (the Ed25519 key)");
  }
  if (channel !== undefined && members.length === 0) {
    throw new UsageError("--channel needs --members A,B (the devices on that channel)");
  }
  return {
    device: v.device,
    peer: v.peer,
    group: v.group,
    createGroup: v["create-group"] ?? false,
    members,
    channel,
    transport,
    host: match[1].replace(/^\[|\]$/g, ""),
    port: Number(match[2]),
    url: v.url,
    caCert: v["ca-cert"],
    serverKey: v["server-key"],
    federationKey: v["federation-key"],
    dataDir: v["data-dir"],
    pattern,
    protocol,
    prologue: v.prologue,
    profile: v.profile,
    keyFile: v["key-file"],
    handle: v.handle,
    displayName: v["display-name"],
    e2e: !v["no-e2e"],
    pair: v.pair,
  };
}

/**
 * Finds the server's static public key: `--server-key` (hex, or a file holding hex or a
 * keys.json), else `--data-dir`/keys.json, else `$COMMUCAT_DATA_DIR` or ./data/keys.json.
 */
export async function resolveServerKey(
  flags: Pick<ChatFlags, "serverKey" | "dataDir">,
): Promise<{ key: string; source: string; federationKey?: string }> {
  let federationKey: string | undefined;
  const fromFile = async (file: string): Promise<string> => {
    const text = (await Deno.readTextFile(file)).trim();
    if (isHex(text, 32)) return text;
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch {
      throw new UsageError(`${file} holds neither 64 hex characters nor JSON`);
    }
    const key = (data as Record<string, unknown> | null)?.noise_public;
    if (!isHex(key, 32)) {
      throw new UsageError(`${file} has no noise_public key (64 hex characters)`);
    }
    // The server's own key file: its federation key is derived from the seed it holds.
    const seed = (data as Record<string, unknown>).federation_seed;
    if (typeof seed === "string" && /^([0-9a-f]{2}){16,1024}$/.test(seed)) {
      federationKey = bytesToHex(federationKeypair(hexToBytes(seed)).publicKey);
    }
    return key;
  };
  if (flags.serverKey !== undefined) {
    const text = flags.serverKey.trim();
    if (isHex(text, 32)) return { key: text, source: "--server-key" };
    try {
      return { key: await fromFile(text), source: text, federationKey };
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) {
        throw new UsageError(
          `--server-key is neither 64 hex characters nor a readable file: ${flags.serverKey}`,
        );
      }
      throw error;
    }
  }
  const dir = flags.dataDir ?? Deno.env.get("COMMUCAT_DATA_DIR") ?? "./data";
  const file = join(dir, "keys.json");
  try {
    return { key: await fromFile(file), source: file, federationKey };
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  throw new UsageError(
    `the server's static key is needed and ${file} does not exist: pass --server-key HEX ` +
      `(the server prints it on start as "noise static public key") or --data-dir DIR ` +
      "(the server's data_dir, when it runs on this machine)",
  );
}

/** Runs the chat until /quit or end of input; returns the process exit code. */
export async function runChat(argv: string[], io: ChatIo): Promise<number> {
  let flags: ChatFlags | "help";
  try {
    flags = parseChatArgs(argv);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    io.err(`error: ${error.message}\n\n${USAGE}`);
    return 64;
  }
  if (flags === "help") {
    io.out(USAGE);
    return 0;
  }
  let client: Client;
  let channel: number;
  let peerLabel: string;
  let identity: DeviceIdentity;
  try {
    const resolved = await resolveServerKey(flags);
    const { source } = resolved;
    const keyFile = flags.keyFile ?? defaultKeyFile(flags.profile ?? flags.device ?? "default");
    identity = await loadOrCreateIdentity(keyFile, flags.device);
    if (identity.created) io.out(`* new device key for ${identity.deviceId} kept in ${keyFile}`);
    const me = identity.deviceId;
    const options: ConnectOptions = {
      transport: flags.transport,
      host: flags.host,
      port: flags.port,
      url: flags.transport === "http" || flags.transport === "ws"
        ? flags.url ??
          `${flags.caCert ? "https" : "http"}://${hostForUrl(flags.host)}:${flags.port}/connect`
        : undefined,
      caCerts: flags.caCert ? [await Deno.readTextFile(flags.caCert)] : undefined,
      pattern: flags.pattern,
      versions: flags.protocol ? [flags.protocol] : undefined,
      deviceId: me,
      keypair: identity.keypair,
      serverKey: resolved.key,
      prologue: flags.prologue,
      user: {
        ...(flags.handle ? { handle: flags.handle } : {}),
        ...(flags.displayName ? { display_name: flags.displayName } : {}),
      },
      reconnect: true,
      // Keys are looked up before every seal: a chat sends little, and a changed key must show.
      e2e: flags.e2e
        ? { trust: await openTrustStore(trustFileFor(keyFile)), directoryTtlMs: 0 }
        : false,
      pairingCode: flags.pair,
    };
    // Server key rotations (PROTOCOL.md "Server key catalog"): keys learnt from a catalog signed
    // by the federation key are pinned per address and tried first, the given key after them.
    const address = options.url ?? `${flags.host}:${flags.port}`;
    const pinFile = serverPinFileFor(keyFile);
    const pinned = await readServerPin(pinFile, address);
    const federationKey = flags.federationKey?.trim().toLowerCase() ?? resolved.federationKey ??
      pinned?.federation_key;
    let keySource = source;
    if (pinned && federationKey !== undefined && pinned.federation_key === federationKey) {
      options.serverKey = pinned.server_key;
      options.nextServerKeys = [...new Set([...pinned.next_server_keys, resolved.key])]
        .filter((k) => k !== pinned.server_key);
      keySource = `${pinFile} (pinned after a key rotation)`;
    }
    if (federationKey !== undefined) options.federationKey = federationKey;
    io.out(`* connecting to ${address} (server key from ${keySource})`);
    client = await connect(options);
    if (federationKey !== undefined) {
      client.on("serverKey", (update) => {
        writeServerPin(pinFile, address, {
          server_key: update.serverKey,
          next_server_keys: update.nextServerKeys,
          federation_key: federationKey,
          updated_at: new Date().toISOString(),
        }).then(
          () => io.out(`* the server's key is now ${update.serverKey} (pinned in ${pinFile})`),
          (error) => io.err(`* the server's new key could not be pinned: ${error.message}`),
        );
      });
    }
    io.out(
      `* connected as ${me} (user ${client.user?.handle ?? "?"}, session ${client.session}, ` +
        `protocol v${client.protocolVersion})`,
    );
    if (flags.peer !== undefined && flags.peer.startsWith("@")) {
      // A user: every device of theirs, and this user's other devices get sync copies.
      channel = directChannelId(`@${client.user?.handle ?? me}`, flags.peer);
      peerLabel = flags.peer;
      await client.join(channel, [flags.peer]);
    } else if (flags.peer !== undefined) {
      channel = directChannelId(me, flags.peer);
      peerLabel = flags.peer;
      await client.join(channel, [me, flags.peer]);
    } else if (flags.group !== undefined) {
      channel = groupChannelId(flags.group);
      peerLabel = `group ${flags.group}`;
      if (flags.createGroup) {
        const members = [...new Set([me, ...flags.members])];
        await client.createGroup({ groupId: flags.group, members, relay: true });
        io.out(`* created group ${flags.group} with ${members.join(", ")}`);
      }
      await client.join(channel, [], { groupId: flags.group });
    } else {
      channel = flags.channel!;
      peerLabel = `channel ${channel}`;
      await client.join(channel, [...new Set([me, ...flags.members])]);
    }
    io.out(
      `* chatting with ${peerLabel} on channel ${channel}; type a line to send, /quit to leave`,
    );
    io.out(
      flags.e2e
        ? "* 🔒 end-to-end encrypted: only the other devices can read what you send " +
          "(/verify DEVICE compares safety numbers)"
        : "* ⚠ end-to-end encryption is OFF (--no-e2e): the server can read what you send",
    );
    if (flags.e2e && flags.peer !== undefined && !flags.peer.startsWith("@")) {
      // Pin the peer's key now, so /verify works before the first message.
      await client.e2e!.safetyNumber(flags.peer).catch(() => {});
    }
  } catch (error) {
    io.err(`error: ${describe(error)}`);
    return error instanceof UsageError || error instanceof KeystoreError ? 64 : 1;
  }
  return await chatLoop(client, channel, flags.group, io, identity);
}

/** A public key as the devices list shows it: 64 hex digits in groups of four. */
function fingerprintOf(key: Uint8Array): string {
  return bytesToHex(key).replace(/(.{4})(?=.)/g, "$1 ");
}

/** The chat's commands, one line each, as /help lists them. */
export const CHAT_COMMANDS = [
  "/quit (or /exit)           leave the chat",
  "/presence STATE            tell the channel your state (online, away, busy, …)",
  "/invite DEVICE [admin|member]  add a device to the group (in a --group chat)",
  "/verify DEVICE             show the safety number to compare with DEVICE's screen",
  "/verify DEVICE confirm     mark DEVICE's key verified once the numbers match",
  "/trust DEVICE              accept DEVICE's changed key (messages to it resume)",
  "/rotate-key                replace this device's key (proved to the server; queue kept)",
  "/devices                   list this user's devices (keys, who paired them)",
  "/link                      print a pairing code for a new device of this user",
  "/unlink DEVICE             revoke another device of this user (cut off everywhere)",
  "/help                      this list",
];

async function chatLoop(
  client: Client,
  channel: number,
  group: string | undefined,
  io: ChatIo,
  identity: DeviceIdentity,
): Promise<number> {
  const me = client.deviceId;
  const inflight = new Set<Promise<unknown>>();
  const track = (p: Promise<unknown>) => {
    inflight.add(p);
    p.finally(() => inflight.delete(p));
  };
  const awaiting = new Map<string, string>(); // message id → first words, for receipts
  const presence = new Map<string, string>(); // "channel peer" → the state shown last
  let connections = 1;

  client.on("disconnected", (e) => io.out(`* connection lost (${e.title}); reconnecting…`));
  client.on("connected", (c) => {
    if (++connections > 1) io.out(`* reconnected (session ${c.session})`);
  });
  client.on("error", (e) => io.err(`! ${e.title}: ${e.detail}`));
  const e2e = client.e2e;
  e2e?.on(
    "key-pinned",
    (e) => io.out(`* 🔒 ${e.device}: key pinned on first use (not verified: /verify ${e.device})`),
  );
  e2e?.on("device-added", (e) => {
    const who = e.own ? "your user" : `user ${e.handle ? "@" + e.handle : e.user}`;
    const by = e.pairedBy ? ` (paired by ${e.pairedBy})` : "";
    io.err(
      `! 🔑 ${who} has a new device ${e.device}${by}, key ${fingerprintOf(e.key)}: ` +
        `what you send to ${e.own ? "your other devices" : "that user"} is sealed to it too; ` +
        `if ${e.own ? "you did not add it, /unlink it" : "they did not add it, warn them"} ` +
        `(/verify ${e.device})`,
    );
  });
  e2e?.on("key-changed", (e) => {
    if (e.wasVerified) {
      io.err(
        `!!! WARNING: the VERIFIED key of ${e.device} CHANGED. Someone may be impersonating ` +
          `${e.device}. Nothing is sealed to the new key and nothing sealed with it is shown. ` +
          `Check with ${e.device} out of band (/verify ${e.device}), then /trust ${e.device} ` +
          "only if they really changed their key.",
      );
    } else {
      io.err(
        `! the key of ${e.device} changed: nothing is sealed to it and its messages are held ` +
          `until you accept it with /trust ${e.device} (compare /verify ${e.device} first)`,
      );
    }
  });
  /** Sends chat bytes: sealed unless --no-e2e. */
  const sendBytes = (ch: number, bytes: Uint8Array) =>
    e2e ? client.sendSealed(ch, bytes) : client.send(ch, bytes);

  const receiving = (async () => {
    for await (const m of client.messages()) show(m);
  })();

  function show(m: InboundMessage): void {
    const where = m.channel === channel ? "" : `[channel ${m.channel}] `;
    // Who sent it is what the server authenticated (its sender stamp), never a name from the
    // payload, which any member could write.
    const sender = m.sender ?? "(sender unknown)";
    switch (m.kind) {
      case "MSG": {
        let bytes = m.payload;
        let lock = "";
        if (e2e) {
          if (m.sealed && m.plaintext) {
            bytes = m.plaintext;
            lock = m.verified ? "🔒✔ " : "🔒 ";
          } else if (m.sealed) {
            refusedMessage(m.e2eError, where);
            return;
          } else {
            lock = "⚠ unencrypted ";
          }
        }
        // Sealed: the stamp was checked against the envelope, whose key proved the sender.
        const envelope = decodeEnvelope(bytes);
        if ("raw" in envelope) {
          io.out(`${clock(m.receivedAt)} ${where}${lock}${sender}: ${envelope.raw}`);
        } else if (envelope.kind === "receipt") {
          const words = awaiting.get(envelope.id);
          if (words !== undefined) {
            awaiting.delete(envelope.id);
            io.out(`  ✓✓ "${words}" delivered to ${sender}`);
          }
        } else {
          const sent = new Date(envelope.sent_at);
          io.out(
            `${clock(isNaN(sent.getTime()) ? m.receivedAt : sent)} ${where}${lock}${sender}: ` +
              envelope.text,
          );
          track(
            sendBytes(
              m.channel,
              encodeEnvelope({ v: 1, kind: "receipt", id: envelope.id, from: me }),
            )
              .catch(() => {}), // a lost receipt only costs the sender a tick mark
          );
        }
        return;
      }
      case "PRESENCE": {
        // The server tells the channel's members when a peer comes online, changes its state
        // or goes offline; on a peer-to-peer channel it also relays where a peer is seen from.
        const who = m.peer ?? "peer";
        if (m.candidate !== undefined) {
          io.out(`* ${where}${who} can be reached directly at ${m.candidate}`);
          return;
        }
        // The same state may be told twice (on connect and on join): show changes only.
        const key = `${m.channel} ${who}`;
        if (m.state === undefined || presence.get(key) === m.state) return;
        presence.set(key, m.state);
        if (m.state === "offline") {
          io.out(`* ${where}${who} went offline`);
        } else {
          io.out(`* ${where}${who} is ${m.state}`);
        }
        return;
      }
      case "TYPING": {
        io.out(`* ${where}${sender} is typing…`);
        return;
      }
      default:
        io.out(
          `* ${where}${m.kind} ${
            m.json !== undefined ? JSON.stringify(m.json) : `(${m.payload.length} bytes)`
          }`,
        );
    }
  }

  function refusedMessage(error: E2EError | null | undefined, where: string): void {
    if (!error) return;
    const who = error.device ? ` from ${error.device}` : "";
    if (error.code === "replayed") {
      io.out(`* ${where}a repeated copy of a message${who} was ignored`);
    } else if (error.code === "key-changed") {
      io.err(`! ${where}a message${who} sealed with a new key is held: /trust ${error.device}`);
    } else {
      io.err(
        `! ${where}a message${who} was refused and is not shown (${error.code}): ${error.message}`,
      );
    }
  }

  function command(line: string): boolean {
    const [name, ...args] = line.trim().split(/\s+/);
    switch (name) {
      case "/quit":
      case "/exit":
        return false;
      case "/help":
        for (const line of CHAT_COMMANDS) io.out(`* ${line}`);
        return true;
      case "/verify": {
        if (!e2e || !args[0]) {
          io.err(e2e ? "! /verify DEVICE [confirm]" : "! /verify needs end-to-end encryption");
          return true;
        }
        const device = args[0];
        if (args[1] === "confirm") {
          track(
            e2e.setVerified(device).then(
              () => io.out(`* 🔒✔ ${device}'s key is verified`),
              (e) => io.err(`! verify: ${describe(e)}`),
            ),
          );
          return true;
        }
        track(
          e2e.safetyNumber(device).then((number) => {
            const groups = number.split(" ");
            const state = e2e.trust.get(device)?.verified ? "verified ✔" : "not verified";
            io.out(
              `* safety number with ${device} (${state}); compare it with ${device}'s screen:`,
            );
            io.out(`    ${groups.slice(0, 6).join(" ")}`);
            io.out(`    ${groups.slice(6).join(" ")}`);
            io.out(`* when they match exactly, type /verify ${device} confirm`);
          }, (e) => io.err(`! verify: ${describe(e)}`)),
        );
        return true;
      }
      case "/trust": {
        if (!e2e || !args[0]) {
          io.err(e2e ? "! /trust DEVICE" : "! /trust needs end-to-end encryption");
          return true;
        }
        const device = args[0];
        track(
          e2e.acceptKey(device).then((held) => {
            io.out(`* 🔒 now trusting the new key of ${device} (not verified: /verify ${device})`);
            for (const h of held) {
              show({ ...h, receivedAt: new Date() } as unknown as InboundMessage);
            }
          }, (e) => io.err(`! trust: ${describe(e)}`)),
        );
        return true;
      }
      case "/devices":
        track(
          client.devices().then(
            (answer) => {
              const list = (answer.devices ?? []) as Record<string, unknown>[];
              io.out(`* ${answer.count} of at most ${answer.max_devices} devices:`);
              for (const d of list) {
                const seen = d.last_seen_at ? `seen ${d.last_seen_at}` : "never seen";
                const paired = d.paired_by ? `, paired by ${d.paired_by}` : "";
                io.out(
                  `  ${d.current ? "*" : " "} ${d.device} ${d.status}, created ${d.created_at}, ` +
                    `${seen}${paired}\n      key ${d.fingerprint}`,
                );
              }
            },
            (e) => io.err(`! devices: ${describe(e)}`),
          ),
        );
        return true;
      case "/link":
        track(
          client.pairCode().then(
            (answer) =>
              io.out(
                `* pairing code ${answer.code} (valid ${answer.expires_in} s, once): on the new ` +
                  `device run  deno task client --handle ${
                    (answer.user as { handle?: string } | undefined)?.handle ?? "HANDLE"
                  } --pair ${answer.code} …`,
              ),
            (e) => io.err(`! link: ${describe(e)}`),
          ),
        );
        return true;
      case "/unlink":
        if (!args[0]) {
          io.err("! /unlink DEVICE (see /devices)");
          return true;
        }
        track(
          client.unlink(args[0]).then(
            () => io.out(`* ${args[0]} is unlinked: revoked and disconnected`),
            (e) => io.err(`! unlink: ${describe(e)}`),
          ),
        );
        return true;
      case "/presence":
        track(
          client.presence(args[0] ?? "online").then(
            () => io.out(`* presence set to ${args[0] ?? "online"}`),
            (e) => io.err(`! presence: ${describe(e)}`),
          ),
        );
        return true;
      case "/rotate-key":
        // The new key is proved from this session, then written over the key file.
        track(
          client.rotateKey().then(async (keypair) => {
            identity = await replaceIdentityKey(identity, keypair);
            io.out(`* device key rotated; new public key ${bytesToHex(keypair.publicKey)}`);
          }, (e) => io.err(`! rotate-key: ${describe(e)}`)),
        );
        return true;
      case "/invite": {
        if (!args[0] || !group) {
          io.err("! /invite DEVICE [admin|member] works in a --group chat");
          return true;
        }
        const role = args[1] === "admin" ? "admin" : "member";
        track(
          client.invite(group, args[0], role).then(
            () => io.out(`* invited ${args[0]} as ${role}`),
            (e) => io.err(`! invite: ${describe(e)}`),
          ),
        );
        return true;
      }
      default:
        io.err(`! unknown command ${name}; /help lists them`);
        return true;
    }
  }

  let code = 0;
  const closed = client.closed.then((error) => {
    if (error) {
      io.err(`! disconnected for good: ${describe(error)}`);
      code = 1;
    }
  });
  // A fatal disconnect ends the chat at once, without waiting for the next line of input.
  const input = lines(io.stdin);
  const gone = client.closed.then((error) => (error ? "gone" as const : null));
  while (true) {
    const next = await Promise.race([
      input.next(),
      gone.then((g) => g ?? new Promise<never>(() => {})),
    ]);
    if (next === "gone") break;
    if (next.done) break;
    const line = next.value;
    if (line.trim() === "") continue;
    if (line.startsWith("/")) {
      if (!command(line)) break;
      continue;
    }
    const envelope: TextEnvelope = {
      v: 1,
      kind: "text",
      id: messageId(),
      from: me,
      sent_at: new Date().toISOString(),
      text: line,
    };
    awaiting.set(envelope.id, line.length > 24 ? `${line.slice(0, 23)}…` : line);
    track(
      sendBytes(channel, encodeEnvelope(envelope)).then(
        (ack) => io.out(`  ${e2e ? "🔒 " : ""}✓ sent (seq ${ack.ack})`),
        (e) => {
          awaiting.delete(envelope.id);
          io.err(`! not sent: ${describe(e)}`);
        },
      ),
    );
    if (client.closeError) break;
  }
  // Let in-flight sends get their ACKs (bounded), then leave.
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    Promise.allSettled([...inflight]),
    new Promise((resolve) => (timer = setTimeout(resolve, 5000))),
  ]);
  clearTimeout(timer);
  await client.close();
  await receiving;
  await closed;
  return code;
}

/** Splits a byte stream into lines (without the line ending). */
export async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let buffer = "";
  const decoder = new TextDecoder();
  for await (const chunk of stream) {
    buffer += decoder.decode(chunk, { stream: true });
    let newline: number;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      yield buffer.slice(0, newline).replace(/\r$/, "");
      buffer = buffer.slice(newline + 1);
    }
  }
  buffer += decoder.decode();
  if (buffer !== "") yield buffer;
}

function clock(date: Date): string {
  return date.toTimeString().slice(0, 8);
}

function hostForUrl(host: string): string {
  return host.includes(":") ? `[${host}]` : host;
}

function describe(error: unknown): string {
  if (error instanceof E2EError) {
    if (error.code === "key-changed") {
      return `${error.message} (/verify ${error.device}, then /trust ${error.device})`;
    }
    return `${error.message} (${error.code})`;
  }
  if (error instanceof CommuCatError) {
    return `${error.title} (${error.status})${error.detail ? `: ${error.detail}` : ""}`;
  }
  return error instanceof Error ? error.message : String(error);
}

/** Writes a whole line synchronously (stdout may take it in pieces). */
function writeLine(target: { writeSync(p: Uint8Array): number }, line: string): void {
  const bytes = new TextEncoder().encode(line + "\n");
  let offset = 0;
  while (offset < bytes.length) offset += target.writeSync(bytes.subarray(offset));
}

if (import.meta.main) {
  const code = await runChat(Deno.args, {
    stdin: Deno.stdin.readable,
    out: (line) => writeLine(Deno.stdout, line),
    err: (line) => writeLine(Deno.stderr, line),
  });
  Deno.exit(code);
}
