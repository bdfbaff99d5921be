/**
 * Resident memory per established idle connection (issue 14 goal: at most 12 KiB each, measured
 * the way peerbench's W5 measures it).
 *
 * The relay runs as a separate process (`app/serve.ts` as `deno task serve` runs it, through
 * bench/memory_server.ts, which adds a full garbage collection on SIGUSR2 and prints the V8
 * heap split after it) in a temp data dir, so its RSS is its own: this process only holds the
 * client ends. Like peerbench W5: a fresh server, 200 connections opened and closed, the RSS once
 * it settles, then up to 5 000 connections that complete the handshake (XK, protocol v2) and
 * stay idle, and the RSS again. Three readings per connection: right after opening them (no
 * forced collection: what peerbench reports), after a forced full collection, and after 30 s
 * idle (V8's memory reducer has then returned the young-generation and old-space headroom the
 * burst of handshakes grew); plus the V8 heap in use per connection (the connections' own
 * objects) and the young generation's part. On Postgres + Redis a second server started with
 * V8's young generation capped (`--v8-flags=--max-semi-space-size=8`; peerbench starts it
 * without) shows how much of the figure that fixed part is: V8 sizes the young generation as
 * the process starts, and the burst of handshakes touches all of its pages. On Postgres + Redis when COMMUCAT_BENCH_PG_DSN / COMMUCAT_BENCH_REDIS_URL (or the
 * COMMUCAT_TEST_ ones) are set, and on the embedded defaults, where PGlite grows the heap at
 * start-up so that the burst's growth hides in what it left (why this bench once printed a far
 * lower figure than peerbench). Bounded: if fewer connections could be opened (file descriptor
 * limit, refusals), it says how many and computes per connection from those.
 *
 * The server's soft file-descriptor limit is raised to its hard limit by a `bash -c 'ulimit -n
 * …; exec deno …'` wrapper; this process needs one descriptor per connection too (`ulimit -n`).
 */
import { generateKeypair } from "../protocol/crypto.ts";
import { bytesToHex } from "../protocol/hex.ts";
import { TestClient } from "../tests/server/helpers/client.ts";

const TARGET_CONNECTIONS = 5_000;
const CONCURRENCY = 64;
/** Issue 14's goal: two thirds of nats-server's 18 KiB. */
const TARGET_KIB = 12;
/** How long the server sits idle before the last reading. */
const IDLE_WAIT_MS = 30_000;
/** The V8 start-up flag of the second Postgres + Redis reading: semi-spaces of 8 MiB. */
const SMALL_YOUNG = "--max-semi-space-size=8";
const MAIN = new URL("./memory_server.ts", import.meta.url).pathname;
const DENO_JSON = new URL("../deno.json", import.meta.url).pathname;

function fmt(n: number, digits = 0): string {
  return n.toLocaleString("en-US", { maximumFractionDigits: digits });
}

/** VmRSS of a process in KiB (Linux). */
async function rssKiB(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  if (!match) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(match[1]);
}

/**
 * RSS once it stops moving: samples every 500 ms until two consecutive samples differ by less
 * than 1 % (at most `maxMs`), so start-up and handshake transients are not counted.
 */
export async function settledRssKiB(
  pid: number,
  { gc = true, maxMs = 20_000 }: { gc?: boolean; maxMs?: number } = {},
): Promise<number> {
  // A full collection first (bench/memory_server.ts), twice: the first frees, the second compacts.
  for (let i = 0; gc && i < 2; i++) {
    Deno.kill(pid, "SIGUSR2");
    await new Promise((r) => setTimeout(r, 500));
  }
  const deadline = Date.now() + maxMs;
  let last = await rssKiB(pid);
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 500));
    const now = await rssKiB(pid);
    if (Math.abs(now - last) < last * 0.01) return now;
    last = now;
  }
  return last;
}

/** This process's own soft descriptor limit (what bounds the client ends). */
async function ownFdLimit(): Promise<number> {
  try {
    const limits = await Deno.readTextFile("/proc/self/limits");
    const match = /^Max open files\s+(\d+)/m.exec(limits);
    return match ? Number(match[1]) : Infinity;
  } catch {
    return Infinity;
  }
}

