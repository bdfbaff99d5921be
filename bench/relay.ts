/**
 * Relay benchmarks (issue 4, Performance), loopback only, bounded:
 * - 1:1 relay of 100-byte MSG frames with a window of unacknowledged frames in flight:
 *   delivered frames/s and p50/p99 latency, v1 and v2, next to a plain Deno TCP forwarder that
 *   moves the same bytes in the same run (the ceiling);
 * - the guide's offline scenario: GROUP_CREATE, 10 000 frames to an offline member, queue and
 *   inbox_offset growth, then the drain on reconnect, with enqueue and drain rates.
 * Resident memory per idle connection is bench/memory.ts (a server in its own process).
 */
import { concatChunks } from "../protocol/bytes.ts";
import { encodeFrame, type Frame, FrameDecoder, FrameType } from "../protocol/frame.ts";
import { setLogLevel } from "../server/log.ts";
import { type ServerHandle, startServer } from "../server/server.ts";
import type { Config } from "../server/config/mod.ts";
import { openStorage } from "../storage/mod.ts";
import type { Storage } from "../storage/types.ts";
import { TestClient } from "../tests/server/helpers/client.ts";
import { BenchClient } from "./helpers/relay_client.ts";
import { benchServices } from "./helpers/env.ts";
import { testConfig } from "../tests/server/helpers/server.ts";

const PAYLOAD = 100;
const FRAMES = 200_000;
const WINDOW = 512;
const OFFLINE_FRAMES = 10_000;

function percentile(sorted: Float64Array, p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))];
}

function fmt(n: number, digits = 0): string {
  return n.toLocaleString("en-US", { maximumFractionDigits: digits });
}

/** A 100-byte payload carrying its send time. */
function stamped(): Uint8Array {
  const payload = new Uint8Array(PAYLOAD);
  new DataView(payload.buffer).setFloat64(0, performance.now());
  return payload;
}

function latencyOf(payload: Uint8Array): number {
  return performance.now() -
    new DataView(payload.buffer, payload.byteOffset, payload.byteLength).getFloat64(0);
}

interface Figures {
  rate: number;
  p50: number;
  p99: number;
  /** CPU time of this process per frame (µs), or NaN where /proc is not readable. */
  cpuPerFrame: number;
}

/** Channel ids for successive relay runs (each run's pair of devices gets its own). */
let nextChannel = 100;

/** Rounds of each measurement, interleaved; the best round counts (the cores are shared). */
const ROUNDS = 5;

/** User + system CPU seconds of this process so far (Linux /proc), or NaN elsewhere. */
function cpuSeconds(): number {
  try {
    const stat = Deno.readTextFileSync("/proc/self/stat");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in ticks of 1/100 s
  } catch {
    return NaN;
  }
}

/** Runs `measure`, adding the CPU time it took per frame. */
async function timed(measure: () => Promise<Omit<Figures, "cpuPerFrame">>): Promise<Figures> {
  const cpuBefore = cpuSeconds();
  const figures = await measure();
  return { ...figures, cpuPerFrame: ((cpuSeconds() - cpuBefore) * 1e6) / FRAMES };
}

