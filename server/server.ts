/**
 * Starts a relay node: storage (unless given), the TCP/TLS listener, the HTTP listener, the bus
 * subscriptions; returns a handle with the ports actually bound and a graceful `stop()`.
 * Tests and benchmarks start real servers in-process with port 0.
 *
 * @module
 */
import type { Config } from "./config/mod.ts";
import { log as rootLog, type Logger } from "./log.ts";
import { type MetricsSnapshot, RelayMetrics } from "./metrics.ts";
import { RelayNode } from "./node.ts";
import type { FederationOptions } from "./federation.ts";
import { httpHandler } from "./http.ts";
import { HttpFront } from "./http_front.ts";
import { ConnTransport, isLoopbackHost } from "./transport.ts";
import type { NodeContext } from "./context.ts";
import { openStorage } from "../storage/mod.ts";
import type { Storage } from "../storage/types.ts";
import { createLedger, type Ledger } from "../storage/ledger.ts";
import { Limits } from "./limits.ts";
import { Admission } from "./admission.ts";
import { startRetentionJob } from "./retention.ts";
import { startHeartbeat } from "./heartbeat.ts";
import { FrameAnalytics } from "./analytics.ts";
import { listenOn } from "./listen.ts";

export interface ServerOptions {
  /** Use this storage instead of opening one (it is then not closed on stop). */
  storage?: Storage;
  /** Node id (default: a random one). */
  nodeId?: string;
  log?: Logger;
  /** Federation knobs (tests): outbox poll interval, HTTP client. */
  federation?: FederationOptions;
}

export interface ServerHandle {
  readonly nodeId: string;
  /** Ports actually bound (useful with port 0). */
  readonly ports: { tcp: number; http: number };
  readonly tls: boolean;
  readonly storage: Storage;
  readonly node: RelayNode;
  readonly metrics: RelayMetrics;
  /** The node's ledger (operator key changes made through the admin API are recorded here). */
  readonly ledger: Pick<Ledger, "record">;
  /** Live figures for the console dashboard. */
  metricsSnapshot(): MetricsSnapshot;
  /** Graceful stop: refuse new connections, close clients, requeue, close storage if owned. */
  stop(): Promise<void>;
}

/** A fresh node id: short, unique enough across restarts. */
export function newNodeId(): string {
  return `node-${crypto.randomUUID().slice(0, 8)}`;
}