export interface Spawned {
  child: Deno.ChildProcess;
  tcpPort: number;
  output: string[];
  done: Promise<void>;
}

/** Starts the server process and waits for its "listening" lines. */
export async function spawnServer(
  dataDir: string,
  noisePrivate: Uint8Array,
  extraEnv: Record<string, string> = {},
  /** V8 flags besides --expose-gc (start-up flags: V8 reads its heap sizes only then). */
  v8Flags: string[] = [],
): Promise<Spawned> {
  const deno = Deno.execPath();
  const flags = ["--expose-gc", ...v8Flags].join(",");
  const script =
    `ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$0" run -A --v8-flags=${flags} --config "$1" "$2"`;
  const child = new Deno.Command("bash", {
    args: ["-c", script, deno, DENO_JSON, MAIN],
    env: {
      COMMUCAT_DATA_DIR: dataDir,
      COMMUCAT_BIND: "127.0.0.1:0",
      COMMUCAT_TCP_BIND: "127.0.0.1:0",
      COMMUCAT_CONSOLE_BIND: "127.0.0.1:0",
      COMMUCAT_NOISE_PRIVATE: bytesToHex(noisePrivate),
      COMMUCAT_AUTO_APPROVE_DEVICES: "true",
      // Idle on purpose: the connections must outlive the measurement.
      COMMUCAT_KEEPALIVE: "3600",
      COMMUCAT_LOG_LEVEL: "warn",
      // Thousands of handshakes from one address, on purpose: no rate limit or cap applies.
      COMMUCAT_HANDSHAKES_PER_MINUTE: "1000000",
      COMMUCAT_REGISTRATIONS_PER_HOUR: "1000000",
      COMMUCAT_UNAUTHENTICATED_PER_ADDRESS: "1000000",
      COMMUCAT_UNAUTHENTICATED_TOTAL: "10000000",
      COMMUCAT_MEMORY_BUDGET: "1125899906842624",
      NO_COLOR: "1",
      ...extraEnv,
    },
    cwd: dataDir,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output: string[] = [];
  const port = Promise.withResolvers<number>();
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    const decoder = new TextDecoder();
    let rest = "";
    for await (const chunk of stream) {
      rest += decoder.decode(chunk, { stream: true });
      const lines = rest.split("\n");
      rest = lines.pop()!;
      for (const line of lines) {
        if (output.length < 200 || line.startsWith("gc done")) output.push(line);
        const m = /^CCP-1 listening on tcp:\/\/[^:]+:(\d+)/.exec(line);
        if (m) port.resolve(Number(m[1]));
      }
    }
    port.reject(new Error(`server exited before listening:\n${output.join("\n")}`));
  };
  const done = Promise.all([pump(child.stdout), pump(child.stderr)]).then(() => {});
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const tcpPort = await Promise.race([
      port.promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error("server did not start in 60 s")), 60_000);
      }),
    ]);
    return { child, tcpPort, output, done };
  } catch (err) {
    child.kill("SIGKILL");
    await child.status;
    await done;
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/** Opens `count` established connections in parallel batches; stops at the first failures. */
async function openIdle(
  port: number,
  serverStatic: Uint8Array,
  count: number,
  clients: TestClient[],
): Promise<string | null> {
  let failure: string | null = null;
  let next = 0;
  const worker = async () => {
    while (failure === null && next < count) {
      const i = next++;
      const deviceId = `mem-${i}-${crypto.randomUUID().slice(0, 6)}`;
      try {
        clients.push(
          await TestClient.connect({
            port,
            serverStatic,
            deviceId,
            user: { handle: deviceId },
            pattern: "XK",
            versions: [2],
          }),
        );
      } catch (err) {
        failure ??= `connection ${i + 1} failed: ${(err as Error).message}`;
      }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return failure;
}

interface HeapSplit {
  heapUsed: number;
  heapTotal: number;
  external: number;
  /** KiB reserved by V8's young generation (new_space). */
  young: number;
  /** KiB reserved and in use in V8's old generation (old_space). */
  old: number;
  oldUsed: number;
}

/** The server's own heap split, from the line memory_server.ts prints after a collection. */
function lastHeap(output: string[]): HeapSplit | null {
  for (let i = output.length - 1; i >= 0; i--) {
    const m = /^gc done (\{[^}]*\}) (\[.*\])$/.exec(output[i]);
    if (!m) continue;
    const spaces = JSON.parse(m[2]) as [string, number, number][];
    const space = (name: string) => spaces.find(([n]) => n === name) ?? [name, 0, 0];
    return {
      ...JSON.parse(m[1]),
      young: space("new_space")[1],
      old: space("old_space")[1],
      oldUsed: space("old_space")[2],
    };
  }
  return null;
}

/**
 * One fresh server on `label` storage: 200 connections opened and closed (warm-up), the RSS
 * once it settles, then up to 5 000 idle connections and the RSS again, read three ways:
 * right away (what peerbench's W5 reads: the V8 heap and the allocator as the burst of
 * handshakes left them), after a forced full collection, and after the server sat idle long
 * enough for V8's memory reducer to give back the heap headroom the burst grew.
 */
async function measure(
  label: string,
  extraEnv: Record<string, string>,
  v8Flags: string[] = [],
): Promise<void> {
  const dataDir = await Deno.makeTempDir({ prefix: "commucat-bench-memory-" });
  const keys = generateKeypair();
  const server = await spawnServer(dataDir, keys.privateKey, extraEnv, v8Flags);
  const clients: TestClient[] = [];
  try {
    // Headroom for the admin console, storage files and the bench's own descriptors.
    const fdLimit = await ownFdLimit();
    const wanted = Math.max(0, Math.min(TARGET_CONNECTIONS, fdLimit - 200));
    if (wanted < TARGET_CONNECTIONS) {
      console.log(
        `memory: this process may open ${fmt(fdLimit)} files (ulimit -n); ` +
          `opening ${fmt(wanted)} connections (raise it with ulimit -n 11000)`,
      );
    }
    const pid = server.child.pid;
    // Warm-up as peerbench's W5 does it: 200 handshakes load the code paths; closed again.
    const warm: TestClient[] = [];
    await openIdle(server.tcpPort, keys.publicKey, 200, warm);
    await Promise.all(warm.map((c) => c.close()));
    await new Promise((r) => setTimeout(r, 1000));
    const before = await settledRssKiB(pid, { gc: false });
    const gcBefore = await settledRssKiB(pid);
    const heapBefore = lastHeap(server.output);
    const started = performance.now();
    const failure = await openIdle(server.tcpPort, keys.publicKey, wanted, clients);
    const openSeconds = (performance.now() - started) / 1000;
    const opened = clients.length;
    if (failure) console.log(`memory: stopped at ${fmt(opened)} connections; ${failure}`);
    if (opened === 0) {
      console.log(`memory (${label}): no connection could be opened; no figure`);
      return;
    }
    const after = await settledRssKiB(pid, { gc: false });
    const gcAfter = await settledRssKiB(pid);
    const heapAfter = lastHeap(server.output);
    // V8's memory reducer starts once the process is idle (its delay is 8 s after the last
    // major collection); 30 s covers it and its second pass.
    const embedded = label === "embedded";
    const idleWait = embedded || v8Flags.length > 0 ? 0 : IDLE_WAIT_MS;
    if (idleWait > 0) await new Promise((r) => setTimeout(r, idleWait));
    const idle = idleWait > 0 ? await settledRssKiB(pid, { gc: false }) : 0;
    const per = (a: number, b: number) => (a - b) / opened;
    const verdict = (kib: number) => (kib <= TARGET_KIB ? "met" : "NOT met");
    const burst = per(after, before);
    const collected = per(gcAfter, gcBefore);
    console.log(
      `memory (${label}): ${fmt(opened)} idle connections (XK, v2) opened in ` +
        `${fmt(openSeconds, 1)} s; server VmRSS ${fmt(before / 1024, 1)} MiB → ` +
        `${fmt(after / 1024, 1)} MiB`,
    );
    if (embedded) {
      // The uncollected readings carry PGlite's start-up garbage, which the burst's collections
      // free: only the collected figure means something here.
      console.log(
        `memory (${label}): ${fmt(collected, 1)} KiB per connection after a full collection ` +
          `(target ≤ ${TARGET_KIB} KiB: ${verdict(collected)}; the uncollected readings hold ` +
          "PGlite's start-up garbage and say nothing)",
      );
    } else {
      console.log(
        `memory (${label}): ${fmt(burst, 1)} KiB per connection right after opening them ` +
          `(as peerbench W5 reads it; target ≤ ${TARGET_KIB} KiB: ${verdict(burst)})`,
      );
      console.log(
        `memory (${label}): ${fmt(collected, 1)} KiB per connection after a full collection` +
          (idleWait > 0
            ? `; ${fmt(per(idle, before), 1)} KiB after ${idleWait / 1000} s idle ` +
              "(V8's memory reducer gave the burst's heap headroom back)"
            : ""),
      );
    }
    if (heapBefore && heapAfter) {
      const kib = (k: "heapUsed" | "heapTotal" | "external") =>
        fmt((heapAfter[k] - heapBefore[k]) / 1024 / opened, 1);
      console.log(
        `memory (${label}): of which V8 heap in use ${kib("heapUsed")} KiB, heap reserved ` +
          `${kib("heapTotal")} KiB, external (buffers) ${kib("external")} KiB per connection; ` +
          "the rest is outside the V8 heap (sockets, the allocator)",
      );
      // The young generation's size is set as the process starts (start-up allocations grow
      // it to V8's maximum); the burst of handshakes, each allocating some hundred KiB of
      // short-lived objects, touches all of its pages: the same megabytes whatever the count.
      const young = heapAfter.young - heapBefore.young;
      console.log(
        `memory (${label}): V8 young generation ${fmt(heapBefore.young / 1024, 1)} → ` +
          `${fmt(heapAfter.young / 1024, 1)} MiB reserved (${fmt(young / opened, 1)} KiB per ` +
          `connection, a fixed amount); old generation in use ` +
          `${fmt((heapAfter.oldUsed - heapBefore.oldUsed) / opened, 1)} KiB, reserved ` +
          `${fmt((heapAfter.old - heapBefore.old) / opened, 1)} KiB per connection`,
      );
    }
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    try {
      server.child.kill("SIGTERM");
    } catch {
      // already gone
    }
    const status = await server.child.status;
    await server.done;
    if (!status.success) {
      console.log(`memory: server exited with ${status.code}: ${server.output.slice(-5)}`);
    }
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
}

/**
 * Runs the memory bench on Postgres + Redis (what peerbench runs; when COMMUCAT_BENCH_PG_DSN
 * and COMMUCAT_BENCH_REDIS_URL, or the COMMUCAT_TEST_ ones, name them) and on the embedded
 * defaults, and prints KiB per idle connection against the target.
 */
export async function run(): Promise<void> {
  const dsn = Deno.env.get("COMMUCAT_BENCH_PG_DSN") ?? Deno.env.get("COMMUCAT_TEST_PG_DSN");
  const redis = Deno.env.get("COMMUCAT_BENCH_REDIS_URL") ??
    Deno.env.get("COMMUCAT_TEST_REDIS_URL");
  if (dsn && redis) {
    const env = { COMMUCAT_PG_DSN: dsn, COMMUCAT_REDIS_URL: redis };
    await measure("Postgres + Redis", env);
    // The same server with V8's young generation capped at start-up (peerbench starts it
    // without): how much of the figure the young generation's size is.
    await measure("Postgres + Redis, --max-semi-space-size=8", env, [SMALL_YOUNG]);
  } else {
    console.log(
      "memory on Postgres + Redis (what peerbench W5 measures): set COMMUCAT_BENCH_PG_DSN and " +
        "COMMUCAT_BENCH_REDIS_URL to measure it",
    );
  }
  // Embedded: PGlite grows the heap at start-up, so the burst's growth hides in what it left.
  await measure("embedded", {});
}

if (import.meta.main) await run();
