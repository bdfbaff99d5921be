/**
 * Loads the one typed, validated configuration object.
 *
 * Sources, lowest to highest precedence: built-in defaults, `commucat.toml` (the file named by
 * COMMUCAT_CONFIG, else `./commucat.toml` when present), then `COMMUCAT_*` environment variables.
 * Every wrong value is reported with its key, where it came from and what was expected; all
 * problems are collected and reported together so an operator fixes them in one pass.
 */
import leven from "leven";
import { parse as parseToml } from "smol-toml";
import { ed25519, x25519 } from "@noble/curves/ed25519.js";
import { blake3 } from "@noble/hashes/blake3.js";
import { bytesToHex, hexToBytes, randomBytes } from "@noble/hashes/utils.js";
import { isAbsolute, join, resolve } from "node:path";
import { ProblemError } from "../protocol/errors.ts";
import { toDomain } from "../protocol/ids.ts";
import { isLoopbackHost } from "../protocol/net.ts";
import type { Config, LedgerMode, RetentionConfig, StaticPeer } from "./config_types.ts";

export type { Config, LedgerMode, StaticPeer } from "./config_types.ts";

/** A configuration that cannot be used; `problems` lists each wrong value on its own. */
export class ConfigError extends ProblemError {
  readonly problems: string[];
  constructor(problems: string | string[]) {
    const list = typeof problems === "string" ? [problems] : problems;
    super(
      "Invalid Configuration",
      500,
      list.length === 1
        ? list[0]
        : `${list.length} configuration problems:\n  ${list.join("\n  ")}`,
      { fatal: true },
    );
    this.name = "ConfigError";
    this.problems = list;
  }
}

/** One configuration key: where it lives, its variable, its default and its meaning. */
export interface ConfigKey {
  section: string;
  key: string;
  env: string;
  /** The default as an operator would write it, or "(none)". */
  default: string;
  meaning: string;
  /** Values never echoed in error messages. */
  secret?: boolean;
}