/** The ceiling: a plain TCP forwarder moving the same encoded frames from A to B. */
async function forwarderCeiling(): Promise<Omit<Figures, "cpuPerFrame">> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const accepted: Deno.Conn[] = [];
  const acceptTwo = (async () => {
    for await (const conn of listener) {
      accepted.push(conn);
      if (accepted.length === 2) break;
    }
  })();
  const a = await Deno.connect({ hostname: "127.0.0.1", port });
  const b = await Deno.connect({ hostname: "127.0.0.1", port });
  await acceptTwo;
  const [fromA, toB] = accepted;
  const pump = (async () => {
    const buf = new Uint8Array(65536);
    while (true) {
      const n = await fromA.read(buf).catch(() => null);
      if (n === null) break;
      let off = 0;
      while (off < n) off += await toB.write(buf.subarray(off, n));
    }
    toB.close();
  })();
  const latencies = new Float64Array(FRAMES);
  let received = 0;
  let windowOpen = Promise.withResolvers<void>();
  const reader = (async () => {
    const decoder = new FrameDecoder();
    while (received < FRAMES) {
      const buf = new Uint8Array(65536);
      const n = await b.read(buf);
      if (n === null) break;
      decoder.push(buf.subarray(0, n));
      let f: Frame | null;
      while ((f = decoder.next()) !== null) {
        latencies[received++] = latencyOf(f.payload);
        if (received % (WINDOW / 2) === 0) windowOpen.resolve();
      }
    }
  })();
  const start = performance.now();
  let sent = 0;
  while (sent < FRAMES) {
    const batch: Uint8Array[] = [];
    while (sent < FRAMES && sent - received < WINDOW) {
      batch.push(
        encodeFrame({ type: FrameType.Msg, channel: 1, sequence: ++sent, payload: stamped() }),
      );
    }
    if (batch.length > 0) {
      const bytes = concatChunks(batch);
      let off = 0;
      while (off < bytes.length) off += await a.write(bytes.subarray(off));
    }
    if (sent - received >= WINDOW) {
      await windowOpen.promise;
      windowOpen = Promise.withResolvers<void>();
    }
  }
  await reader;
  const seconds = (performance.now() - start) / 1000;
  a.close();
  b.close();
  await pump;
  fromA.close(); // the listener closed when the accept loop broke out
  latencies.sort();
  return { rate: FRAMES / seconds, p50: percentile(latencies, 50), p99: percentile(latencies, 99) };
}

/**
 * Two clients on a 1:1 channel through the relay; the sender keeps WINDOW frames unacked.
 * The relay answers every frame with its own ACK to the sender and waits for the recipient's
 * acknowledgement of every frame (at-least-once); the recipient acknowledges in lists, once per
 * read, as the SDK does.
 */
async function relayRun(
  server: ServerHandle,
  config: Config,
  version: 1 | 2,
): Promise<Omit<Figures, "cpuPerFrame">> {
  const latencies = new Float64Array(FRAMES);
  let received = 0;
  let acked = 0;
  let windowOpen = Promise.withResolvers<void>();
  const tag = crypto.randomUUID().slice(0, 6);
  let pendingAcks: number[] = [];
  // deno-lint-ignore prefer-const
  let bob!: BenchClient; // assigned right below; its batch callback reads it later
  bob = await BenchClient.connect({
    port: server.ports.tcp,
    serverStatic: config.crypto.noisePublic,
    deviceId: `bench-bob-${tag}`,
    version,
    onFrame: (type, _channel, sequence, payload) => {
      if (type !== FrameType.Msg) return;
      latencies[received++] = latencyOf(payload);
      pendingAcks.push(sequence);
    },
    onBatch: () => {
      if (pendingAcks.length === 0) return;
      bob.control(FrameType.Ack, 0, { acks: pendingAcks });
      pendingAcks = [];
    },
  });
  const aliceId = `bench-alice-${tag}`;
  let joined: PromiseWithResolvers<void> | null = Promise.withResolvers<void>();
  const fail = (json: Record<string, unknown>) => {
    const failure = new Error(`relay error: ${JSON.stringify(json)}`);
    joined?.reject(failure);
    windowOpen.reject(failure);
  };
  const alice = await BenchClient.connect({
    port: server.ports.tcp,
    serverStatic: config.crypto.noisePublic,
    deviceId: aliceId,
    version,
    onAck: () => {
      if (joined) return joined.resolve(); // the JOIN's ACK
      acked++;
      if (acked % (WINDOW / 2) === 0 || acked === FRAMES) windowOpen.resolve();
    },
    onControl: (type, json) => {
      if (type === FrameType.Ack && joined) joined.resolve();
      else if (type === FrameType.Error) fail(json);
    },
  });
  const channel = nextChannel++;
  alice.control(FrameType.Join, channel, { members: [`bench-bob-${tag}`], relay: true });
  await joined.promise;
  joined = null;
  const start = performance.now();
  let sent = 0;
  while (sent < FRAMES) {
    const batch: Uint8Array[] = [];
    while (sent < FRAMES && sent - acked < WINDOW) {
      batch.push(
        encodeFrame({
          type: FrameType.Msg,
          channel,
          sequence: alice.nextSeq(),
          payload: stamped(),
        }),
      );
      sent++;
    }
    if (batch.length > 0) alice.send(concatChunks(batch));
    if (sent - acked >= WINDOW || sent === FRAMES) {
      await windowOpen.promise;
      windowOpen = Promise.withResolvers<void>();
    }
  }
  while (received < FRAMES) await new Promise((r) => setTimeout(r, 5));
  const seconds = (performance.now() - start) / 1000;
  await alice.close();
  await bob.close();
  latencies.sort();
  return { rate: FRAMES / seconds, p50: percentile(latencies, 50), p99: percentile(latencies, 99) };
}

