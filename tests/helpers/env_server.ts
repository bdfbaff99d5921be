/**
 * A relay started in this test's process the way `deno task serve` starts it: the config read
 * from COMMUCAT_* variables (every listener on a loopback port the system chooses, no rate
 * limits), on Postgres + Redis when COMMUCAT_TEST_PG_DSN / COMMUCAT_TEST_REDIS_URL name them,
 * else on the embedded defaults in a temp data dir. Also the SDK's options for its devices and
 * the console beside it, for the suites that drive both.
 */
import type { ConnectOptions } from "../../client/sdk.ts";
import type { Keypair } from "../../protocol/crypto.ts";
import { bytesToHex } from "../../protocol/hex.ts";
import type { Config } from "../../server/config/mod.ts";
import { loadConfig } from "../../server/config/mod.ts";
import { type ServerHandle, startServer } from "../../app/serve.ts";
import { startConsole } from "../../console/server.ts";
import { OPEN_LIMITS_ENV } from "../server/helpers/server.ts";

/**
 * The COMMUCAT_* environment of a test server with its data in `dataDir`: port 0 on loopback
 * for the relay, TCP and console listeners, the limits opened, the test services when the
 * environment names them; `extra` adds or overrides.
 */
export function serverEnv(
  dataDir: string,
  extra: Record<string, string> = {},
): Record<string, string> {
  const env: Record<string, string> = {
    COMMUCAT_DATA_DIR: dataDir,
    COMMUCAT_BIND: "127.0.0.1:0",
    COMMUCAT_TCP_BIND: "127.0.0.1:0",
    ...OPEN_LIMITS_ENV,
    COMMUCAT_CONSOLE_BIND: "127.0.0.1:0",
  };
  const pg = Deno.env.get("COMMUCAT_TEST_PG_DSN");
  const redis = Deno.env.get("COMMUCAT_TEST_REDIS_URL");
  if (pg) env.COMMUCAT_PG_DSN = pg;
  if (redis) env.COMMUCAT_REDIS_URL = redis;
  return { ...env, ...extra };
}

/** A running relay of {@link startEnvServer}. */
export interface EnvServer {
  config: Config;
  server: ServerHandle;
  dataDir: string;
  /** Stops the relay and removes its data dir. */
  stop(): Promise<void>;
}

/** Starts a relay from {@link serverEnv} (plus `extra`) in a temp data dir named by `prefix`. */
export async function startEnvServer(
  prefix: string,
  extra: Record<string, string> = {},
): Promise<EnvServer> {
  const dataDir = await Deno.makeTempDir({ prefix: `commucat-${prefix}-` });
  try {
    const config = await loadConfig({ env: serverEnv(dataDir, extra), file: null, cwd: dataDir });
    const server = await startServer(config);
    return {
      config,
      server,
      dataDir,
      async stop() {
        await server.stop();
        await Deno.remove(dataDir, { recursive: true }).catch(() => {});
      },
    };
  } catch (err) {
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    throw err;
  }
}

/** The admin console of `relay`, serving its storage, live figures and node id. */
export function startRelayConsole(relay: EnvServer): ReturnType<typeof startConsole> {
  const { config, server } = relay;
  return startConsole({
    config,
    storage: server.storage,
    nodeId: server.nodeId,
    metrics: () => {
      const s = server.metricsSnapshot();
      return { ...s, relayDepth: s.queueDepth };
    },
    sampleIntervalMs: 500,
  });
}

/** SDK options for the device `deviceId` (key pair `keypair`) of `relay`, over TCP. */
export function sdkOptions(
  relay: Pick<EnvServer, "config" | "server">,
  deviceId: string,
  keypair: Keypair,
  extra: Partial<ConnectOptions> = {},
): ConnectOptions {
  return {
    transport: "tcp",
    host: "127.0.0.1",
    port: relay.server.ports.tcp,
    deviceId,
    keypair,
    serverKey: bytesToHex(relay.config.crypto.noisePublic),
    keepaliveMs: 0,
    ...extra,
  };
}