/** Every key the file and the environment accept (docs and tests are checked against it). */
export const CONFIG_KEYS: readonly ConfigKey[] = [
  k(
    "server",
    "bind",
    "COMMUCAT_BIND",
    "127.0.0.1:8443",
    "HTTP listener: /connect, health, metrics, federation",
  ),
  k(
    "server",
    "tcp_bind",
    "COMMUCAT_TCP_BIND",
    "127.0.0.1:9443",
    "raw CCP-1 TCP (TLS when a certificate is set) listener",
  ),
  k("server", "console_bind", "COMMUCAT_CONSOLE_BIND", "127.0.0.1:8080", "admin console listener"),
  k(
    "server",
    "tls_cert",
    "COMMUCAT_TLS_CERT",
    "(none)",
    "PEM certificate file; set together with tls_key",
  ),
  k(
    "server",
    "tls_key",
    "COMMUCAT_TLS_KEY",
    "(none)",
    "PEM private key file; set together with tls_cert",
  ),
  k(
    "server",
    "domain",
    "COMMUCAT_DOMAIN",
    "localhost",
    "this server's domain (device@domain, federation origin)",
  ),
  k(
    "server",
    "auto_approve_devices",
    "COMMUCAT_AUTO_APPROVE_DEVICES",
    "true",
    "activate new devices at first handshake (false: they wait for approval)",
  ),
  k(
    "server",
    "keepalive",
    "COMMUCAT_KEEPALIVE",
    "60",
    "seconds of silence before an idle connection is closed",
  ),
  k("server", "data_dir", "COMMUCAT_DATA_DIR", "./data", "embedded database and generated keys"),
  k(
    "server",
    "handshake_timeout",
    "COMMUCAT_HANDSHAKE_TIMEOUT",
    "10",
    "seconds allowed to finish HELLO/AUTH",
  ),
  k(
    "server",
    "allow_plaintext_v1",
    "COMMUCAT_ALLOW_PLAINTEXT_V1",
    "false",
    "allow protocol v1 (no tunnel encryption) without TLS from non-loopback peers",
  ),
  k(
    "server",
    "allowed_origins",
    "COMMUCAT_ALLOWED_ORIGINS",
    "(same origin only)",
    'origins whose pages may open /connect as a WebSocket: array or "a,b"; "*" allows any',
  ),
  k(
    "storage",
    "postgres_dsn",
    "COMMUCAT_PG_DSN",
    "(embedded database in data_dir/pg)",
    "PostgreSQL URL postgres://user:password@host:port/db",
    true,
  ),
  k(
    "storage",
    "redis_url",
    "COMMUCAT_REDIS_URL",
    "(in-memory store)",
    "Redis URL redis://[:password@]host:port/db",
    true,
  ),
  k(
    "crypto",
    "noise_private",
    "COMMUCAT_NOISE_PRIVATE",
    "(generated into data_dir/keys.json)",
    "X25519 static private key, 64 hex characters",
    true,
  ),
  k(
    "crypto",
    "noise_public",
    "COMMUCAT_NOISE_PUBLIC",
    "(derived from noise_private)",
    "X25519 public key; when set it must match noise_private",
  ),
  k(
    "crypto",
    "noise_next",
    "COMMUCAT_NOISE_NEXT",
    "(none)",
    "X25519 private key that replaces noise_private next: announced in the key catalog, accepted",
    true,
  ),
  k(
    "crypto",
    "noise_previous",
    "COMMUCAT_NOISE_PREVIOUS",
    "(none)",
    "X25519 private key noise_private replaced: accepted until noise_previous_not_after",
    true,
  ),
  k(
    "crypto",
    "noise_previous_not_after",
    "COMMUCAT_NOISE_PREVIOUS_NOT_AFTER",
    "(none)",
    "RFC 3339 time ending the previous key's grace window (required with noise_previous)",
  ),
  k(
    "crypto",
    "federation_seed",
    "COMMUCAT_FEDERATION_SEED",
    "(generated into data_dir/keys.json)",
    "hex seed (16-1024 bytes) of the Ed25519 federation key, BLAKE3(seed)",
    true,
  ),
  k(
    "crypto",
    "prologue",
    "COMMUCAT_NOISE_PROLOGUE",
    "commucat",
    "Noise prologue; client and server must agree",
  ),
  k(
    "federation",
    "peers",
    "COMMUCAT_FEDERATION_PEERS",
    "(none)",
    'trusted peers: array of {domain, endpoint, public_key} or "domain,endpoint,hexkey;…"',
  ),
  k("ledger", "mode", "COMMUCAT_LEDGER", "null", "audit ledger: null, debug (log) or file"),
  k(
    "ledger",
    "target",
    "COMMUCAT_LEDGER_TARGET",
    "(none)",
    "ledger file path (required when mode is file)",
  ),
  k("limits", "presence_ttl", "COMMUCAT_PRESENCE_TTL", "60", "seconds a presence record lives"),
  k(
    "limits",
    "relay_ttl",
    "COMMUCAT_RELAY_TTL",
    "604800",
    "seconds an offline envelope waits in the relay queue (7 days)",
  ),
  k(
    "limits",
    "outbound_queue_frames",
    "COMMUCAT_OUTBOUND_QUEUE_FRAMES",
    "4096",
    "frames a connection may have queued before it counts as too slow",
  ),
  k(
    "limits",
    "outbound_queue_bytes",
    "COMMUCAT_OUTBOUND_QUEUE_BYTES",
    "8388608",
    "bytes a connection may have queued before it counts as too slow (8 MiB)",
  ),
  k(
    "limits",
    "max_inflight",
    "COMMUCAT_MAX_INFLIGHT",
    "1024",
    "unacknowledged frames per connection (replay window)",
  ),
  k(
    "limits",
    "handshakes_per_minute",
    "COMMUCAT_HANDSHAKES_PER_MINUTE",
    "300",
    "handshakes one client address may start per minute (all nodes together)",
  ),
  k(
    "limits",
    "registrations_per_hour",
    "COMMUCAT_REGISTRATIONS_PER_HOUR",
    "20",
    "new users and devices one client address may register per hour",
  ),
  k(
    "limits",
    "frames_per_second",
    "COMMUCAT_FRAMES_PER_SECOND",
    "20000",
    "frames one device may send per second",
  ),
  k(
    "limits",
    "bytes_per_second",
    "COMMUCAT_BYTES_PER_SECOND",
    "33554432",
    "bytes one device may send per second (32 MiB)",
  ),
  k(
    "limits",
    "messages_burst",
    "COMMUCAT_MESSAGES_BURST",
    "60",
    "messages one device may send to one recipient at once (leaky bucket size)",
  ),
  k(
    "limits",
    "messages_per_minute",
    "COMMUCAT_MESSAGES_PER_MINUTE",
    "60",
    "messages per minute that bucket drains (1 per second)",
  ),
  k(
    "limits",
    "joins_per_minute",
    "COMMUCAT_JOINS_PER_MINUTE",
    "60",
    "JOINs one device may send per minute",
  ),
  k(
    "limits",
    "sign_in_failures_per_hour",
    "COMMUCAT_SIGN_IN_FAILURES_PER_HOUR",
    "20",
    "wrong console tokens one address may try per hour (the right token always works)",
  ),
  k(
    "limits",
    "unauthenticated_per_address",
    "COMMUCAT_UNAUTHENTICATED_PER_ADDRESS",
    "64",
    "connections one address may hold open before their handshake completed (per node)",
  ),
  k(
    "limits",
    "unauthenticated_total",
    "COMMUCAT_UNAUTHENTICATED_TOTAL",
    "2048",
    "connections a node holds open before their handshake completed",
  ),
  k(
    "limits",
    "memory_budget",
    "COMMUCAT_MEMORY_BUDGET",
    "2147483648",
    "resident bytes above which a node refuses new connections (2 GiB)",
  ),
  k(
    "limits",
    "http_connections_per_address",
    "COMMUCAT_HTTP_CONNECTIONS_PER_ADDRESS",
    "256",
    "HTTP connections one address may hold open (per node)",
  ),
  k(
    "limits",
    "http_connections_total",
    "COMMUCAT_HTTP_CONNECTIONS_TOTAL",
    "8192",
    "HTTP connections a node holds open",
  ),
  k(
    "limits",
    "http_header_timeout",
    "COMMUCAT_HTTP_HEADER_TIMEOUT",
    "10",
    "seconds an HTTP client has to send its request headers",
  ),
  k(
    "limits",
    "http_body_timeout",
    "COMMUCAT_HTTP_BODY_TIMEOUT",
    "30",
    "seconds an HTTP request body may stay silent (federation: to arrive in full)",
  ),
  k(
    "retention",
    "key_events_days",
    "COMMUCAT_RETENTION_KEY_EVENTS_DAYS",
    "365",
    "days a device key event stays in the database before it is archived and deleted (0: keep)",
  ),
  k(
    "retention",
    "archive",
    "COMMUCAT_RETENTION_ARCHIVE",
    "(data_dir/archive)",
    "where archived key events go: a directory, or s3://bucket[/prefix]",
  ),
  k(
    "retention",
    "s3_endpoint",
    "COMMUCAT_RETENTION_S3_ENDPOINT",
    "(none)",
    "S3-compatible service URL (https://; http:// only for loopback); required with s3://",
  ),
  k("retention", "s3_region", "COMMUCAT_RETENTION_S3_REGION", "us-east-1", "S3 signing region"),
  k(
    "retention",
    "s3_access_key_id",
    "COMMUCAT_RETENTION_S3_ACCESS_KEY_ID",
    "(none)",
    "S3 access key id; required with s3://",
  ),
  k(
    "retention",
    "s3_secret_access_key",
    "COMMUCAT_RETENTION_S3_SECRET_ACCESS_KEY",
    "(none)",
    "S3 secret access key; required with s3://",
    true,
  ),
  k(
    "retention",
    "interval",
    "COMMUCAT_RETENTION_INTERVAL",
    "3600",
    "seconds between retention passes (one node at a time)",
  ),
  k(
    "retention",
    "chunk_events",
    "COMMUCAT_RETENTION_CHUNK_EVENTS",
    "10000",
    "key events per archive chunk (1..100000)",
  ),
  k(
    "limits",
    "max_conversations_per_device",
    "COMMUCAT_MAX_CONVERSATIONS_PER_DEVICE",
    "512",
    "channel ids a device may bind to conversations at once",
  ),
  k(
    "limits",
    "max_members_per_join",
    "COMMUCAT_MAX_MEMBERS_PER_JOIN",
    "256",
    "devices one JOIN may list (the joiner included); groups are bounded by their roster",
  ),
  k(
    "limits",
    "max_devices_per_user",
    "COMMUCAT_MAX_DEVICES_PER_USER",
    "8",
    "devices (pending or active) one user may hold; an operator may set another limit per user",
  ),
  k(
    "limits",
    "pairing_codes_per_hour",
    "COMMUCAT_PAIRING_CODES_PER_HOUR",
    "10",
    "pairing codes one user, and one client address, may ask for per hour",
  ),
  k(
    "limits",
    "pairing_attempts_per_hour",
    "COMMUCAT_PAIRING_ATTEMPTS_PER_HOUR",
    "20",
    "handshakes with a pairing code one client address may start per hour",
  ),
  k(
    "limits",
    "route_idle_ttl",
    "COMMUCAT_ROUTE_IDLE_TTL",
    "2592000",
    "seconds a conversation route lives without use or a connected member (30 days)",
  ),
  k(
    "limits",
    "presence_fanout",
    "COMMUCAT_PRESENCE_FANOUT",
    "4096",
    "presence copies one announcement may send (over all of the device's conversations)",
  ),
  k(
    "limits",
    "live_ack_timeout_ms",
    "COMMUCAT_LIVE_ACK_TIMEOUT_MS",
    "1000",
    "milliseconds a live copy may wait for its recipient's ACK before it is queued durably",
  ),
  k(
    "admin",
    "token",
    "COMMUCAT_ADMIN_TOKEN",
    "(none)",
    "bearer token required by GET /metrics when set",
    true,
  ),
];

