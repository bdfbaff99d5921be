/**
 * Smoke test: the server starts the way an operator starts it (`deno run -A app/serve.ts`,
 * configured through COMMUCAT_* variables, ports chosen by the system), answers GET /healthz,
 * and stops cleanly on SIGTERM. Storage is the real Postgres + Redis of COMMUCAT_TEST_PG_DSN /
 * COMMUCAT_TEST_REDIS_URL when given, else the embedded defaults (PGlite in a temp dir).
 */
import assert from "node:assert/strict";
import { OPEN_LIMITS_ENV } from "./server/helpers/server.ts";

const ROOT = new URL("../", import.meta.url).pathname;

Deno.test("smoke: app/serve.ts starts, answers /healthz and stops on SIGTERM", async () => {
  const dir = await Deno.makeTempDir({ prefix: "commucat-smoke-" });
  const configFile = `${dir}/commucat.toml`;
  await Deno.writeTextFile(configFile, "# defaults and environment only\n");
  const env: Record<string, string> = {
    PATH: Deno.env.get("PATH") ?? "",
    HOME: Deno.env.get("HOME") ?? dir,
    NO_COLOR: "1",
    COMMUCAT_CONFIG: configFile,
    COMMUCAT_DATA_DIR: `${dir}/data`,
    COMMUCAT_BIND: "127.0.0.1:0",
    COMMUCAT_TCP_BIND: "127.0.0.1:0",
    ...OPEN_LIMITS_ENV,
    COMMUCAT_CONSOLE_BIND: "127.0.0.1:0",
  };
  const dsn = Deno.env.get("COMMUCAT_TEST_PG_DSN");
  const redis = Deno.env.get("COMMUCAT_TEST_REDIS_URL");
  if (dsn) env.COMMUCAT_PG_DSN = dsn;
  if (redis) env.COMMUCAT_REDIS_URL = redis;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--config", `${ROOT}deno.json`, `${ROOT}app/serve.ts`],
    env,
    clearEnv: true,
    cwd: dir,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  try {
    let http: string | null = null;
    while (http === null) {
      const { value, done } = await reader.read();
      if (done) break;
      seen += value;
      http = seen.match(/HTTP listening on (http:\/\/127\.0\.0\.1:\d+)/)?.[1] ?? null;
    }
    if (http === null) {
      assert.fail(`no "HTTP listening" line:\n${seen}\n${await stderr}`);
    }
    const res = await fetch(`${http}/healthz`);
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.equal(body.status, "ok");
    assert.match(body.node, /^node-/);
    const missing = await fetch(`${http}/nope`);
    assert.equal(missing.status, 404);
    assert.equal(missing.headers.get("content-type"), "application/problem+json");
    assert.equal((await missing.json()).title, "Not Found");
  } finally {
    try {
      child.kill("SIGTERM");
    } catch { /* already stopped */ }
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      seen += value;
    }
    const status = await child.status;
    const err = await stderr;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    assert.equal(status.code, 0, `exit ${status.code}\n${seen}\n${err}`);
    assert.match(seen, /shutting down/);
  }
});
