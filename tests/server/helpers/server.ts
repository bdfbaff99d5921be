/**
 * Test fixtures for the relay: a Config with ephemeral ports and fresh keys, storage on the
 * embedded defaults (PGlite in a temp dir + memory store) or on the real services named by
 * COMMUCAT_TEST_PG_DSN / COMMUCAT_TEST_REDIS_URL, and a running server.
 */
import type { Config } from "../../../server/config/mod.ts";
import { generateKeypair } from "../../../protocol/crypto.ts";
import { openStorage } from "../../../storage/mod.ts";
import type { Storage } from "../../../storage/types.ts";
import { setLogSink } from "../../../server/log.ts";
import { type ServerHandle, startServer } from "../../../server/server.ts";
import { waitUntil } from "../../helpers/wait.ts";

export type StorageKind = "embedded" | "real";

/** The real services, when the environment names them. */
export function realServices(): { dsn: string; redis: string } | null {
  const dsn = Deno.env.get("COMMUCAT_TEST_PG_DSN");
  const redis = Deno.env.get("COMMUCAT_TEST_REDIS_URL");
  return dsn && redis ? { dsn, redis } : null;
}

/**
 * Rate limits and caps far above what any test does, so suites that open many connections from
 * loopback (and share one Redis) are never limited; tests of the limits set their own.
 */
export const OPEN_LIMITS = {
  handshakesPerMinute: 1_000_000,
  registrationsPerHour: 1_000_000,
  framesPerSecond: 100_000_000,
  bytesPerSecond: 17_179_869_184,
  messagesBurst: 1_000_000,
  messagesPerMinute: 60_000_000,
  joinsPerMinute: 1_000_000,
  pairingCodesPerHour: 1_000_000,
  pairingAttemptsPerHour: 1_000_000,
  signInFailuresPerHour: 1_000_000,
  unauthenticatedPerAddress: 1_000_000,
  unauthenticatedTotal: 10_000_000,
  memoryBudget: 1_125_899_906_842_624,
  httpConnectionsPerAddress: 10_000_000,
  httpConnectionsTotal: 10_000_000,
  httpHeaderTimeout: 10,
  httpBodyTimeout: 30,
} satisfies Partial<Config["limits"]>;

/**
 * The same as environment variables, for tests that start servers from the environment: those on
 * a shared Redis would otherwise share the buckets of 127.0.0.1 with every other run (new devices
 * per address per hour last an hour).
 */
export const OPEN_LIMITS_ENV: Record<string, string> = {
  COMMUCAT_HANDSHAKES_PER_MINUTE: "1000000",
  COMMUCAT_REGISTRATIONS_PER_HOUR: "1000000",
  COMMUCAT_JOINS_PER_MINUTE: "1000000",
  COMMUCAT_MESSAGES_BURST: "1000000",
  COMMUCAT_MESSAGES_PER_MINUTE: "60000000",
  COMMUCAT_SIGN_IN_FAILURES_PER_HOUR: "1000000",
};

/** A complete config for tests: loopback, port 0, fresh Noise keys, short timeouts. */
export function testConfig(overrides: {
  server?: Partial<Config["server"]>;
  limits?: Partial<Config["limits"]>;
  admin?: Partial<Config["admin"]>;
  storage?: Partial<Config["storage"]>;
} = {}): Config {
  const keys = generateKeypair();
  return {
    source: null,
    server: {
      bind: { hostname: "127.0.0.1", port: 0 },
      tcpBind: { hostname: "127.0.0.1", port: 0 },
      consoleBind: { hostname: "127.0.0.1", port: 0 },
      tlsCert: null,
      tlsKey: null,
      domain: "test.commucat",
      autoApproveDevices: true,
      keepalive: 60,
      dataDir: "./data-unused",
      handshakeTimeout: 10,
      allowPlaintextV1: false,
      allowedOrigins: [],
      ...overrides.server,
    },
    storage: { postgresDsn: null, redisUrl: null, ...overrides.storage },
    crypto: {
      noisePrivate: keys.privateKey,
      noisePublic: keys.publicKey,
      federationSeed: crypto.getRandomValues(new Uint8Array(32)),
      prologue: "commucat",
      generatedKeyFile: null,
    },
    federation: { peers: [] },
    ledger: { mode: "null", target: null },
    limits: {
      presenceTtl: 30,
      relayTtl: 3600,
      outboundQueueFrames: 4096,
      outboundQueueBytes: 8 * 1024 * 1024,
      maxInflight: 512,
      maxConversationsPerDevice: 512,
      maxMembersPerJoin: 256,
      maxDevicesPerUser: 8,
      routeIdleTtl: 3600,
      presenceFanout: 4096,
      liveAckTimeoutMs: 1000,
      ...OPEN_LIMITS,
      ...overrides.limits,
    },
    retention: {
      keyEventsDays: 0,
      interval: 3600,
      chunkEvents: 10_000,
      archive: { kind: "dir", path: "./data-unused/archive" },
    },
    admin: { token: null, ...overrides.admin },
  };
}