function k(
  section: string,
  key: string,
  env: string,
  dflt: string,
  meaning: string,
  secret = false,
): ConfigKey {
  return { section, key, env, default: dflt, meaning, secret };
}

/** Variables read outside loadConfig, listed so the sample and docs stay complete. */
export const OTHER_VARIABLES: readonly { env: string; meaning: string }[] = [
  {
    env: "COMMUCAT_CONFIG",
    meaning: "path of the TOML file (default ./commucat.toml when present)",
  },
  { env: "COMMUCAT_LOG_LEVEL", meaning: "debug, info (default), warn or error" },
  { env: "COMMUCAT_TEST_PG_DSN", meaning: "tests: run storage tests against this PostgreSQL too" },
  { env: "COMMUCAT_TEST_REDIS_URL", meaning: "tests: run storage tests against this Redis too" },
  { env: "COMMUCAT_HOME", meaning: "chat client: where device keys live (default ~/.commucat)" },
  { env: "COMMUCAT_CHROMIUM", meaning: "tests and screenshots: the Chromium executable" },
  {
    env: "COMMUCAT_REQUIRE_BROWSER",
    meaning: "tests: 1 makes a missing Chromium a failure instead of ignored browser tests",
  },
  { env: "COMMUCAT_BENCH_PG_DSN", meaning: "benchmarks: the PostgreSQL to measure against" },
  { env: "COMMUCAT_BENCH_REDIS_URL", meaning: "benchmarks: the Redis to measure against" },
];

/**
 * Warnings for COMMUCAT_* variables no part of CommuCat reads (a typo is otherwise silently
 * ignored), each with the closest known name when one is near.
 */
export function unknownVariableWarnings(env: Record<string, string | undefined>): string[] {
  const known = [...CONFIG_KEYS.map((k) => k.env), ...OTHER_VARIABLES.map((v) => v.env)];
  const names = new Set(known);
  return Object.keys(env)
    .filter((name) => name.startsWith("COMMUCAT_") && !names.has(name))
    .sort()
    .map((name) => {
      let best: string | null = null;
      let bestDistance = 3;
      for (const candidate of known) {
        const d = leven(name, candidate);
        if (d < bestDistance) [best, bestDistance] = [candidate, d];
      }
      const hint = best ? ` (did you mean "${best}"?)` : "";
      return `warning: unknown environment variable ${name}${hint}; it is ignored`;
    });
}

export interface LoadConfigOptions {
  /** Environment to read (default: the process environment). */
  env?: Record<string, string | undefined>;
  /** TOML file: a path, `null` for none, or omitted for COMMUCAT_CONFIG / ./commucat.toml. */
  file?: string | null;
  /** Directory relative paths are resolved against (default: the working directory). */
  cwd?: string;
}

/** Name of the generated key file inside data_dir. */
export const KEY_FILE_NAME = "keys.json";

/** A raw value and a human description of where it came from. */
interface Raw {
  value: unknown;
  /** e.g. `[server] keepalive in ./commucat.toml` or `COMMUCAT_KEEPALIVE (environment)` */
  where: string;
  secret: boolean;
}

/** Thrown by a value parser; the loader adds the key and the source. */
class Expected extends Error {
  constructor(readonly expected: string, readonly showValue = true) {
    super(expected);
  }
}

/** Like Expected, for a value with parts (peers): the text says itself what was wrong. */
class Invalid extends Expected {
  constructor(text: string) {
    super(text, false);
  }
}

/**
 * Loads, validates and completes the configuration. With no Noise key or federation seed
 * configured, generates the missing ones once into `<data_dir>/keys.json` (mode 0600) and
 * reuses them on later starts. Throws ConfigError listing every problem found.
 */
