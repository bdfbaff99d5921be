/**
 * Fault-test harness: real server processes (`app/serve.ts`), a Redis and a Postgres of the
 * test's own on other ports (never the shared ones), numbered frames counted on both ends.
 * Everything is loopback and bounded; every helper cleans up what it started.
 */
import { generateKeypair, type Keypair } from "../../protocol/crypto.ts";
import { type Frame, FrameType } from "../../protocol/frame.ts";
import { TestClient } from "../server/helpers/client.ts";
import { freePort, waitUntil } from "../helpers/wait.ts";
import {
  nodeEnv as sharedNodeEnv,
  type NodeProcess,
  ready,
  spawnNode,
  stopNode,
} from "../helpers/node_process.ts";

export { freePort };

/** Whether `cmd` runs here (e.g. redis-server, initdb). */
export function available(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/** The first existing file among `paths`, or null. */
export function firstExisting(paths: string[]): string | null {
  return paths.find(available) ?? null;
}

export const REDIS_SERVER = firstExisting(["/usr/bin/redis-server", "/usr/local/bin/redis-server"]);

/** Postgres's server binaries (initdb, pg_ctl), newest major first. */
export function postgresBin(): string | null {
  try {
    const majors = [...Deno.readDirSync("/usr/lib/postgresql")].map((e) => e.name)
      .filter((n) => /^\d+$/.test(n)).sort((a, b) => Number(b) - Number(a));
    for (const m of majors) {
      const dir = `/usr/lib/postgresql/${m}/bin`;
      if (available(`${dir}/initdb`) && available(`${dir}/pg_ctl`)) return dir;
    }
  } catch {
    // not installed
  }
  return null;
}

async function waitPort(port: number, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      c.close();
      return;
    } catch {
      if (Date.now() > deadline) throw new Error(`${what} did not listen on ${port} in time`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** A redis-server of the test's own: no persistence, so a restart comes back empty. */
export class OwnRedis {
  #child: Deno.ChildProcess | null = null;
  readonly port = freePort();

  get url(): string {
    return `redis://127.0.0.1:${this.port}/0`;
  }

  async start(): Promise<void> {
    this.#child = new Deno.Command(REDIS_SERVER!, {
      args: [
        "--port",
        String(this.port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    await waitPort(this.port, 10_000, "redis-server");
  }

  /** SIGKILL: what it held is gone. */
  async kill(): Promise<void> {
    if (!this.#child) return;
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // gone
    }
    await this.#child.status;
    this.#child = null;
  }
}

/** A Postgres cluster of the test's own (initdb in a temp dir, trust auth, one port). */
export class OwnPostgres {
  readonly port = freePort();
  #dir = "";
  readonly #bin: string;

  constructor(bin: string) {
    this.#bin = bin;
  }

  get dsn(): string {
    return `postgres://postgres@127.0.0.1:${this.port}/postgres`;
  }

  async #run(cmd: string, args: string[]): Promise<void> {
    // Postgres refuses to run as root: a root test run runs it as the postgres user.
    const [program, all] = isRoot()
      ? ["runuser", ["-u", "postgres", "--", `${this.#bin}/${cmd}`, ...args]]
      : [`${this.#bin}/${cmd}`, args];
    const out = await new Deno.Command(program, { args: all, stdout: "piped", stderr: "piped" })
      .output();
    if (!out.success) {
      throw new Error(`${cmd} failed: ${new TextDecoder().decode(out.stderr).slice(0, 2000)}`);
    }
  }

  async init(): Promise<void> {
    this.#dir = await Deno.makeTempDir({ prefix: "commucat-fault-pg-" });
    if (isRoot()) {
      const pg = await new Deno.Command("id", { args: ["-u", "postgres"] }).output();
      const pgGroup = await new Deno.Command("id", { args: ["-g", "postgres"] }).output();
      const uid = Number(new TextDecoder().decode(pg.stdout).trim());
      const gid = Number(new TextDecoder().decode(pgGroup.stdout).trim());
      await Deno.chown(this.#dir, uid, gid);
    }
    await this.#run("initdb", ["-D", `${this.#dir}/data`, "-U", "postgres", "-A", "trust"]);
  }

  async start(): Promise<void> {
    await this.#run("pg_ctl", [
      "-D",
      `${this.#dir}/data`,
      "-l",
      `${this.#dir}/log`,
      "-w",
      "-o",
      `-p ${this.port} -k ${this.#dir} -c listen_addresses=127.0.0.1 -c fsync=off`,
      "start",
    ]);
  }

  /** An immediate stop (like a crash: no checkpoint). */
  async stop(): Promise<void> {
    await this.#run("pg_ctl", ["-D", `${this.#dir}/data`, "-m", "immediate", "-w", "stop"])
      .catch(() => {});
  }

  async remove(): Promise<void> {
    await this.stop();
    if (this.#dir) await Deno.remove(this.#dir, { recursive: true }).catch(() => {});
  }
}

/** Whether this process may run initdb (it refuses root). */
export function isRoot(): boolean {
  return Deno.uid() === 0;
}

/** One server process. */
export { type NodeProcess, ready, spawnNode, stopNode };

/** The environment every node of one test shares (tests/helpers/node_process.ts), less logging. */
export function nodeEnv(
  keys: Keypair,
  services: { dsn: string; redis: string },
  extra: Record<string, string> = {},
): Record<string, string> {
  return sharedNodeEnv(keys, services, { COMMUCAT_LOG_LEVEL: "warn", ...extra });
}

/** Resident set size of a process in bytes (Linux /proc). */
export function rssOf(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const m = /^VmRSS:\s+(\d+) kB/m.exec(status);
  return m ? Number(m[1]) * 1024 : 0;
}

/** Open file descriptors of a process (Linux /proc). */
export function fdsOf(pid: number): number {
  return [...Deno.readDirSync(`/proc/${pid}/fd`)].length;
}

/** Polls until `check` holds (a bound, not a timing assertion). */
export function until(check: () => boolean | Promise<boolean>, ms: number, what: string) {
  return waitUntil(check, what, ms, 50);
}

/** A client of one node with a fixed identity, so it can come back elsewhere. */
export interface Identity {
  deviceId: string;
  keypair: Keypair;
}

export function identity(prefix: string): Identity {
  return { deviceId: `${prefix}-${crypto.randomUUID().slice(0, 8)}`, keypair: generateKeypair() };
}

/** Connects `who`; with a `sink`, MSG / KEY_UPDATE / GROUP_EVENT frames are still ACKed
 * (unless `autoAck` is false), like a client that processed them. */
export async function connect(
  port: number,
  serverStatic: Uint8Array,
  who: Identity,
  extra: { autoAck?: boolean; sink?: (f: Frame) => void } = {},
): Promise<TestClient> {
  let client: TestClient | null = null;
  const early: number[] = [];
  const acked = new Set<number>([FrameType.Msg, FrameType.KeyUpdate, FrameType.GroupEvent]);
  const sink = extra.sink
    ? (f: Frame) => {
      extra.sink!(f);
      if (extra.autoAck === false || !acked.has(f.type)) return;
      if (client) client.ack(f.sequence);
      else early.push(f.sequence);
    }
    : undefined;
  client = await TestClient.connect({
    port,
    serverStatic,
    deviceId: who.deviceId,
    keypair: who.keypair,
    user: { handle: who.deviceId },
    autoAck: extra.autoAck,
    sink,
  });
  for (const seq of early) client.ack(seq);
  return client;
}

/**
 * The sender's side of a numbered run: frames `m:<run>:<i>` on `channel`; tracks which the
 * server acknowledged (ACK) and which it refused (ERROR with the sequence).
 */
export class NumberedSender {
  readonly acked = new Set<number>();
  readonly refused = new Set<number>();
  readonly #bySeq = new Map<number, number>();

  constructor(readonly client: TestClient, readonly channel: number, readonly run: string) {}

  /** Sends frames `from` … `to - 1` without waiting. */
  send(from: number, to: number): void {
    for (let i = from; i < to; i++) {
      const seq = this.client.msg(this.channel, `m:${this.run}:${i}`);
      this.#bySeq.set(seq, i);
    }
  }

  /** Collects the answers of everything sent (bounded by `ms`). */
  async settle(ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while (this.acked.size + this.refused.size < this.#bySeq.size && Date.now() < deadline) {
      const frame = await this.client.next(
        (f) => f.type === FrameType.Ack || f.type === FrameType.Error,
        Math.max(1, deadline - Date.now()),
      ).catch(() => null);
      if (frame === null) break;
      const json = (frame.json ?? {}) as Record<string, unknown>;
      const seq = frame.type === FrameType.Ack ? json.ack : json.sequence;
      const i = typeof seq === "number" ? this.#bySeq.get(seq) : undefined;
      if (i === undefined) continue;
      (frame.type === FrameType.Ack ? this.acked : this.refused).add(i);
    }
  }
}

/** The recipient's count of a run: frames seen per number (duplicates counted). */
export class NumberedInbox {
  readonly seen = new Map<number, number>();

  constructor(readonly run: string) {}

  sink = (frame: Frame): void => {
    if (frame.type !== FrameType.Msg) return;
    const text = new TextDecoder().decode(frame.payload);
    const m = /m:([^:]+):(\d+)$/.exec(text);
    if (!m || m[1] !== this.run) return;
    const i = Number(m[2]);
    this.seen.set(i, (this.seen.get(i) ?? 0) + 1);
  };

  get duplicates(): number {
    let d = 0;
    for (const n of this.seen.values()) d += n - 1;
    return d;
  }

  /** Acknowledged frames never seen here. */
  lost(acked: Iterable<number>): number[] {
    return [...acked].filter((i) => !this.seen.has(i)).sort((a, b) => a - b);
  }
}

/** What {@link withFaultNodes} hands its body. */
export interface FaultNodes {
  nodes: NodeProcess[];
  /** The Noise key the nodes share. */
  keys: Keypair;
  redis: OwnRedis;
  /** Registers a client (or socket) to be closed at the end; returns it. */
  track: <C extends { close(): unknown }>(client: C) => C;
}

/**
 * Two nodes of one deployment on the Postgres `dsn` and a Redis of the test's own, in a temp
 * folder named after `prefix`; afterwards every tracked client is closed, the nodes are stopped
 * with `stop` (SIGTERM by default), the Redis is killed and the folder removed, whatever `body`
 * did.
 */
export async function withFaultNodes(
  opts: {
    prefix: string;
    dsn: string;
    env?: Record<string, string>;
    stop?: "SIGTERM" | "SIGKILL";
  },
  body: (ctx: FaultNodes) => Promise<void>,
): Promise<void> {
  const redis = new OwnRedis();
  await redis.start();
  const dir = await Deno.makeTempDir({ prefix: `commucat-fault-${opts.prefix}-` });
  const keys = generateKeypair();
  const env = nodeEnv(keys, { dsn: opts.dsn, redis: redis.url }, opts.env);
  const nodes: NodeProcess[] = [];
  const clients: { close(): unknown }[] = [];
  try {
    for (const name of ["one", "two"]) nodes.push(await spawnNode(env, `${dir}/${name}`));
    await body({ nodes, keys, redis, track: (c) => (clients.push(c), c) });
  } finally {
    for (const c of clients) {
      try {
        await c.close();
      } catch {
        // closed already
      }
    }
    for (const n of nodes) await stopNode(n, opts.stop);
    await redis.kill();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}
