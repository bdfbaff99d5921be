/**
 * The registry: every key the file and the environment accept, with its variable, its default,
 * its meaning and its parser, grouped by section in the shape the loader returns. The docs
 * (docs/CONFIG.md, .env.sample, commucat.toml) are checked against it by the tests.
 *
 * @module
 */
import leven from "leven";
import type { Config } from "./types.ts";
import {
  integer,
  nonEmpty,
  parseBind,
  parseBoolean,
  parseDomain,
  parseKey32,
  parseLedgerMode,
  parseOrigins,
  parsePath,
  parsePeers,
  parsePostgresDsn,
  type Parser,
  parseRedisUrl,
  parseS3Endpoint,
  parseSeed,
  parseString,
  parseTime,
  parseToken,
  positive,
} from "./parsers.ts";

/** One configuration key: where it lives, its variable, its default and its meaning. */
export interface ConfigKey {
  section: string;
  key: string;
  env: string;
  /** The default as an operator would write it, or a description in parentheses. */
  default: string;
  meaning: string;
  /** Values never echoed in error messages. */
  secret?: boolean;
}

/** A key as the loader reads it: its row, its parser and its value when unset. */
export interface KeySpec<T> extends ConfigKey {
  parse: Parser<T>;
  /** The value when the key is unset; without it, `default` parsed by `parse`. */
  unset?: T;
}

/** The keys of one section, by the field of the loaded object each one fills. */
export type Section<S> = { readonly [F in keyof S]-?: KeySpec<S[F]> };

type Row<T> = Omit<KeySpec<T>, "section">;

function section<S>(name: string, rows: { [F in keyof S]-?: Row<S[F]> }): Section<S> {
  const entries = Object.entries(rows as Record<string, Row<unknown>>);
  return Object.fromEntries(entries.map(([f, row]) => [f, { section: name, ...row }])) as Section<
    S
  >;
}

/** A key whose default (`dflt`) is a value `parse` accepts: what applies when it is unset. */
function key<T>(key: string, env: string, dflt: string, meaning: string, parse: Parser<T>): Row<T> {
  return { key, env, default: dflt, meaning, parse };
}

/** A key with no value (null) when unset; `dflt` says what happens then. */
function optional<T>(
  key: string,
  env: string,
  dflt: string,
  meaning: string,
  parse: Parser<T>,
  secret = false,
): Row<T | null> {
  return { key, env, default: dflt, meaning, parse, unset: null, secret };
}

/** A list, empty when unset. */
function list<T>(
  key: string,
  env: string,
  dflt: string,
  meaning: string,
  parse: Parser<T[]>,
): Row<T[]> {
  return { key, env, default: dflt, meaning, parse, unset: [] };
}

/** A positive count of `unit` up to `max`, `dflt` when unset. */
function count(
  name: string,
  env: string,
  dflt: number,
  max: number,
  unit: string,
  meaning: string,
): Row<number> {
  return {
    key: name,
    env,
    default: String(dflt),
    meaning,
    parse: positive(max, unit),
    unset: dflt,
  };
}

/** `COMMUCAT_<KEY>` for a limit: every [limits] variable is named after its key. */
function limit(name: string, dflt: number, max: number, unit: string, meaning: string) {
  return count(name, `COMMUCAT_${name.toUpperCase()}`, dflt, max, unit, meaning);
}

export const SERVER_KEYS = section<Config["server"]>("server", {
  bind: key(
    "bind",
    "COMMUCAT_BIND",
    "127.0.0.1:8443",
    "HTTP listener: /connect, health, metrics, federation",
    parseBind,
  ),
  tcpBind: key(
    "tcp_bind",
    "COMMUCAT_TCP_BIND",
    "127.0.0.1:9443",
    "raw CCP-1 TCP (TLS when a certificate is set) listener",
    parseBind,
  ),
  consoleBind: key(
    "console_bind",
    "COMMUCAT_CONSOLE_BIND",
    "127.0.0.1:8080",
    "admin console listener",
    parseBind,
  ),
  tlsCert: optional(
    "tls_cert",
    "COMMUCAT_TLS_CERT",
    "(none)",
    "PEM certificate file; set together with tls_key",
    parsePath,
  ),
  tlsKey: optional(
    "tls_key",
    "COMMUCAT_TLS_KEY",
    "(none)",
    "PEM private key file; set together with tls_cert",
    parsePath,
  ),
  domain: key(
    "domain",
    "COMMUCAT_DOMAIN",
    "localhost",
    "this server's domain (device@domain, federation origin)",
    parseDomain,
  ),
  autoApproveDevices: key(
    "auto_approve_devices",
    "COMMUCAT_AUTO_APPROVE_DEVICES",
    "true",
    "activate new devices at first handshake (false: they wait for approval)",
    parseBoolean,
  ),
  keepalive: count(
    "keepalive",
    "COMMUCAT_KEEPALIVE",
    60,
    86_400,
    "seconds",
    "seconds of silence before an idle connection is closed",
  ),
  dataDir: key(
    "data_dir",
    "COMMUCAT_DATA_DIR",
    "./data",
    "embedded database and generated keys",
    parsePath,
  ),
  handshakeTimeout: count(
    "handshake_timeout",
    "COMMUCAT_HANDSHAKE_TIMEOUT",
    10,
    600,
    "seconds",
    "seconds allowed to finish HELLO/AUTH",
  ),
  allowPlaintextV1: key(
    "allow_plaintext_v1",
    "COMMUCAT_ALLOW_PLAINTEXT_V1",
    "false",
    "allow protocol v1 (no tunnel encryption) without TLS from non-loopback peers",
    parseBoolean,
  ),
  allowedOrigins: list(
    "allowed_origins",
    "COMMUCAT_ALLOWED_ORIGINS",
    "(same origin only)",
    'origins whose pages may open /connect as a WebSocket: array or "a,b"; "*" allows any',
    parseOrigins,
  ),
});