/** Storage for a test file; `close()` removes the temp dir too. */
export async function openTestStorage(
  kind: StorageKind,
): Promise<{ storage: Storage; close: () => Promise<void> }> {
  if (kind === "real") {
    const real = realServices()!;
    const storage = await openStorage({ postgresDsn: real.dsn, redisUrl: real.redis, dataDir: "" });
    return { storage, close: () => storage.close() };
  }
  const dir = await Deno.makeTempDir({ prefix: "commucat-relay-test-" });
  const storage = await openStorage({ postgresDsn: null, redisUrl: null, dataDir: dir });
  return {
    storage,
    close: async () => {
      await storage.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/** Storage kinds to run: embedded always, real when the environment names it. */
export function storageKinds(): StorageKind[] {
  return realServices() ? ["embedded", "real"] : ["embedded"];
}

/** Collects log lines while tests run (and keeps stdout quiet). */
export class LogCapture {
  readonly lines: Record<string, unknown>[] = [];
  #previous: ((line: string) => void) | null = null;

  start(): this {
    this.#previous = setLogSink((line) => {
      try {
        this.lines.push(JSON.parse(line));
      } catch {
        // not JSON: ignore
      }
      if (this.lines.length > 20000) this.lines.splice(0, 10000);
    });
    return this;
  }

  stop(): void {
    if (this.#previous) setLogSink(this.#previous);
  }

  has(msg: string, fields: Record<string, unknown> = {}): boolean {
    return this.lines.some((l) =>
      l.msg === msg && Object.entries(fields).every(([k, v]) => l[k] === v)
    );
  }
}

/** Random suffix so tests against a shared real database never collide. */
export function uid(prefix: string): string {
  return `${prefix}-${crypto.randomUUID().slice(0, 8)}`;
}

export { type ServerHandle, startServer };

/** Polls `check` every 25 ms until it holds; throws after `timeoutMs`. */
export function waitFor(
  check: () => boolean | Promise<boolean>,
  timeoutMs = 5000,
): Promise<void> {
  return waitUntil(check, "a condition", timeoutMs, 25);
}

/** A node of {@link withSharedNodes}: its handle and the config it was started with. */
export interface TestNode {
  server: ServerHandle;
  config: Config;
}

/**
 * Runs `body` against `count` nodes sharing one storage and one server key (as nodes of one
 * deployment do), with log capture; every node, tracked client, the storage and the capture are
 * closed afterwards, whatever `body` did.
 */
export async function withSharedNodes(
  kind: StorageKind,
  count: number,
  body: (ctx: {
    nodes: TestNode[];
    storage: Storage;
    logs: LogCapture;
    /** Registers a client to be closed at the end; returns it. */
    track: <C extends { close(): Promise<void> }>(client: C) => C;
  }) => Promise<void>,
  overrides: Parameters<typeof testConfig>[0] = {},
): Promise<void> {
  const logs = new LogCapture().start();
  const { storage, close } = await openTestStorage(kind);
  const nodes: TestNode[] = [];
  const clients: { close(): Promise<void> }[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const config = testConfig(overrides);
      if (nodes.length > 0) config.crypto = nodes[0].config.crypto;
      nodes.push({ server: await startServer(config, { storage }), config });
    }
    await body({ nodes, storage, logs, track: (c) => (clients.push(c), c) });
  } finally {
    for (const c of clients) await c.close();
    for (const node of nodes.reverse()) await node.server.stop();
    await close();
    logs.stop();
  }
}