export async function loadConfig(options: LoadConfigOptions = {}): Promise<Config> {
  const env = options.env ?? Deno.env.toObject();
  const cwd = options.cwd ?? Deno.cwd();
  const problems: string[] = [];

  const { table, source, display } = await readConfigFile(options.file, env, cwd);
  if (table) problems.push(...checkKnownKeys(table, display));

  const specByKey = new Map(CONFIG_KEYS.map((spec) => [`${spec.section}.${spec.key}`, spec]));
  function raw(section: string, key: string): Raw | undefined {
    const spec = specByKey.get(`${section}.${key}`)!;
    const fromEnv = env[spec.env];
    if (fromEnv !== undefined && fromEnv !== "") {
      return { value: fromEnv, where: `${spec.env} (environment)`, secret: !!spec.secret };
    }
    const sectionTable = table?.[section];
    if (isTable(sectionTable) && key in sectionTable) {
      const value = sectionTable[key];
      // An empty string in the file means "not set", as in the environment.
      if (value === "") return undefined;
      return { value, where: `[${section}] ${key} in ${display}`, secret: !!spec.secret };
    }
    return undefined;
  }

  function get<T>(section: string, key: string, parse: (v: unknown) => T, fallback: T): T {
    const found = raw(section, key);
    if (!found) return fallback;
    try {
      return parse(found.value);
    } catch (err) {
      if (!(err instanceof Expected)) throw err;
      const shown = err.showValue && !found.secret ? `, got ${describeValue(found.value)}` : "";
      const body = err instanceof Invalid ? err.expected : `expected ${err.expected}${shown}`;
      problems.push(`invalid ${found.where}: ${body}`);
      return fallback;
    }
  }
  const where = (section: string, key: string) => raw(section, key)?.where;

  const seconds = (max: number) => (v: unknown) =>
    parseInteger(v, 1, max, `a positive integer number of seconds (1..${max})`);
  const count = (max: number, what: string) => (v: unknown) =>
    parseInteger(v, 1, max, `a positive integer number of ${what} (1..${max})`);
  const path = (v: unknown) => resolve(cwd, parseNonEmptyString(v, "a file path"));

  const domain = get("server", "domain", parseDomain, "localhost");
  const server: Config["server"] = {
    bind: get("server", "bind", parseBind, { hostname: "127.0.0.1", port: 8443 }),
    tcpBind: get("server", "tcp_bind", parseBind, { hostname: "127.0.0.1", port: 9443 }),
    consoleBind: get("server", "console_bind", parseBind, { hostname: "127.0.0.1", port: 8080 }),
    tlsCert: get("server", "tls_cert", path, null as string | null),
    tlsKey: get("server", "tls_key", path, null as string | null),
    domain,
    autoApproveDevices: get("server", "auto_approve_devices", parseBoolean, true),
    keepalive: get("server", "keepalive", seconds(86_400), 60),
    dataDir: get("server", "data_dir", path, resolve(cwd, "data")),
    handshakeTimeout: get("server", "handshake_timeout", seconds(600), 10),
    allowPlaintextV1: get("server", "allow_plaintext_v1", parseBoolean, false),
    allowedOrigins: get("server", "allowed_origins", parseOrigins, [] as string[]),
  };
  if ((server.tlsCert === null) !== (server.tlsKey === null)) {
    const [set, missing] = server.tlsCert ? ["tls_cert", "tls_key"] : ["tls_key", "tls_cert"];
    problems.push(
      `[server] ${set} is set (${where("server", set)}) but [server] ${missing} is not: ` +
        "set both or neither",
    );
  }
  for (const key of ["tls_cert", "tls_key"] as const) {
    const file = key === "tls_cert" ? server.tlsCert : server.tlsKey;
    if (file) {
      const problem = await checkReadableFile(file);
      if (problem) problems.push(`invalid ${where("server", key)}: ${problem}`);
    }
  }

  const storage: Config["storage"] = {
    postgresDsn: get("storage", "postgres_dsn", parsePostgresDsn, null as string | null),
    redisUrl: get("storage", "redis_url", parseRedisUrl, null as string | null),
  };

  const noisePrivate = get("crypto", "noise_private", parseKey32, null as Uint8Array | null);
  const noisePublic = get("crypto", "noise_public", parseKey32, null as Uint8Array | null);
  const federationSeed = get("crypto", "federation_seed", parseSeed, null as Uint8Array | null);
  const noiseNext = get("crypto", "noise_next", parseKey32, null as Uint8Array | null);
  const noisePrevious = get("crypto", "noise_previous", parseKey32, null as Uint8Array | null);
  const noisePreviousNotAfter = get("crypto", "noise_previous_not_after", (v) => {
    const text = v instanceof Date ? v.toISOString() : parseNonEmptyString(v, "an RFC 3339 time");
    const date = new Date(text);
    if (!/^\d{4}-\d{2}-\d{2}T/.test(text) || Number.isNaN(date.getTime())) {
      throw new Expected("an RFC 3339 time such as 2026-12-08T00:00:00Z");
    }
    return date;
  }, null as Date | null);
  if ((noisePrevious === null) !== (noisePreviousNotAfter === null)) {
    const [set, missing] = noisePrevious
      ? ["noise_previous", "noise_previous_not_after"]
      : ["noise_previous_not_after", "noise_previous"];
    if (where("crypto", set)) {
      problems.push(
        `[crypto] ${set} is set (${where("crypto", set)}) but [crypto] ${missing} is not: ` +
          "the previous key needs the end of its grace window, and the other way round",
      );
    }
  }
  const prologue = get("crypto", "prologue", (v) => parseString(v, "a string"), "commucat");
  if (noisePublic && noisePrivate) {
    const derived = x25519.getPublicKey(noisePrivate);
    if (bytesToHex(derived) !== bytesToHex(noisePublic)) {
      problems.push(
        `[crypto] noise_public (${where("crypto", "noise_public")}) is not the X25519 public key ` +
          `of [crypto] noise_private (${where("crypto", "noise_private")}): the public key for ` +
          `that private key is ${bytesToHex(derived)} — set noise_public to it or remove it`,
      );
    }
  } else if (noisePublic && !noisePrivate && !problems.some((p) => p.includes("noise_private"))) {
    problems.push(
      `[crypto] noise_public is set (${where("crypto", "noise_public")}) without ` +
        "[crypto] noise_private: set both, or neither to use generated keys",
    );
  }

  const peers = get("federation", "peers", (v) => parsePeers(v, domain), [] as StaticPeer[]);

  const ledgerMode = get("ledger", "mode", parseLedgerMode, "null" as LedgerMode);
  const ledgerTarget = get("ledger", "target", path, null as string | null);
  if (ledgerMode === "file" && !ledgerTarget) {
    problems.push(
      `[ledger] mode is "file" (${where("ledger", "mode")}) but [ledger] target is not set: ` +
        "give the ledger file path in [ledger] target or COMMUCAT_LEDGER_TARGET",
    );
  }

  const limits: Config["limits"] = {
    presenceTtl: get("limits", "presence_ttl", seconds(86_400), 60),
    relayTtl: get("limits", "relay_ttl", seconds(31_536_000), 604_800),
    outboundQueueFrames: get(
      "limits",
      "outbound_queue_frames",
      count(1_048_576, "frames"),
      4096,
    ),
    outboundQueueBytes: get(
      "limits",
      "outbound_queue_bytes",
      count(1_073_741_824, "bytes"),
      8 * 1024 * 1024,
    ),
    maxInflight: get("limits", "max_inflight", count(65_536, "frames"), 1024),
    handshakesPerMinute: get(
      "limits",
      "handshakes_per_minute",
      count(1_000_000, "handshakes"),
      300,
    ),
    registrationsPerHour: get(
      "limits",
      "registrations_per_hour",
      count(1_000_000, "registrations"),
      20,
    ),
    framesPerSecond: get("limits", "frames_per_second", count(100_000_000, "frames"), 20_000),
    bytesPerSecond: get("limits", "bytes_per_second", count(17_179_869_184, "bytes"), 33_554_432),
    messagesBurst: get("limits", "messages_burst", count(1_000_000, "messages"), 60),
    messagesPerMinute: get("limits", "messages_per_minute", count(60_000_000, "messages"), 60),
    joinsPerMinute: get("limits", "joins_per_minute", count(1_000_000, "joins"), 60),
    signInFailuresPerHour: get(
      "limits",
      "sign_in_failures_per_hour",
      count(1_000_000, "failures"),
      20,
    ),
    unauthenticatedPerAddress: get(
      "limits",
      "unauthenticated_per_address",
      count(1_000_000, "connections"),
      64,
    ),
    unauthenticatedTotal: get(
      "limits",
      "unauthenticated_total",
      count(10_000_000, "connections"),
      2_048,
    ),
    memoryBudget: get(
      "limits",
      "memory_budget",
      count(1_125_899_906_842_624, "bytes"),
      2_147_483_648,
    ),
    httpConnectionsPerAddress: get(
      "limits",
      "http_connections_per_address",
      count(10_000_000, "connections"),
      256,
    ),
    httpConnectionsTotal: get(
      "limits",
      "http_connections_total",
      count(10_000_000, "connections"),
      8_192,
    ),
    httpHeaderTimeout: get("limits", "http_header_timeout", seconds(3_600), 10),
    httpBodyTimeout: get("limits", "http_body_timeout", seconds(3_600), 30),
    maxConversationsPerDevice: get(
      "limits",
      "max_conversations_per_device",
      count(65_536, "conversations"),
      512,
    ),
    maxMembersPerJoin: get("limits", "max_members_per_join", count(1024, "members"), 256),
    maxDevicesPerUser: get("limits", "max_devices_per_user", count(10_000, "devices"), 8),
    pairingCodesPerHour: get("limits", "pairing_codes_per_hour", count(1_000_000, "codes"), 10),
    pairingAttemptsPerHour: get(
      "limits",
      "pairing_attempts_per_hour",
      count(1_000_000, "attempts"),
      20,
    ),
    routeIdleTtl: get("limits", "route_idle_ttl", seconds(31_536_000), 2_592_000),
    presenceFanout: get("limits", "presence_fanout", count(1_048_576, "copies"), 4096),
    liveAckTimeoutMs: get("limits", "live_ack_timeout_ms", count(600_000, "milliseconds"), 1000),
  };

  const admin = { token: get("admin", "token", parseToken, null as string | null) };
  const retention = readRetention(get, where, problems, server.dataDir, path);

  if (problems.length > 0) throw new ConfigError(problems);

  const keys = await completeKeys(server.dataDir, noisePrivate, federationSeed);
  return {
    source,
    server,
    storage,
    crypto: {
      noisePrivate: keys.noisePrivate,
      noisePublic: x25519.getPublicKey(keys.noisePrivate),
      federationSeed: keys.federationSeed,
      noiseNext,
      noisePrevious,
      noisePreviousNotAfter,
      prologue,
      generatedKeyFile: keys.file,
      keysGeneratedNow: keys.generated,
    },
    federation: { peers },
    ledger: { mode: ledgerMode, target: ledgerTarget },
    limits,
    retention,
    admin,
  };
}