export const STORAGE_KEYS = section<Config["storage"]>("storage", {
  postgresDsn: optional(
    "postgres_dsn",
    "COMMUCAT_PG_DSN",
    "(embedded database in data_dir/pg)",
    "PostgreSQL URL postgres://user:password@host:port/db",
    parsePostgresDsn,
    true,
  ),
  redisUrl: optional(
    "redis_url",
    "COMMUCAT_REDIS_URL",
    "(in-memory store)",
    "Redis URL redis://[:password@]host:port/db",
    parseRedisUrl,
    true,
  ),
});

/** `[crypto]` as configured, before missing keys are generated and public keys derived. */
export interface CryptoKeys {
  noisePrivate: Uint8Array | null;
  noisePublic: Uint8Array | null;
  noiseNext: Uint8Array | null;
  noisePrevious: Uint8Array | null;
  noisePreviousNotAfter: Date | null;
  federationSeed: Uint8Array | null;
  prologue: string;
}

export const CRYPTO_KEYS = section<CryptoKeys>("crypto", {
  noisePrivate: optional(
    "noise_private",
    "COMMUCAT_NOISE_PRIVATE",
    "(generated into data_dir/keys.json)",
    "X25519 static private key, 64 hex characters",
    parseKey32,
    true,
  ),
  noisePublic: optional(
    "noise_public",
    "COMMUCAT_NOISE_PUBLIC",
    "(derived from noise_private)",
    "X25519 public key; when set it must match noise_private",
    parseKey32,
  ),
  noiseNext: optional(
    "noise_next",
    "COMMUCAT_NOISE_NEXT",
    "(none)",
    "X25519 private key that replaces noise_private next: announced in the key catalog, accepted",
    parseKey32,
    true,
  ),
  noisePrevious: optional(
    "noise_previous",
    "COMMUCAT_NOISE_PREVIOUS",
    "(none)",
    "X25519 private key noise_private replaced: accepted until noise_previous_not_after",
    parseKey32,
    true,
  ),
  noisePreviousNotAfter: optional(
    "noise_previous_not_after",
    "COMMUCAT_NOISE_PREVIOUS_NOT_AFTER",
    "(none)",
    "RFC 3339 time ending the previous key's grace window (required with noise_previous)",
    parseTime,
  ),
  federationSeed: optional(
    "federation_seed",
    "COMMUCAT_FEDERATION_SEED",
    "(generated into data_dir/keys.json)",
    "hex seed (16-1024 bytes) of the Ed25519 federation key, BLAKE3(seed)",
    parseSeed,
    true,
  ),
  prologue: key(
    "prologue",
    "COMMUCAT_NOISE_PROLOGUE",
    "commucat",
    "Noise prologue; client and server must agree",
    (v) => parseString(v, "a string"),
  ),
});

export const FEDERATION_KEYS = section<Config["federation"]>("federation", {
  peers: list(
    "peers",
    "COMMUCAT_FEDERATION_PEERS",
    "(none)",
    'trusted peers: array of {domain, endpoint, public_key} or "domain,endpoint,hexkey;…"',
    parsePeers,
  ),
});

export const LEDGER_KEYS = section<Config["ledger"]>("ledger", {
  mode: key(
    "mode",
    "COMMUCAT_LEDGER",
    "null",
    "audit ledger: null, debug (log) or file",
    parseLedgerMode,
  ),
  target: optional(
    "target",
    "COMMUCAT_LEDGER_TARGET",
    "(none)",
    "ledger file path (required when mode is file)",
    parsePath,
  ),
});

