/**
 * Handshakes per second over real TCP connections to an in-process relay, XK and IK (v2),
 * loopback only and bounded. Each handshake is a full connection: TCP connect, HELLO / AUTH
 * (/ AUTH), device resolution in storage, session row, route and presence, completion ACK,
 * close. Printed next to the same Noise handshakes run in-process (both ends, no I/O, no
 * storage), which is the ceiling for this process. Runs on the embedded defaults (PGlite +
 * memory store), and on Postgres + Redis too when COMMUCAT_BENCH_PG_DSN and
 * COMMUCAT_BENCH_REDIS_URL (or the COMMUCAT_TEST_ ones) name them.
 */
import { setLogLevel } from "../server/log.ts";
import { startServer } from "../server/server.ts";
import { openStorage } from "../storage/mod.ts";
import type { Storage } from "../storage/types.ts";
import { generateKeypair, type Keypair } from "../protocol/crypto.ts";
import { HandshakeState } from "../protocol/noise.ts";
import { TestClient } from "../tests/server/helpers/client.ts";
import { testConfig } from "../tests/server/helpers/server.ts";
import { benchServices } from "./helpers/env.ts";

const HANDSHAKES = 800;
const CONCURRENCY = 16;
const encoder = new TextEncoder();

/** Complete Noise handshakes per second in this process (initiator and responder, no I/O). */
function inProcessRate(pattern: "XK" | "IK", count: number): number {
  const server = generateKeypair();
  const client = generateKeypair();
  const prologue = encoder.encode("commucat");
  const empty = new Uint8Array(0);
  const start = performance.now();
  for (let i = 0; i < count; i++) {
    const init = new HandshakeState({
      pattern,
      initiator: true,
      prologue,
      s: client,
      rs: server.publicKey,
    });
    const resp = new HandshakeState({ pattern, initiator: false, prologue, s: server });
    resp.readMessage(init.writeMessage(empty));
    init.readMessage(resp.writeMessage(empty));
    if (pattern === "XK") resp.readMessage(init.writeMessage(empty));
    resp.split();
    init.split();
  }
  return count / ((performance.now() - start) / 1000);
}

/** Handshakes/s over TCP against a server on `storage`, per pattern. */
async function tcpRates(storage: Storage, label: string, inProcess: Map<string, number>) {
  const config = testConfig();
  const server = await startServer(config, { storage });
  try {
    for (const pattern of ["XK", "IK"] as const) {
      // A fixed set of devices, registered by a first round, so the timed rounds measure
      // the steady state (known device, same key) rather than first registration.
      const devices = Array.from({ length: CONCURRENCY }, (_, i) => ({
        id: `hs-${pattern}-${i}-${crypto.randomUUID().slice(0, 8)}`,
        keypair: generateKeypair(),
      }));
      const once = async (d: { id: string; keypair: Keypair }) => {
        const c = await TestClient.connect({
          port: server.ports.tcp,
          serverStatic: config.crypto.noisePublic,
          deviceId: d.id,
          keypair: d.keypair,
          user: { handle: d.id },
          pattern,
          versions: [2],
        });
        await c.close();
      };
      await Promise.all(devices.map(once));
      let done = 0;
      const start = performance.now();
      await Promise.all(devices.map(async (d) => {
        while (done < HANDSHAKES) {
          done++;
          await once(d);
        }
      }));
      const seconds = (performance.now() - start) / 1000;
      console.log(
        `handshakes over TCP (${pattern}, v2, ${CONCURRENCY} concurrent, ${label}): ` +
          `${(done / seconds).toFixed(0)} /s (${done} in ${seconds.toFixed(2)} s) — in-process ` +
          `Noise, both ends: ${inProcess.get(pattern)!.toFixed(0)} /s (client and server share ` +
          `this process's cores)`,
      );
    }
  } finally {
    await server.stop();
  }
}

/** Runs the TCP handshake benchmark and prints handshakes/s per pattern and backend. */
export async function run(): Promise<void> {
  setLogLevel("warn");
  const inProcess = new Map<string, number>();
  for (const pattern of ["XK", "IK"] as const) {
    inProcessRate(pattern, 100); // warm up
    inProcess.set(pattern, inProcessRate(pattern, 1000));
  }
  const dir = await Deno.makeTempDir({ prefix: "commucat-bench-handshake-" });
  const embedded = await openStorage({ postgresDsn: null, redisUrl: null, dataDir: dir });
  try {
    await tcpRates(embedded, "PGlite + memory store", inProcess);
  } finally {
    await embedded.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  const services = benchServices("handshakes over TCP");
  if (!services) return;
  const real = await openStorage(services);
  try {
    await tcpRates(real, "Postgres + Redis", inProcess);
  } finally {
    await real.close();
  }
}

if (import.meta.main) await run();
