/**
 * Smoke test: the server starts the way an operator starts it (`deno run -A app/serve.ts`, what
 * `deno task serve` runs, configured through COMMUCAT_* variables only, ports chosen by the
 * system), answers GET /healthz, and stops cleanly on SIGTERM. Storage is the real Postgres +
 * Redis of COMMUCAT_TEST_PG_DSN / COMMUCAT_TEST_REDIS_URL when given, else the embedded
 * defaults (PGlite in a temp dir).
 */
import assert from "node:assert/strict";
import { spawnNode, stopNode } from "./helpers/node_process.ts";
import { serverEnv } from "./helpers/env_server.ts";

Deno.test("smoke: app/serve.ts starts, answers /healthz and stops on SIGTERM", async () => {
  const dir = await Deno.makeTempDir({ prefix: "commucat-smoke-" });
  const configFile = `${dir}/commucat.toml`;
  await Deno.writeTextFile(configFile, "# defaults and environment only\n");
  const env = serverEnv(`${dir}/data`, { COMMUCAT_CONFIG: configFile });
  const node = await spawnNode(env, dir, { clean: true });
  try {
    const http = `http://127.0.0.1:${node.httpPort}`;
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
    const status = await stopNode(node);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    const output = node.output.join("\n");
    assert.equal(status.code, 0, `exit ${status.code}\n${output}`);
    assert.match(output, /shutting down/);
  }
});