export const LIMITS_KEYS = section<Config["limits"]>("limits", {
  presenceTtl: limit("presence_ttl", 60, 86_400, "seconds", "seconds a presence record lives"),
  relayTtl: limit(
    "relay_ttl",
    604_800,
    31_536_000,
    "seconds",
    "seconds an offline envelope waits in the relay queue (7 days)",
  ),
  outboundQueueFrames: limit(
    "outbound_queue_frames",
    4096,
    1_048_576,
    "frames",
    "frames a connection may have queued before it counts as too slow",
  ),
  outboundQueueBytes: limit(
    "outbound_queue_bytes",
    8 * 1024 * 1024,
    1_073_741_824,
    "bytes",
    "bytes a connection may have queued before it counts as too slow (8 MiB)",
  ),
  maxInflight: limit(
    "max_inflight",
    1024,
    65_536,
    "frames",
    "unacknowledged frames per connection (replay window)",
  ),
  handshakesPerMinute: limit(
    "handshakes_per_minute",
    300,
    1_000_000,
    "handshakes",
    "handshakes one client address may start per minute (all nodes together)",
  ),
  registrationsPerHour: limit(
    "registrations_per_hour",
    20,
    1_000_000,
    "registrations",
    "new users and devices one client address may register per hour",
  ),
  framesPerSecond: limit(
    "frames_per_second",
    20_000,
    100_000_000,
    "frames",
    "frames one device may send per second",
  ),
  bytesPerSecond: limit(
    "bytes_per_second",
    33_554_432,
    17_179_869_184,
    "bytes",
    "bytes one device may send per second (32 MiB)",
  ),
  messagesBurst: limit(
    "messages_burst",
    60,
    1_000_000,
    "messages",
    "messages one device may send to one recipient at once (leaky bucket size)",
  ),
  messagesPerMinute: limit(
    "messages_per_minute",
    60,
    60_000_000,
    "messages",
    "messages per minute that bucket drains (1 per second)",
  ),
  joinsPerMinute: limit(
    "joins_per_minute",
    60,
    1_000_000,
    "joins",
    "JOINs one device may send per minute",
  ),
  signInFailuresPerHour: limit(
    "sign_in_failures_per_hour",
    20,
    1_000_000,
    "failures",
    "wrong console tokens one address may try per hour (the right token always works)",
  ),
  unauthenticatedPerAddress: limit(
    "unauthenticated_per_address",
    64,
    1_000_000,
    "connections",
    "connections one address may hold open before their handshake completed (per node)",
  ),
  unauthenticatedTotal: limit(
    "unauthenticated_total",
    2_048,
    10_000_000,
    "connections",
    "connections a node holds open before their handshake completed",
  ),
  memoryBudget: limit(
    "memory_budget",
    2_147_483_648,
    1_125_899_906_842_624,
    "bytes",
    "resident bytes above which a node refuses new connections (2 GiB)",
  ),
  httpConnectionsPerAddress: limit(
    "http_connections_per_address",
    256,
    10_000_000,
    "connections",
    "HTTP connections one address may hold open (per node)",
  ),
  httpConnectionsTotal: limit(
    "http_connections_total",
    8_192,
    10_000_000,
    "connections",
    "HTTP connections a node holds open",
  ),
  httpHeaderTimeout: limit(
    "http_header_timeout",
    10,
    3_600,
    "seconds",
    "seconds an HTTP client has to send its request headers",
  ),
  httpBodyTimeout: limit(
    "http_body_timeout",
    30,
    3_600,
    "seconds",
    "seconds an HTTP request body may stay silent (federation: to arrive in full)",
  ),
  maxConversationsPerDevice: limit(
    "max_conversations_per_device",
    512,
    65_536,
    "conversations",
    "channel ids a device may bind to conversations at once",
  ),
  maxMembersPerJoin: limit(
    "max_members_per_join",
    256,
    1024,
    "members",
    "devices one JOIN may list (the joiner included); groups are bounded by their roster",
  ),
  maxDevicesPerUser: limit(
    "max_devices_per_user",
    8,
    10_000,
    "devices",
    "devices (pending or active) one user may hold; an operator may set another limit per user",
  ),
  pairingCodesPerHour: limit(
    "pairing_codes_per_hour",
    10,
    1_000_000,
    "codes",
    "pairing codes one user, and one client address, may ask for per hour",
  ),
  pairingAttemptsPerHour: limit(
    "pairing_attempts_per_hour",
    20,
    1_000_000,
    "attempts",
    "handshakes with a pairing code one client address may start per hour",
  ),
  routeIdleTtl: limit(
    "route_idle_ttl",
    2_592_000,
    31_536_000,
    "seconds",
    "seconds a conversation route lives without use or a connected member (30 days)",
  ),
  presenceFanout: limit(
    "presence_fanout",
    4096,
    1_048_576,
    "copies",
    "presence copies one announcement may send (over all of the device's conversations)",
  ),
  liveAckTimeoutMs: limit(
    "live_ack_timeout_ms",
    1000,
    600_000,
    "milliseconds",
    "milliseconds a live copy may wait for its recipient's ACK before it is queued durably",
  ),
});

