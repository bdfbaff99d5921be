/**
 * Resident memory per established idle connection (issue 4 target: at most 20 KiB each).
 *
 * The relay runs as a separate process (`app/serve.ts` as `deno task serve` runs it, through
 * bench/memory_server.ts which adds a full garbage collection on SIGUSR2 before each reading) on
 * embedded storage in a temp data dir, so its RSS is its own: this process only holds
 * the client ends. The bench opens up to 5 000 connections that complete the handshake (XK,
 * protocol v2) and then stay idle, reads the server's VmRSS from /proc/<pid>/status when idle,
 * after the first fifth and after all of them (each after a full collection), and prints KiB per
 * connection from idle to all of them (held against the target) and for the last four fifths
 * alone (the marginal cost, once the tables and code paths are warm). Bounded: if fewer connections could be opened (file
 * descriptor limit, refusals), it says how many and computes per connection from those.
 *
 * The server's soft file-descriptor limit is raised to its hard limit by a `bash -c 'ulimit -n
 * …; exec deno …'` wrapper; this process needs one descriptor per connection too (`ulimit -n`).
 */
import { generateKeypair } from "../protocol/crypto.ts";
import { bytesToHex } from "../protocol/hex.ts";
import { TestClient } from "../tests/server/helpers/client.ts";

const TARGET_CONNECTIONS = 5_000;
const CONCURRENCY = 64;
const TARGET_KIB = 20;
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
export async function settledRssKiB(pid: number, maxMs = 20_000): Promise<number> {
  // A full collection first (bench/memory_server.ts), twice: the first frees, the second compacts.
  for (let i = 0; i < 2; i++) {
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
): Promise<Spawned> {
  const deno = Deno.execPath();
  const script =
    `ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$0" run -A --v8-flags=--expose-gc --config "$1" "$2"`;
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
        if (output.length < 200) output.push(line);
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

/** Runs the memory bench and prints KiB per idle connection against the target. */
export async function run(): Promise<void> {
  const dataDir = await Deno.makeTempDir({ prefix: "commucat-bench-memory-" });
  const keys = generateKeypair();
  const server = await spawnServer(dataDir, keys.privateKey);
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
    // Warm-up: the first handshakes load code paths and grow the device and session tables;
    // close them again and wait for the start-up transients to pass.
    const warm: TestClient[] = [];
    await openIdle(server.tcpPort, keys.publicKey, 200, warm);
    await Promise.all(warm.map((c) => c.close()));
    const before = await settledRssKiB(server.child.pid);

    // Two stages: the first fifth, then the rest. The first stage also absorbs what the
    // handshakes themselves leave behind (code, tables, V8 heap growth and its first major
    // collections), so the second stage's growth is the connections' own cost.
    const started = performance.now();
    const firstStage = Math.floor(wanted / 5);
    let failure = await openIdle(server.tcpPort, keys.publicKey, firstStage, clients);
    const middle = await settledRssKiB(server.child.pid);
    const atMiddle = clients.length;
    if (failure === null) {
      failure = await openIdle(server.tcpPort, keys.publicKey, wanted - atMiddle, clients);
    }
    const openSeconds = (performance.now() - started) / 1000;
    // Let the server settle (session rows written, buffers of the handshakes released).
    const after = await settledRssKiB(server.child.pid);
    const opened = clients.length;
    if (failure) console.log(`memory: stopped at ${fmt(opened)} connections; ${failure}`);
    if (opened === 0) {
      console.log("memory: no connection could be opened; no figure");
      return;
    }
    const overall = (after - before) / opened;
    console.log(
      `memory: ${fmt(opened)} established idle connections (XK, v2) opened in ` +
        `${fmt(openSeconds, 1)} s; server VmRSS (separate process) ${fmt(before / 1024, 1)} MiB ` +
        `idle → ${fmt(middle / 1024, 1)} MiB at ${fmt(atMiddle)} → ${fmt(after / 1024, 1)} MiB ` +
        `at ${fmt(opened)}`,
    );
    console.log(
      `memory: ${fmt(overall, 1)} KiB per connection (idle → ${fmt(opened)}; target ≤ ` +
        `${TARGET_KIB} KiB: ${overall <= TARGET_KIB ? "met" : "NOT met"})`,
    );
    const added = opened - atMiddle;
    if (added > 0) {
      const marginal = (after - middle) / added;
      console.log(
        `memory: ${fmt(marginal, 1)} KiB per connection for the last ${fmt(added)} alone ` +
          `(${fmt(atMiddle)} → ${fmt(opened)})`,
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

if (import.meta.main) await run();