/**
 * The lines the server prints on start: the public keys and the file holding generated keys
 * ("generated keys kept in …" only on the start that generated them). Never includes a private
 * value.
 */
export function describeKeys(config: Config): string[] {
  const lines = [
    `noise static public key: ${bytesToHex(config.crypto.noisePublic)}`,
    `federation public key (Ed25519): ${
      bytesToHex(federationPublicKey(config.crypto.federationSeed))
    }`,
  ];
  const file = config.crypto.generatedKeyFile;
  if (file && config.crypto.keysGeneratedNow) {
    lines.push(`generated keys kept in ${file} (mode 0600; keep it private)`);
  } else if (file) {
    lines.push(`keys read from ${file}`);
  }
  return lines;
}

/** The Ed25519 federation public key for a seed (the secret is BLAKE3 of the seed). */
export function federationPublicKey(seed: Uint8Array): Uint8Array {
  return ed25519.getPublicKey(blake3(seed));
}

/** Fresh key material as hex, e.g. for printing a `[crypto]` section. */
export function generateKeys(): {
  noisePrivate: string;
  noisePublic: string;
  federationSeed: string;
} {
  const { secretKey, publicKey } = x25519.keygen();
  return {
    noisePrivate: bytesToHex(secretKey),
    noisePublic: bytesToHex(publicKey),
    federationSeed: bytesToHex(randomBytes(32)),
  };
}

// ---------------------------------------------------------------------------------------------
// The file

const SECTIONS: Record<string, Set<string>> = {};
for (const spec of CONFIG_KEYS) (SECTIONS[spec.section] ??= new Set()).add(spec.key);

async function readConfigFile(
  file: string | null | undefined,
  env: Record<string, string | undefined>,
  cwd: string,
): Promise<{ table: Record<string, unknown> | null; source: string | null; display: string }> {
  let display: string;
  let required: boolean;
  if (file === null) return { table: null, source: null, display: "" };
  if (file !== undefined) {
    display = file;
    required = true;
  } else if (env.COMMUCAT_CONFIG) {
    display = env.COMMUCAT_CONFIG;
    required = true;
  } else {
    display = "./commucat.toml";
    required = false;
  }
  const fullPath = isAbsolute(display) ? display : resolve(cwd, display);
  let text: string;
  try {
    text = await Deno.readTextFile(fullPath);
  } catch (err) {
    if (!required && err instanceof Deno.errors.NotFound) {
      return { table: null, source: null, display };
    }
    const from = file !== undefined ? "" : " (COMMUCAT_CONFIG)";
    throw new ConfigError(`cannot read config file ${display}${from}: ${(err as Error).message}`);
  }
  try {
    return { table: parseToml(text) as Record<string, unknown>, source: fullPath, display };
  } catch (err) {
    throw new ConfigError(`cannot parse config file ${display}: ${(err as Error).message}`);
  }
}

function checkKnownKeys(table: Record<string, unknown>, display: string): string[] {
  const problems: string[] = [];
  const sections = Object.keys(SECTIONS);
  for (const [section, value] of Object.entries(table)) {
    const keys = SECTIONS[section];
    if (!keys) {
      problems.push(
        `unknown ${isTable(value) ? "section" : "key"} "${section}" in ${display}` +
          suggest(section, sections) + `; known sections: ${sections.join(", ")}`,
      );
      continue;
    }
    if (!isTable(value)) {
      problems.push(`invalid [${section}] in ${display}: expected a table ([${section}] section)`);
      continue;
    }
    for (const key of Object.keys(value)) {
      if (!keys.has(key)) {
        problems.push(
          `unknown key "${key}" in [${section}] of ${display}` + suggest(key, [...keys]) +
            `; known keys: ${[...keys].join(", ")}`,
        );
      }
    }
  }
  return problems;
}

