/**
 * Handshakes per second over real TCP connections to an in-process relay, XK and IK (v2),
 * loopback only and bounded. Each handshake is a full connection: TCP connect, HELLO / AUTH
 * (/ AUTH), device resolution in storage, session row, completion ACK, close. Compare with the
 * in-process Noise responder figure printed by the protocol bench (`deno task bench noise`).
 */
import { setLogLevel } from "../server/log.ts";
import { startServer } from "../server/server.ts";
import { openStorage } from "../storage/mod.ts";
import { generateKeypair } from "../protocol/crypto.ts";
import { TestClient } from "../tests/server/helpers/client.ts";
import { testConfig } from "../tests/server/helpers/server.ts";

const HANDSHAKES = 400;
const CONCURRENCY = 16;

/** Runs the TCP handshake benchmark and prints handshakes/s per pattern. */
export async function run(): Promise<void> {
  setLogLevel("warn");
  const dir = await Deno.makeTempDir({ prefix: "commucat-bench-handshake-" });
  const storage = await openStorage({ postgresDsn: null, redisUrl: null, dataDir: dir });
  const config = testConfig();
  const server = await startServer(config, { storage });
  try {
    for (const pattern of ["XK", "IK"] as const) {
      // A fixed set of devices, registered by a first round, so the timed rounds measure
      // the steady state (known device, same key) rather than first registration.
      const devices = Array.from({ length: CONCURRENCY }, (_, i) => ({
        id: `hs-${pattern}-${i}-${crypto.randomUUID().slice(0, 4)}`,
        keypair: generateKeypair(),
      }));
      const once = async (d: { id: string; keypair: ReturnType<typeof generateKeypair> }) => {
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
        `handshakes over TCP (${pattern}, v2, ${CONCURRENCY} concurrent, PGlite): ` +
          `${(done / seconds).toFixed(0)} /s (${done} in ${seconds.toFixed(2)} s; ` +
          `client and server share this process's core)`,
      );
    }
  } finally {
    await server.stop();
    await storage.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) await run();
