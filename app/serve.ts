/**
 * `deno task serve`: loads the configuration, prints the public keys and where it listens, opens
 * storage (embedded PGlite + in-memory store when no DSN/URL is set), starts the relay listeners
 * and the admin console in this process, and stops gracefully on SIGINT/SIGTERM (stop
 * accepting, tell clients, requeue what is unacknowledged, publish them offline, close storage).
 *
 * @module
 */
import { describeKeys } from "../server/config/mod.ts";
import { loadConfigOrReport, untilStopSignal } from "../server/process.ts";
import { log } from "../server/log.ts";
import { startServer } from "../server/server.ts";
import { type RunningConsole, startConsole } from "../console/server.ts";

export { type ServerHandle, type ServerOptions, startServer } from "../server/server.ts";
export type { MetricsSnapshot } from "../server/metrics.ts";

/** Runs the server until a signal stops it. */
export async function main(): Promise<number> {
  const config = await loadConfigOrReport();
  if (!config) return 2;
  for (const line of describeKeys(config)) console.log(line);
  let handle;
  try {
    handle = await startServer(config);
  } catch (err) {
    log.error("server failed to start", { error: err });
    console.error(`commucat: ${(err as Error).message}`);
    return 1;
  }
  // Listening for the stop signal from here on: a SIGTERM while the console starts still stops
  // the process gracefully (the relay answers /healthz already).
  const stopSignal = untilStopSignal();
  const scheme = handle.tls ? "tls" : "tcp";
  const web = handle.tls ? "https" : "http";
  const { tcpBind, bind } = config.server;
  console.log(`CCP-1 listening on ${scheme}://${tcpBind.hostname}:${handle.ports.tcp}`);
  console.log(
    `HTTP listening on ${web}://${bind.hostname}:${handle.ports.http} (/connect /healthz /readyz /metrics)`,
  );
  if (!handle.tls) {
    console.log("no TLS files configured: plain text on loopback (set tls_cert/tls_key for TLS)");
  }
  // The admin console runs in this process and reads live figures without HTTP.
  let adminConsole: RunningConsole | null = null;
  try {
    adminConsole = await startConsole({
      config,
      storage: handle.storage,
      nodeId: handle.nodeId,
      log: log.child({ component: "console" }),
      ledger: handle.ledger,
      metrics: () => {
        const snap = handle.metricsSnapshot();
        return { ...snap, relayDepth: snap.queueDepth };
      },
    });
    console.log(`admin console on ${adminConsole.url}`);
    if (adminConsole.startupTokenFile) {
      console.log(`console sign-in token written to ${adminConsole.startupTokenFile}`);
    }
  } catch (err) {
    log.error("admin console failed to start; the relay keeps running", { error: err });
  }

  await stopSignal;
  console.log("shutting down…");
  await adminConsole?.stop();
  await handle.stop();
  return 0;
}

if (import.meta.main) {
  Deno.exit(await main());
}