function suggest(name: string, candidates: string[]): string {
  let best: string | null = null;
  let bestDistance = 3;
  for (const candidate of candidates) {
    const d = leven(name.toLowerCase(), candidate);
    if (d < bestDistance) [best, bestDistance] = [candidate, d];
  }
  return best ? ` (did you mean "${best}"?)` : "";
}

function isTable(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value) &&
    !(value instanceof Date);
}

function describeValue(value: unknown): string {
  if (typeof value === "string") {
    return JSON.stringify(value.length > 80 ? value.slice(0, 77) + "…" : value);
  }
  if (typeof value === "number" || typeof value === "boolean" || typeof value === "bigint") {
    return String(value);
  }
  if (Array.isArray(value)) return "an array";
  if (value instanceof Date) return "a date";
  if (isTable(value)) return "a table";
  return typeof value;
}

// ---------------------------------------------------------------------------------------------
// Value parsers: each returns the value or throws Expected (the loader adds key and source).

function parseString(value: unknown, expected: string): string {
  if (typeof value !== "string") throw new Expected(expected);
  return value;
}

function parseNonEmptyString(value: unknown, expected: string): string {
  const text = parseString(value, expected).trim();
  if (text === "") throw new Expected(expected);
  return text;
}

function parseInteger(value: unknown, min: number, max: number, expected: string): number {
  let n: number;
  if (typeof value === "number") n = value;
  else if (typeof value === "bigint") n = Number(value);
  else if (typeof value === "string" && /^\s*\d+\s*$/.test(value)) n = Number(value);
  else throw new Expected(expected);
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new Expected(expected);
  return n;
}

/** true/false, "true"/"false", "1"/"0", "yes"/"no", "on"/"off" (any case), 1/0. */
export function parseBoolean(value: unknown): boolean {
  if (typeof value === "boolean") return value;
  if (value === 1 || value === 0) return value === 1;
  if (typeof value === "string") {
    const text = value.trim().toLowerCase();
    if (["true", "1", "yes", "on"].includes(text)) return true;
    if (["false", "0", "no", "off"].includes(text)) return false;
  }
  throw new Expected("a boolean (true/false, yes/no, 1/0)");
}

/** "host:port", "[ipv6]:port"; the port 0 asks the system for a free one. */
export function parseBind(value: unknown): { hostname: string; port: number } {
  const expected = 'an address "host:port" such as "127.0.0.1:8443" or "[::1]:8443"';
  if (typeof value !== "string") throw new Expected(expected);
  const text = value.trim();
  const match = /^(?:\[([0-9a-fA-F:.%\w]+)\]|([^\s:\[\]]+)):(\d{1,5})$/.exec(text);
  if (!match) throw new Expected(expected);
  const hostname = match[1] ?? match[2];
  const port = Number(match[3]);
  if (port > 65535) throw new Expected(`${expected} (port 0..65535)`);
  if (match[1] !== undefined && !match[1].includes(":")) throw new Expected(expected);
  if (match[2] !== undefined && !isHostname(hostname) && !isIpv4(hostname)) {
    throw new Expected(expected);
  }
  if (match[2] !== undefined && /^[\d.]+$/.test(hostname) && !isIpv4(hostname)) {
    throw new Expected(expected);
  }
  return { hostname, port };
}

function isIpv4(text: string): boolean {
  const parts = text.split(".");
  return parts.length === 4 && parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255);
}

/** A host name: the domain grammar of protocol/ids.ts in either case. */
function isHostname(text: string): boolean {
  return toDomain(text) !== null;
}

function parseDomain(value: unknown): string {
  const expected = 'a domain name such as "chat.example.org"';
  const domain = toDomain(parseNonEmptyString(value, expected));
  if (domain === null) throw new Expected(expected);
  return domain;
}

function parseHex(value: unknown, expected: string): Uint8Array {
  if (typeof value !== "string") throw new Expected(expected, false);
  const text = value.trim();
  if (text.length === 0 || text.length % 2 !== 0 || !/^[0-9a-fA-F]+$/.test(text)) {
    throw new Expected(
      `${expected}, got ${text.length} characters that are not even-length hex`,
      false,
    );
  }
  return hexToBytes(text.toLowerCase());
}

function parseKey32(value: unknown): Uint8Array {
  const expected = "64 hex characters (a 32-byte key)";
  const bytes = parseHex(value, expected);
  if (bytes.length !== 32) {
    throw new Expected(`${expected}, got ${bytes.length * 2} hex characters`, false);
  }
  return bytes;
}

/** Federation seed: hex, 16 to 1024 bytes (generated seeds are 32 bytes, as in the original). */
function parseSeed(value: unknown): Uint8Array {
  const expected = "hex of 16 to 1024 bytes (32..2048 hex characters)";
  const bytes = parseHex(value, expected);
  if (bytes.length < 16 || bytes.length > 1024) {
    throw new Expected(`${expected}, got ${bytes.length} bytes`, false);
  }
  return bytes;
}

function parseUrl(value: unknown, schemes: string[], expected: string): URL {
  if (typeof value !== "string") throw new Expected(expected, false);
  let url: URL;
  try {
    url = new URL(value.trim());
  } catch {
    throw new Expected(`${expected} (not a URL)`, false);
  }
  if (!schemes.includes(url.protocol)) {
    throw new Expected(`${expected}, got scheme "${url.protocol}"`, false);
  }
  if (!url.hostname) throw new Expected(`${expected} (no host)`, false);
  return url;
}

function parsePostgresDsn(value: unknown): string {
  parseUrl(
    value,
    ["postgres:", "postgresql:"],
    "a PostgreSQL URL postgres://user:password@host:port/database",
  );
  return (value as string).trim();
}

