/**
 * Server processes for tests: `app/serve.ts` started as `deno task serve` starts it, configured
 * through COMMUCAT_* variables, in a folder of its own, its output kept; several of them form
 * the nodes of one deployment when they share one Postgres, one Redis and one Noise key.
 */
import { bytesToHex } from "../../protocol/hex.ts";
import type { Keypair } from "../../protocol/crypto.ts";
import { withTimeout } from "../server/helpers/client.ts";

const MAIN = new URL("../../app/serve.ts", import.meta.url).pathname;
const DENO_JSON = new URL("../../deno.json", import.meta.url).pathname;
/** Output lines kept per node (the newest; the oldest are dropped). */
const KEPT_LINES = 5000;

export interface NodeProcess {
  child: Deno.ChildProcess;
  tcpPort: number;
  httpPort: number;
  /** Its stdout and stderr lines, the newest {@link KEPT_LINES}. */
  output: string[];
  /** Both output streams have ended. */
  done: Promise<void>;
}

/**
 * The environment the nodes of one deployment share: the given services, port 0 everywhere,
 * one Noise key, auto-approval; `extra` adds or overrides.
 */
export function nodeEnv(
  keys: Keypair,
  services: { dsn: string; redis: string },
  extra: Record<string, string> = {},
): Record<string, string> {
  return {
    COMMUCAT_PG_DSN: services.dsn,
    COMMUCAT_REDIS_URL: services.redis,
    COMMUCAT_BIND: "127.0.0.1:0",
    COMMUCAT_TCP_BIND: "127.0.0.1:0",
    COMMUCAT_CONSOLE_BIND: "127.0.0.1:0",
    COMMUCAT_NOISE_PRIVATE: bytesToHex(keys.privateKey),
    COMMUCAT_AUTO_APPROVE_DEVICES: "true",
    ...extra,
  };
}

/**
 * Starts `app/serve.ts` in `dir` (its data in `dir/data`) with `env`; resolves once it printed
 * where it listens. With `clean`, `env` is all it gets (and PATH, HOME, DENO_DIR), as from an
 * operator's shell; else it inherits this process's environment too.
 */
export async function spawnNode(
  env: Record<string, string>,
  dir: string,
  options: { clean?: boolean } = {},
): Promise<NodeProcess> {
  await Deno.mkdir(`${dir}/data`, { recursive: true });
  const basics: Record<string, string> = {};
  for (const name of ["PATH", "HOME", "DENO_DIR"]) {
    const value = Deno.env.get(name);
    if (value !== undefined) basics[name] = value;
  }
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--config", DENO_JSON, MAIN],
    env: {
      ...(options.clean ? basics : {}),
      ...env,
      COMMUCAT_DATA_DIR: `${dir}/data`,
      NO_COLOR: "1",
    },
    clearEnv: options.clean ?? false,
    cwd: dir,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output: string[] = [];
  const ports = Promise.withResolvers<{ tcp: number; http: number }>();
  let tcp = 0;
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    let rest = "";
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      rest += decoder.decode(chunk, { stream: true });
      const lines = rest.split("\n");
      rest = lines.pop()!;
      for (const line of lines) {
        output.push(line);
        if (output.length > KEPT_LINES) output.shift();
        const t = /^CCP-1 listening on tcp:\/\/[^:]+:(\d+)/.exec(line);
        if (t) tcp = Number(t[1]);
        const h = /^HTTP listening on http:\/\/[^:]+:(\d+)/.exec(line);
        if (h) ports.resolve({ tcp, http: Number(h[1]) });
      }
    }
    ports.reject(new Error(`server exited before listening:\n${output.join("\n")}`));
  };
  const done = Promise.all([pump(child.stdout), pump(child.stderr)]).then(() => {});
  ports.promise.catch(() => {});
  const bound = await withTimeout(ports.promise, 60_000, "server start");
  return { child, tcpPort: bound.tcp, httpPort: bound.http, output, done };
}

/** SIGTERM (graceful) or SIGKILL; resolves with the exit status once its output has ended. */
export async function stopNode(
  node: NodeProcess,
  signal: "SIGTERM" | "SIGKILL" = "SIGTERM",
): Promise<Deno.CommandStatus> {
  try {
    node.child.kill(signal);
  } catch {
    // already gone
  }
  const status = await node.child.status;
  await node.done;
  return status;
}

/** Whether the node answers GET /readyz with 200 (false while it cannot, or is not up). */
export async function ready(node: NodeProcess): Promise<boolean> {
  try {
    const res = await fetch(`http://127.0.0.1:${node.httpPort}/readyz`);
    await res.body?.cancel();
    return res.status === 200;
  } catch {
    return false;
  }
}
