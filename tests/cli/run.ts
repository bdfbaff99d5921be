/**
 * Runs the operator CLI as a separate process, the way an operator types it, and captures its
 * exit code and output. The process starts in `cwd` (a temp dir, so no ./commucat.toml is
 * picked up) with a clean environment: only what the test passes plus what Deno needs.
 */
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const MAIN = `${ROOT}cli/main.ts`;
export const DENO_CONFIG = `${ROOT}deno.json`;

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Variables Deno itself needs (its cache, proxies), passed through to the child. */
function baseEnv(): Record<string, string> {
  const env: Record<string, string> = { NO_COLOR: "1", USER: "cli-test" };
  for (const name of ["PATH", "HOME", "DENO_DIR", "XDG_CACHE_HOME", "TMPDIR", "LANG"]) {
    const value = Deno.env.get(name);
    if (value !== undefined) env[name] = value;
  }
  return env;
}

/** Runs `deno run -A cli/main.ts …args` and waits for it to exit. */
export async function cli(
  args: string[],
  env: Record<string, string> = {},
  cwd: string = Deno.cwd(),
): Promise<CliResult> {
  const command = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--config", DENO_CONFIG, MAIN, ...args],
    env: { ...baseEnv(), ...env },
    clearEnv: true,
    cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  });
  const out = await command.output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

/** A readable assertion message: the command and everything it printed. */
export function show(args: string[], r: CliResult): string {
  return `cli ${args.join(" ")} → exit ${r.code}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;
}

/** `key=value` lines of stdout as an object. */
export function keyValues(stdout: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of stdout.split("\n")) {
    const i = line.indexOf("=");
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}