/** `[retention]` as configured, before the archive text becomes a target. */
export interface RetentionKeys {
  keyEventsDays: number;
  archive: string | null;
  interval: number;
  chunkEvents: number;
}

export const RETENTION_KEYS = section<RetentionKeys>("retention", {
  keyEventsDays: key(
    "key_events_days",
    "COMMUCAT_RETENTION_KEY_EVENTS_DAYS",
    "365",
    "days a device key event stays in the database before it is archived and deleted (0: keep)",
    integer(0, 36_500, "a whole number of days (0..36500; 0 keeps events)"),
  ),
  archive: optional(
    "archive",
    "COMMUCAT_RETENTION_ARCHIVE",
    "(data_dir/archive)",
    "where archived key events go: a directory, or s3://bucket[/prefix]",
    nonEmpty("a directory path or s3://bucket[/prefix]"),
  ),
  interval: count(
    "interval",
    "COMMUCAT_RETENTION_INTERVAL",
    3600,
    604_800,
    "seconds",
    "seconds between retention passes (one node at a time)",
  ),
  chunkEvents: count(
    "chunk_events",
    "COMMUCAT_RETENTION_CHUNK_EVENTS",
    10_000,
    100_000,
    "events",
    "key events per archive chunk (1..100000)",
  ),
});

/** The `[retention]` keys of an S3 archive, read only when `archive` names a bucket. */
export interface S3Keys {
  s3Endpoint: string | null;
  s3Region: string;
  s3AccessKeyId: string | null;
  s3SecretAccessKey: string | null;
}

export const S3_KEYS = section<S3Keys>("retention", {
  s3Endpoint: optional(
    "s3_endpoint",
    "COMMUCAT_RETENTION_S3_ENDPOINT",
    "(none)",
    "S3-compatible service URL (https://; http:// only for loopback); required with s3://",
    parseS3Endpoint,
  ),
  s3Region: key(
    "s3_region",
    "COMMUCAT_RETENTION_S3_REGION",
    "us-east-1",
    "S3 signing region",
    nonEmpty("a region name such as us-east-1"),
  ),
  s3AccessKeyId: optional(
    "s3_access_key_id",
    "COMMUCAT_RETENTION_S3_ACCESS_KEY_ID",
    "(none)",
    "S3 access key id; required with s3://",
    nonEmpty("an access key id"),
  ),
  s3SecretAccessKey: optional(
    "s3_secret_access_key",
    "COMMUCAT_RETENTION_S3_SECRET_ACCESS_KEY",
    "(none)",
    "S3 secret access key; required with s3://",
    nonEmpty("a secret access key"),
    true,
  ),
});

export const ADMIN_KEYS = section<Config["admin"]>("admin", {
  token: optional(
    "token",
    "COMMUCAT_ADMIN_TOKEN",
    "(none)",
    "bearer token required by GET /metrics when set",
    parseToken,
    true,
  ),
});

/** Every key the file and the environment accept (docs and tests are checked against it). */
export const CONFIG_KEYS: readonly ConfigKey[] = [
  SERVER_KEYS,
  STORAGE_KEYS,
  CRYPTO_KEYS,
  FEDERATION_KEYS,
  LEDGER_KEYS,
  LIMITS_KEYS,
  RETENTION_KEYS,
  S3_KEYS,
  ADMIN_KEYS,
].flatMap((keys) => Object.values<ConfigKey>(keys));

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

/** The keys of each section, in registry order (unknown keys are refused against it). */
export const SECTIONS: Readonly<Record<string, readonly string[]>> = (() => {
  const sections: Record<string, string[]> = {};
  for (const spec of CONFIG_KEYS) (sections[spec.section] ??= []).push(spec.key);
  return sections;
})();

/** The candidate within edit distance 2 of `name` (the nearest, first on ties), or null. */
export function closest(name: string, candidates: readonly string[]): string | null {
  let best: string | null = null;
  let bestDistance = 3;
  for (const candidate of candidates) {
    const d = leven(name, candidate);
    if (d < bestDistance) [best, bestDistance] = [candidate, d];
  }
  return best;
}

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
      const best = closest(name, known);
      const hint = best ? ` (did you mean "${best}"?)` : "";
      return `warning: unknown environment variable ${name}${hint}; it is ignored`;
    });
}