/** Starts a relay node per `config`. */
export async function startServer(
  config: Config,
  options: ServerOptions = {},
): Promise<ServerHandle> {
  const nodeId = options.nodeId ?? newNodeId();
  const log = (options.log ?? rootLog).child({ node: nodeId });
  const ownsStorage = options.storage === undefined;
  const storage = options.storage ?? await openStorage({
    postgresDsn: config.storage.postgresDsn,
    redisUrl: config.storage.redisUrl,
    dataDir: config.server.dataDir,
    staticPeers: config.federation.peers,
    log,
  });
  const ledger = createLedger({ mode: config.ledger.mode, target: config.ledger.target }, log);
  const metrics = new RelayMetrics(nodeId);
  const limits = new Limits(storage.ephemeral, config.limits, {
    nodeId,
    limited: (kind) => metrics.rateLimited(kind),
    warn: (message, fields) => log.warn(message, fields),
  });
  const admission = new Admission(config.limits);
  const analytics = new FrameAnalytics(storage.analytics, config.server.domain, metrics);
  const ctx: NodeContext = {
    config,
    storage,
    metrics,
    log,
    ledger,
    nodeId,
    limits,
    admission,
    analytics,
  };
  const node = new RelayNode(ctx, { federation: options.federation });
  let tcpListener: Deno.Listener | null = null;
  let httpServer: HttpFront | null = null;
  let stopRetention = () => Promise.resolve();
  try {
    await ledger.ready();
    await node.start();
    stopRetention = startRetentionJob(config, storage, log);
    analytics.start((err) => log.warn("frame analytics flush failed; counts kept", { error: err }));
    const tls = config.server.tlsCert !== null && config.server.tlsKey !== null;
    const cert = tls ? await Deno.readTextFile(config.server.tlsCert!) : undefined;
    const key = tls ? await Deno.readTextFile(config.server.tlsKey!) : undefined;

    const { hostname, port } = config.server.tcpBind;
    tcpListener = listenOn(
      { setting: "tcp_bind", hostname, port },
      () =>
        tls
          ? Deno.listenTls({ hostname, port, cert: cert!, key: key! })
          : Deno.listen({ hostname, port, transport: "tcp" }),
    );
    acceptLoop(tcpListener, node, tls, log);

    const httpBind = config.server.bind;
    // Connection caps and timeouts in front of Deno.serve (server/http_front.ts). Idle: long
    // enough for a /connect stream that keeps the keepalive rule.
    httpServer = listenOn(
      { setting: "bind", hostname: httpBind.hostname, port: httpBind.port },
      () =>
        HttpFront.start({
          hostname: httpBind.hostname,
          port: httpBind.port,
          ...(tls ? { tls: { cert: cert!, key: key! } } : {}),
          perAddress: config.limits.httpConnectionsPerAddress,
          total: config.limits.httpConnectionsTotal,
          headerTimeout: config.limits.httpHeaderTimeout,
          idleTimeout: Math.max(config.limits.httpBodyTimeout, config.server.keepalive + 10),
          log,
          onRefused: (reason) => metrics.connectionRefused(reason),
        }, httpHandler(node, tls)),
    );

    const ports = {
      tcp: (tcpListener.addr as Deno.NetAddr).port,
      http: (httpServer.addr as Deno.NetAddr).port,
    };
    const scheme = tls ? "tls" : "tcp";
    log.info("listening", {
      ccp1: `${scheme}://${hostname}:${ports.tcp}`,
      http: `${tls ? "https" : "http"}://${httpBind.hostname}:${ports.http}`,
      tls,
      storage: storage.dbKind,
      ephemeral: storage.ephemeral.kind,
      domain: config.server.domain,
    });
    if (!tls) {
      const open = [hostname, httpBind.hostname].filter((h) => !isLoopbackHost(h));
      if (open.length === 0) {
        log.info(
          "no tls_cert/tls_key: listening on loopback in plain text (protocol v1 allowed on loopback only)",
        );
      } else {
        log.warn(
          "no tls_cert/tls_key: plain text on a non-loopback address; protocol v1 is refused there",
          {
            addresses: open,
            allow_plaintext_v1: config.server.allowPlaintextV1,
          },
        );
      }
    }

    const stopHeartbeat = startHeartbeat(storage.ephemeral, {
      nodeId,
      address: `${scheme}://${hostname}:${ports.tcp} http://${httpBind.hostname}:${ports.http}`,
      reading: () => {
        const m = metrics.snapshot();
        return { connections: m.connections, frames: m.framesIn + m.framesOut };
      },
    }, { onError: (err) => log.warn("node heartbeat failed", { error: err }) });

    let stopped: Promise<void> | null = null;
    return {
      nodeId,
      ports,
      tls,
      storage,
      node,
      metrics,
      ledger,
      metricsSnapshot: () => metrics.snapshot(),
      stop() {
        stopped ??= (async () => {
          log.info("shutting down");
          stopHeartbeat();
          try {
            tcpListener?.close();
          } catch {
            // already closed
          }
          // Clients, then the federation worker, then inbound requests; storage closes last.
          await stopRetention();
          await node.stop();
          await httpServer?.shutdown();
          await node.idle();
          await analytics.stop().catch((err) => {
            log.warn("frame analytics flush failed at stop", { error: err });
          });
          await ledger.close().catch(() => {});
          if (ownsStorage) await storage.close();
          log.info("stopped");
        })();
        return stopped;
      },
    };
  } catch (err) {
    try {
      tcpListener?.close();
    } catch {
      // not open
    }
    await stopRetention().catch(() => {});
    await analytics.stop().catch(() => {});
    await node.stop().catch(() => {});
    await httpServer?.shutdown().catch(() => {});
    await ledger.close().catch(() => {});
    if (ownsStorage) await storage.close().catch(() => {});
    throw err;
  }
}

async function acceptLoop(listener: Deno.Listener, node: RelayNode, tls: boolean, log: Logger) {
  try {
    for await (const conn of listener) {
      node.accept(new ConnTransport(conn, tls)).catch((err) => {
        log.warn("connection failed", { error: err });
      });
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.BadResource)) log.warn("listener stopped", { error: err });
  }
}