/** The guide's scenario: GROUP_CREATE, 10 000 frames to an offline member, then the drain. */
async function offlineScenario(
  server: ServerHandle,
  config: Config,
  storage: Storage,
  label: string,
) {
  const tag = crypto.randomUUID().slice(0, 6);
  const sender = await TestClient.connect({
    port: server.ports.tcp,
    serverStatic: config.crypto.noisePublic,
    deviceId: `off-sender-${tag}`,
    user: { handle: `off-sender-${tag}` },
  });
  const offline = `off-recipient-${tag}`;
  const create = sender.control(FrameType.GroupCreate, 7, {
    group_id: `bench-group-${tag}`,
    members: [offline],
    relay: true,
  });
  await sender.reply(create);
  const samples: string[] = [];
  const start = performance.now();
  let last = 0;
  for (let i = 0; i < OFFLINE_FRAMES; i++) {
    last = sender.opaque(FrameType.Msg, 7, new Uint8Array(PAYLOAD));
    if ((i + 1) % 2500 === 0) {
      await sender.reply(last, 120_000);
      samples.push(`${i + 1}→${(await storage.relay.depth(offline)).depth}`);
    }
  }
  const enqueueSeconds = (performance.now() - start) / 1000;
  const depthBefore = (await storage.relay.depth(offline)).depth;
  let received = 0;
  const drained = Promise.withResolvers<void>();
  const drainStart = performance.now();
  let recipient: TestClient | null = null;
  const early: number[] = [];
  recipient = await TestClient.connect({
    port: server.ports.tcp,
    serverStatic: config.crypto.noisePublic,
    deviceId: offline,
    user: { handle: offline },
    autoAck: false,
    sink: (f) => {
      if (f.type !== FrameType.Msg) return;
      if (recipient) recipient.ack(f.sequence);
      else early.push(f.sequence); // arrived before connect() returned
      if (++received === OFFLINE_FRAMES) drained.resolve();
    },
  });
  if (early.length > 0) recipient.control(FrameType.Ack, 0, { acks: early });
  await drained.promise;
  const deliverSeconds = (performance.now() - drainStart) / 1000;
  while ((await storage.relay.depth(offline)).depth > 0) {
    await new Promise((r) => setTimeout(r, 20));
  }
  const drainSeconds = (performance.now() - drainStart) / 1000;
  const offset = await storage.offsets.read(offline, 7);
  await sender.close();
  await recipient.close();
  console.log(
    `offline scenario (${label}): ${fmt(OFFLINE_FRAMES)} frames queued in ${
      fmt(enqueueSeconds, 2)
    } s ` +
      `(${fmt(OFFLINE_FRAMES / enqueueSeconds)} frames/s enqueue); relay_queue depth ` +
      `${samples.join(", ")} (linear), ${fmt(depthBefore)} before reconnect`,
  );
  console.log(
    `offline scenario (${label}): replayed to the reconnected recipient in ${
      fmt(deliverSeconds, 2)
    } s, ` +
      `acknowledged and deleted in ${fmt(drainSeconds, 2)} s (${
        fmt(OFFLINE_FRAMES / drainSeconds)
      } ` +
      `frames/s drain); queue now empty, inbox_offset = envelope ${offset}`,
  );
}