function parseRedisUrl(value: unknown): string {
  const expected = "a Redis URL redis://[:password@]host:port/db (or rediss://)";
  const url = parseUrl(value, ["redis:", "rediss:"], expected);
  const db = url.pathname.replace(/^\//, "");
  if (db !== "" && !/^\d+$/.test(db)) {
    throw new Expected(`${expected}, the path must be a database index`, false);
  }
  return (value as string).trim();
}

function parseLedgerMode(value: unknown): LedgerMode {
  if (value === "null" || value === "debug" || value === "file") return value;
  throw new Expected('"null", "debug" or "file"');
}

function parseToken(value: unknown): string {
  const text = parseNonEmptyString(value, "a non-empty token");
  // The original's sample value would otherwise become a publicly known credential.
  if (text === "replace-with-secret") {
    throw new Expected("a real secret, not the sample placeholder");
  }
  if (/\s/.test(text)) throw new Expected("a token without whitespace", false);
  return text;
}

function parsePeer(
  domain: unknown,
  endpoint: unknown,
  publicKey: unknown,
  label: string,
  ownDomain: string,
): StaticPeer {
  let peerDomain: string;
  try {
    peerDomain = parseDomain(domain);
  } catch {
    throw new Invalid(
      `${label}: domain must be a domain name, got ${describeValue(domain)}`,
    );
  }
  if (peerDomain === ownDomain) {
    throw new Invalid(`${label}: domain "${peerDomain}" is this server's own domain`);
  }
  let url: URL;
  try {
    url = parseUrl(endpoint, ["https:", "http:"], "an https:// URL");
  } catch {
    throw new Invalid(
      `${label}: endpoint must be an https:// URL, got ${describeValue(endpoint)}`,
    );
  }
  if (url.protocol === "http:" && !isLoopbackHost(url.hostname)) {
    throw new Invalid(
      `${label}: endpoint must use https:// (http:// is allowed only for loopback hosts), got ` +
        describeValue(endpoint),
    );
  }
  let key: Uint8Array;
  try {
    key = parseKey32(publicKey);
  } catch {
    throw new Invalid(
      `${label}: public_key must be 64 hex characters (an Ed25519 public key)`,
    );
  }
  return { domain: peerDomain, endpoint: (endpoint as string).trim(), publicKey: key };
}

/** Origins as an array of strings or "a,b": each `scheme://host[:port]` of http(s), or "*". */
function parseOrigins(value: unknown): string[] {
  const items = typeof value === "string"
    ? value.split(",").map((o) => o.trim()).filter((o) => o !== "")
    : value;
  if (!Array.isArray(items)) {
    throw new Expected('an array of origins like "https://chat.example.org", or "*"');
  }
  return items.map((item, i) => {
    if (item === "*") return item;
    let url: URL | null = null;
    try {
      url = typeof item === "string" ? new URL(item) : null;
    } catch {
      url = null;
    }
    if (
      url === null || (url.protocol !== "http:" && url.protocol !== "https:") ||
      url.pathname !== "/" || url.search !== "" || url.hash !== "" || url.username !== ""
    ) {
      throw new Invalid(
        `origin ${i + 1}: expected scheme://host[:port] (http or https, no path), got ` +
          JSON.stringify(item),
      );
    }
    return url.origin;
  });
}

/** Peers as an array of tables {domain, endpoint, public_key}, or "domain,endpoint,hexkey;…". */
function parsePeers(value: unknown, ownDomain: string): StaticPeer[] {
  const peers: StaticPeer[] = [];
  if (typeof value === "string") {
    const entries = value.split(";").map((e) => e.trim()).filter((e) => e !== "");
    entries.forEach((entry, i) => {
      const parts = entry.split(",").map((p) => p.trim());
      if (parts.length !== 3) {
        const label = `peer ${i + 1}`;
        throw new Invalid(
          `${label}: expected "domain,endpoint,hexkey" (three comma-separated fields), ` +
            `got ${parts.length} fields`,
        );
      }
      peers.push(parsePeer(parts[0], parts[1], parts[2], `peer ${i + 1}`, ownDomain));
    });
  } else if (Array.isArray(value)) {
    value.forEach((item, i) => {
      const label = `peer ${i + 1}`;
      if (!isTable(item)) {
        throw new Invalid(`${label}: expected a table {domain, endpoint, public_key}`);
      }
      for (const key of Object.keys(item)) {
        if (!["domain", "endpoint", "public_key"].includes(key)) {
          throw new Invalid(
            `${label}: unknown key "${key}" (known: domain, endpoint, public_key)`,
          );
        }
      }
      peers.push(parsePeer(item.domain, item.endpoint, item.public_key, label, ownDomain));
    });
  } else {
    throw new Expected(
      'an array of {domain, endpoint, public_key} tables or "domain,endpoint,hexkey;…"',
    );
  }
  const seen = new Set<string>();
  for (const peer of peers) {
    if (seen.has(peer.domain)) {
      throw new Invalid(`peer domain "${peer.domain}" appears twice; list each peer once`);
    }
    seen.add(peer.domain);
  }
  return peers;
}

async function checkReadableFile(file: string): Promise<string | null> {
  try {
    const info = await Deno.stat(file);
    if (!info.isFile) return `${file} is not a file`;
    return null;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return `file not found: ${file}`;
    return `cannot read ${file}: ${(err as Error).message}`;
  }
}

// ---------------------------------------------------------------------------------------------
// Generated keys

interface KeyFile {
  noise_private?: string;
  noise_public?: string;
  federation_seed?: string;
  created_at?: string;
}

/**
 * Fills in a missing Noise key and/or federation seed from `<dataDir>/keys.json`, generating
 * and storing what the file lacks. The file is never overwritten when it cannot be parsed.
 */
async function completeKeys(
  dataDir: string,
  noisePrivate: Uint8Array | null,
  federationSeed: Uint8Array | null,
): Promise<
  { noisePrivate: Uint8Array; federationSeed: Uint8Array; file: string | null; generated: boolean }
> {
  if (noisePrivate && federationSeed) {
    return { noisePrivate, federationSeed, file: null, generated: false };
  }
  const file = join(dataDir, KEY_FILE_NAME);
  try {
    await Deno.mkdir(dataDir, { recursive: true });
  } catch (err) {
    throw new ConfigError(
      `cannot create [server] data_dir ${dataDir} for generated keys: ${(err as Error).message}`,
    );
  }
  // Two attempts: if another process creates the file between our read and our create, the
  // second pass reads what it wrote instead of replacing it.
  for (let attempt = 0; attempt < 2; attempt++) {
    const stored = await readKeyFile(file);
    const next: KeyFile = { ...(stored ?? {}) };
    if (!noisePrivate && !next.noise_private) {
      const { secretKey, publicKey } = x25519.keygen();
      next.noise_private = bytesToHex(secretKey);
      next.noise_public = bytesToHex(publicKey);
    }
    if (!federationSeed && !next.federation_seed) {
      next.federation_seed = bytesToHex(randomBytes(32));
    }
    const changed = !stored || next.noise_private !== stored.noise_private ||
      next.federation_seed !== stored.federation_seed;
    if (changed) {
      next.created_at ??= new Date().toISOString();
      const written = await writeKeyFile(file, next, stored !== null);
      if (!written) continue;
    } else {
      await Deno.chmod(file, 0o600).catch(() => {});
    }
    return {
      noisePrivate: noisePrivate ?? hexToBytes(next.noise_private!),
      federationSeed: federationSeed ?? hexToBytes(next.federation_seed!),
      file,
      generated: changed,
    };
  }
  throw new ConfigError(`cannot settle the generated key file ${file}: it keeps changing`);
}

async function readKeyFile(file: string): Promise<KeyFile | null> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw new ConfigError(`cannot read generated key file ${file}: ${(err as Error).message}`);
  }
  const broken = (why: string) =>
    new ConfigError(
      `generated key file ${file} is damaged (${why}); it was left untouched: restore it from a ` +
        "backup, or move it away to generate new keys (clients pinned to the old key will fail)",
    );
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    throw broken("not JSON");
  }
  if (!isTable(data)) throw broken("not a JSON object");
  const out: KeyFile = {};
  if (data.noise_private !== undefined) {
    if (typeof data.noise_private !== "string" || !/^[0-9a-f]{64}$/.test(data.noise_private)) {
      throw broken("noise_private is not 64 hex characters");
    }
    out.noise_private = data.noise_private;
    out.noise_public = bytesToHex(x25519.getPublicKey(hexToBytes(data.noise_private)));
  }
  if (data.federation_seed !== undefined) {
    if (
      typeof data.federation_seed !== "string" ||
      !/^([0-9a-f]{2}){16,1024}$/.test(data.federation_seed)
    ) {
      throw broken("federation_seed is not hex of 16 to 1024 bytes");
    }
    out.federation_seed = data.federation_seed;
  }
  if (typeof data.created_at === "string") out.created_at = data.created_at;
  return out;
}

