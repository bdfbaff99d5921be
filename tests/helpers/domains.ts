/**
 * Two federated domains for end-to-end tests: a config per domain on a free loopback port, the
 * static pairing of two configs, and a domain's own storage — PGlite + memory in a temp dir, or a
 * scratch schema of the real Postgres with a Redis key prefix of its own (so two domains on one
 * Redis never see each other's routes, buckets or bus).
 */
import { freePort } from "./wait.ts";
import { federationKeypair } from "../../protocol/federation.ts";
import type { Config } from "../../server/config/mod.ts";
import { openPglite, openPostgres } from "../../storage/db.ts";
import { openEphemeral } from "../../storage/ephemeral/mod.ts";
import { buildStorage, type Db, migrate, type Storage } from "../../storage/mod.ts";
import {
  realServices,
  type ServerHandle,
  startServer,
  testConfig,
} from "../server/helpers/server.ts";
import { type Client, connect, type ConnectOptions } from "../../client/sdk.ts";
import type { Keypair } from "../../protocol/crypto.ts";
import { sdkOptions } from "./env_server.ts";
import { scratchSchema } from "../storage/pg_scratch.ts";

/** The test config of `domain`, its HTTP listener on a free loopback port. */
export function domainConfig(domain: string): Config {
  return testConfig({
    server: { domain, bind: { hostname: "127.0.0.1", port: freePort() } },
  });
}

/** Makes `peer` a static peer of `config` (its endpoint is the peer's HTTP listener). */
export function pair(config: Config, peer: Config): void {
  config.federation.peers.push({
    domain: peer.server.domain,
    endpoint: `http://127.0.0.1:${peer.server.bind.port}`,
    publicKey: federationKeypair(peer.crypto.federationSeed).publicKey,
  });
}

/** The configs of a.test and b.test, each the other's static peer. */
export function pairedConfigs(): [Config, Config] {
  const cfgA = domainConfig("a.test");
  const cfgB = domainConfig("b.test");
  pair(cfgA, cfgB);
  pair(cfgB, cfgA);
  return [cfgA, cfgB];
}

/** One domain's storage; `close()` closes it and removes its data. */
export interface Domain {
  storage: Storage;
  db: Db;
  close(): Promise<void>;
}

/** A domain on PGlite + the memory store, in a temp dir of its own. */
export async function embeddedDomain(): Promise<Domain> {
  const dir = await Deno.makeTempDir({ prefix: "commucat-domain-" });
  const db = await openPglite(dir);
  await migrate(db);
  const storage = buildStorage(db, await openEphemeral(null));
  return {
    storage,
    db,
    close: async () => {
      await storage.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/** A domain on a scratch schema of `dsn` and on `redis` under that schema's key prefix. */
export async function realDomain(dsn: string, redis: string): Promise<Domain> {
  const scratch = await scratchSchema(dsn);
  const db = await openPostgres(scratch.dsn);
  await migrate(db);
  const storage = buildStorage(
    db,
    await openEphemeral(redis, { keyPrefix: `${scratch.schema}:` }),
  );
  return {
    storage,
    db,
    close: async () => {
      await storage.close();
      await scratch.drop();
    },
  };
}

/**
 * Registers `scenario` twice: on embedded domains (`<name> (PGlite + memory)`), and on Postgres +
 * Redis (`<name> (Postgres + Redis)`, ignored unless the test services are configured).
 */
export function domainTests(
  name: string,
  scenario: (makeDomain: () => Promise<Domain>) => Promise<void>,
): void {
  Deno.test({
    name: `${name} (PGlite + memory)`,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: () => scenario(embeddedDomain),
  });
  const real = realServices();
  Deno.test({
    name: `${name} (Postgres + Redis)`,
    ignore: real === null,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: () => scenario(() => realDomain(real!.dsn, real!.redis)),
  });
}

/** Two domains' storage and servers running, and the SDK clients opened on them. */
export interface RunningDomains {
  a: Domain;
  b: Domain;
  serverA: ServerHandle;
  serverB: ServerHandle;
  /** Connects an SDK client to `server` (of `config`); it is closed by {@link close}. */
  open(
    server: ServerHandle,
    config: Config,
    deviceId: string,
    keypair: Keypair,
    extra?: Partial<ConnectOptions>,
  ): Promise<Client>;
  /** Closes the clients, stops the servers, closes both domains. */
  close(): Promise<void>;
}

/** Starts a server for `cfgA` and one for `cfgB`, each on a domain from `makeDomain`. */
export async function runDomains(
  cfgA: Config,
  cfgB: Config,
  makeDomain: () => Promise<Domain>,
): Promise<RunningDomains> {
  const a = await makeDomain();
  const b = await makeDomain();
  const fast = { pollIntervalMs: 50 };
  const serverA = await startServer(cfgA, { storage: a.storage, federation: fast });
  const serverB = await startServer(cfgB, { storage: b.storage, federation: fast });
  const clients: Client[] = [];
  return {
    a,
    b,
    serverA,
    serverB,
    async open(server, config, deviceId, keypair, extra = {}) {
      const client = await connect(sdkOptions({ server, config }, deviceId, keypair, extra));
      clients.push(client);
      return client;
    },
    async close() {
      for (const c of clients) await c.close();
      await serverA.stop();
      await serverB.stop();
      await a.close();
      await b.close();
    },
  };
}