/**
 * Runs the relay benchmarks and prints their figures. `parts` picks some of them
 * (`throughput`, `offline`); all by default. Memory per idle connection is measured
 * against a server in its own process by bench/memory.ts.
 */
export async function run(parts: string[] = []): Promise<void> {
  const want = (part: string) => parts.length === 0 || parts.includes(part);
  setLogLevel("warn"); // one JSON line per delivered frame would dominate the figures
  const dir = await Deno.makeTempDir({ prefix: "commucat-bench-relay-" });
  const storage = await openStorage({ postgresDsn: null, redisUrl: null, dataDir: dir });
  const config = testConfig({
    limits: { maxInflight: 4096, outboundQueueFrames: 65536, outboundQueueBytes: 64 << 20 },
  });
  const server = await startServer(config, { storage });
  try {
    if (want("throughput")) await throughput(server, config);
    if (want("offline")) await offlineScenario(server, config, storage, "PGlite + memory store");
  } finally {
    await server.stop();
    await storage.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  if (!want("offline")) return;
  const services = benchServices("offline scenario");
  if (!services) return;
  const real = await openStorage(services);
  const realServer = await startServer(config, { storage: real });
  try {
    await offlineScenario(realServer, config, real, "Postgres + Redis");
  } finally {
    await realServer.stop();
    await real.close();
  }
}

/**
 * The ceiling and the relay in v1 and v2, interleaved over {@link ROUNDS} rounds in one run, so
 * that load from elsewhere on the shared cores hits them alike; each figure is its best round.
 * The CPU time per frame (client and server ends together, in this process) is the figure that
 * noise moves least.
 */
async function throughput(server: ServerHandle, config: Config): Promise<void> {
  const best = new Map<string, Figures>();
  const keep = (name: string, f: Figures) => {
    const prev = best.get(name);
    if (!prev || f.rate > prev.rate) best.set(name, f);
  };
  for (let round = 0; round < ROUNDS; round++) {
    keep("ceiling", await timed(forwarderCeiling));
    for (const version of [1, 2] as const) {
      keep(`v${version}`, await timed(() => relayRun(server, config, version)));
    }
  }
  const ceiling = best.get("ceiling")!;
  const cpu = (f: Figures) =>
    Number.isNaN(f.cpuPerFrame) ? "" : `, ${fmt(f.cpuPerFrame, 2)} µs CPU per frame`;
  console.log(
    `ceiling (plain TCP forwarder): ${fmt(ceiling.rate)} frames/s, p50 ${fmt(ceiling.p50, 3)} ` +
      `ms, p99 ${fmt(ceiling.p99, 3)} ms${cpu(ceiling)} (${fmt(FRAMES)} × ${PAYLOAD} B, ` +
      `window ${WINDOW}, best of ${ROUNDS})`,
  );
  for (const version of [1, 2] as const) {
    const r = best.get(`v${version}`)!;
    console.log(
      `relay v${version}: ${fmt(r.rate)} frames/s delivered, p50 ${fmt(r.p50, 3)} ms, ` +
        `p99 ${fmt(r.p99, 3)} ms${cpu(r)} — ${fmt((100 * r.rate) / ceiling.rate, 1)} % of the ` +
        `ceiling (target ≥ 50 %)`,
    );
  }
}

if (import.meta.main) await run(Deno.args);