/**
 * Writes the key file atomically with mode 0600: a temporary file, then a hard link (which
 * refuses to replace a file another process just created) or, when updating, a rename.
 * Returns false when another process created the file first.
 */
async function writeKeyFile(file: string, data: KeyFile, replace: boolean): Promise<boolean> {
  const temp = `${file}.${crypto.randomUUID()}.tmp`;
  try {
    const text = JSON.stringify(data, null, 2) + "\n";
    await Deno.writeTextFile(temp, text, { mode: 0o600, createNew: true });
    await Deno.chmod(temp, 0o600); // the umask may have narrowed or widened it
    if (replace) {
      await Deno.rename(temp, file);
      return true;
    }
    try {
      await Deno.link(temp, file);
      return true;
    } catch (err) {
      if (err instanceof Deno.errors.AlreadyExists) return false;
      throw err;
    }
  } catch (err) {
    throw new ConfigError(`cannot write generated key file ${file}: ${(err as Error).message}`);
  } finally {
    await Deno.remove(temp).catch(() => {});
  }
}

// ---------------------------------------------------------------------------------------------
// [retention]

type Getter = <T>(section: string, key: string, parse: (v: unknown) => T, fallback: T) => T;

/** `[retention]`: the archive target (directory or S3) and the job's knobs. */
function readRetention(
  get: Getter,
  where: (section: string, key: string) => string | undefined,
  problems: string[],
  dataDir: string,
  path: (v: unknown) => string,
): RetentionConfig {
  const keyEventsDays = get(
    "retention",
    "key_events_days",
    (v) => parseInteger(v, 0, 36_500, "a whole number of days (0..36500; 0 keeps events)"),
    365,
  );
  const interval = get(
    "retention",
    "interval",
    (v) => parseInteger(v, 1, 604_800, "a positive integer number of seconds (1..604800)"),
    3600,
  );
  const chunkEvents = get(
    "retention",
    "chunk_events",
    (v) => parseInteger(v, 1, 100_000, "a positive integer number of events (1..100000)"),
    10_000,
  );
  const archiveText = get(
    "retention",
    "archive",
    (v) => parseNonEmptyString(v, "a directory path or s3://bucket[/prefix]"),
    null as string | null,
  );
  const fallback: RetentionConfig["archive"] = { kind: "dir", path: join(dataDir, "archive") };
  if (archiveText === null || !archiveText.startsWith("s3://")) {
    const archive = archiveText === null
      ? fallback
      : { kind: "dir" as const, path: path(archiveText) };
    return { keyEventsDays, interval, chunkEvents, archive };
  }
  const m = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*))?$/.exec(archiveText);
  const prefix = (m?.[2] ?? "").replace(/^\/+|\/+$/g, "");
  if (!m || (prefix !== "" && !/^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/.test(prefix))) {
    problems.push(
      `invalid ${where("retention", "archive")}: expected s3://bucket[/prefix] with a bucket ` +
        "of 3-63 lowercase letters, digits, dots or hyphens and a prefix of A-Z a-z 0-9 . _ - /",
    );
    return { keyEventsDays, interval, chunkEvents, archive: fallback };
  }
  const endpoint = get("retention", "s3_endpoint", (v) => {
    const url = parseUrl(v, ["https:", "http:"], "an https:// URL");
    if (url.protocol === "http:" && !isLoopbackHost(url.hostname)) {
      throw new Expected("an https:// URL (http:// is allowed only for loopback hosts)", false);
    }
    return url.origin + url.pathname.replace(/\/+$/, "");
  }, null as string | null);
  const region = get(
    "retention",
    "s3_region",
    (v) => parseNonEmptyString(v, "a region name such as us-east-1"),
    "us-east-1",
  );
  const accessKeyId = get(
    "retention",
    "s3_access_key_id",
    (v) => parseNonEmptyString(v, "an access key id"),
    null as string | null,
  );
  const secretAccessKey = get(
    "retention",
    "s3_secret_access_key",
    (v) => parseNonEmptyString(v, "a secret access key"),
    null as string | null,
  );
  const missing = [
    endpoint === null && !where("retention", "s3_endpoint") ? "s3_endpoint" : null,
    accessKeyId === null && !where("retention", "s3_access_key_id") ? "s3_access_key_id" : null,
    secretAccessKey === null && !where("retention", "s3_secret_access_key")
      ? "s3_secret_access_key"
      : null,
  ].filter((x) => x !== null);
  if (missing.length > 0) {
    problems.push(
      `[retention] archive is an S3 bucket (${where("retention", "archive")}) but ` +
        `${missing.map((k) => `[retention] ${k}`).join(", ")} ${
          missing.length === 1 ? "is" : "are"
        } not set`,
    );
  }
  if (endpoint === null || accessKeyId === null || secretAccessKey === null) {
    return { keyEventsDays, interval, chunkEvents, archive: fallback };
  }
  return {
    keyEventsDays,
    interval,
    chunkEvents,
    archive: {
      kind: "s3",
      bucket: m[1],
      prefix: prefix === "" ? "" : `${prefix}/`,
      endpoint,
      region,
      accessKeyId,
      secretAccessKey,
    },
  };
}
