/**
 * `deno task bench transports`: the SDK over each transport against one relay in this process
 * (embedded storage): connect + handshake time, 1:1 ping-pong round trips through the relay,
 * and a pipelined one-way burst, for tcp, ws (WebSocket /connect) and http (POST /connect),
 * protocol v2. The ceiling beside them: a bare WebSocket echo on loopback (no CCP-1, no relay),
 * the most a WebSocket round trip can cost here.
 */
import { connect } from "../client/mod.ts";
import type { ConnectOptions } from "../client/sdk.ts";
import { directChannelId } from "../client/channels.ts";
import { generateKeypair } from "../protocol/crypto.ts";
import { setLogLevel } from "../server/log.ts";
import { startServer } from "../server/server.ts";
import { openStorage } from "../storage/mod.ts";
import { testConfig } from "../tests/server/helpers/server.ts";

const CONNECTS = 20;
const ROUND_TRIPS = 1000;
const BURST = 5000;
const ROUNDS = 3;

type Ports = { tcp: number; http: number };
const KINDS: [string, (p: Ports) => Partial<ConnectOptions>][] = [
  ["tcp", (p) => ({ transport: "tcp", port: p.tcp })],
  ["ws", (p) => ({ transport: "ws", url: `ws://127.0.0.1:${p.http}/connect` })],
  ["http", (p) => ({ transport: "http", url: `http://127.0.0.1:${p.http}/connect` })],
];

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

/** Round trips per second of a bare WebSocket echo (the ceiling). */
async function bareEcho(): Promise<number> {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onmessage = (e) => socket.send(e.data);
    return response;
  });
  const ws = new WebSocket(`ws://127.0.0.1:${server.addr.port}/`);
  ws.binaryType = "arraybuffer";
  await new Promise((r) => (ws.onopen = r));
  const payload = new Uint8Array(100);
  let pending: (() => void) | null = null;
  ws.onmessage = () => pending?.();
  const start = performance.now();
  for (let i = 0; i < ROUND_TRIPS; i++) {
    await new Promise<void>((r) => {
      pending = r;
      ws.send(payload);
    });
  }
  const rate = ROUND_TRIPS / ((performance.now() - start) / 1000);
  ws.close();
  await server.shutdown();
  return rate;
}

export async function run(): Promise<void> {
  setLogLevel("warn");
  const dir = await Deno.makeTempDir({ prefix: "commucat-bench-transports-" });
  const storage = await openStorage({ postgresDsn: null, redisUrl: null, dataDir: dir });
  const config = testConfig({ limits: { maxInflight: 4096, outboundQueueFrames: 65536 } });
  const server = await startServer(config, { storage });
  const best = new Map<string, { connectMs: number; rtt: number; p99: number; burst: number }>();
  let ceiling = 0;
  try {
    for (let round = 0; round < ROUNDS; round++) {
      ceiling = Math.max(ceiling, await bareEcho());
      for (const [kind, options] of KINDS) {
        const common = {
          ...options(server.ports),
          versions: [2],
          serverKey: config.crypto.noisePublic,
          keepaliveMs: 0,
        };
        // Connect + handshake.
        const times: number[] = [];
        for (let i = 0; i < CONNECTS; i++) {
          const id = `bench-c-${kind}-${round}-${i}`;
          const t0 = performance.now();
          const c = await connect({ ...common, deviceId: id, keypair: generateKeypair() });
          times.push(performance.now() - t0);
          await c.close();
        }
        times.sort((a, b) => a - b);
        // Ping-pong through the relay.
        const a = `bench-a-${kind}-${round}`;
        const b = `bench-b-${kind}-${round}`;
        const channel = directChannelId(a, b);
        const alice = await connect({ ...common, deviceId: a, keypair: generateKeypair() });
        const bob = await connect({ ...common, deviceId: b, keypair: generateKeypair() });
        await alice.join(channel, [a, b]);
        await bob.join(channel, [a, b]);
        const aliceIn = alice.messages();
        const bobIn = bob.messages();
        const nextMsg = async (it: AsyncIterator<{ kind: string }>) => {
          for (;;) {
            const { value } = await it.next();
            if (value.kind === "MSG") return;
          }
        };
        const payload = new Uint8Array(100);
        const rtts: number[] = [];
        for (let i = 0; i < ROUND_TRIPS; i++) {
          const t0 = performance.now();
          alice.send(channel, payload).catch(() => {});
          await nextMsg(bobIn);
          bob.send(channel, payload).catch(() => {});
          await nextMsg(aliceIn);
          rtts.push(performance.now() - t0);
        }
        const total = rtts.reduce((x, y) => x + y, 0);
        rtts.sort((x, y) => x - y);
        // A pipelined burst, alice → bob, counted when bob has them all.
        const t1 = performance.now();
        const sends: Promise<unknown>[] = [];
        for (let i = 0; i < BURST; i++) sends.push(alice.send(channel, payload));
        for (let i = 0; i < BURST; i++) await nextMsg(bobIn);
        await Promise.all(sends);
        const burst = BURST / ((performance.now() - t1) / 1000);
        await alice.close();
        await bob.close();
        const figures = {
          connectMs: quantile(times, 0.5),
          rtt: ROUND_TRIPS / (total / 1000),
          p99: quantile(rtts, 0.99),
          burst,
        };
        const prev = best.get(kind);
        if (!prev || figures.rtt > prev.rtt) best.set(kind, figures);
      }
    }
  } finally {
    await server.stop();
    await storage.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  console.log(
    `ceiling: bare WebSocket echo on loopback ${Math.round(ceiling)} round trips/s (100 B)`,
  );
  console.log(
    "transport  connect p50  relay round trips/s  rtt p99   burst msg/s  (v2, 100 B; each connect registers a new device)",
  );
  for (const [kind, f] of best) {
    console.log(
      `${kind.padEnd(9)}  ${f.connectMs.toFixed(1).padStart(8)} ms  ${
        Math.round(f.rtt).toString().padStart(19)
      }  ${f.p99.toFixed(2).padStart(5)} ms  ${Math.round(f.burst).toString().padStart(11)}`,
    );
  }
  console.log(
    `best of ${ROUNDS} interleaved rounds; ${CONNECTS} connects, ${ROUND_TRIPS} round trips, ${BURST} burst messages each`,
  );
}

if (import.meta.main) await run();
