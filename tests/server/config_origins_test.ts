/** `[server] allowed_origins`: from TOML arrays and "a,b" variables, with clear refusals. */
import assert from "node:assert/strict";
import { ConfigError, loadConfig } from "../../server/config/mod.ts";

async function load(env: Record<string, string>) {
  const cwd = await Deno.makeTempDir({ prefix: "commucat-origins-" });
  try {
    return await loadConfig({ env, file: null, cwd });
  } finally {
    await Deno.remove(cwd, { recursive: true }).catch(() => {});
  }
}

Deno.test("allowed_origins defaults to none (same origin only)", async () => {
  const config = await load({});
  assert.deepEqual(config.server.allowedOrigins, []);
});

Deno.test("allowed_origins from the environment, normalised to origins", async () => {
  const config = await load({
    COMMUCAT_ALLOWED_ORIGINS: "https://App.Example, http://127.0.0.1:3000,*",
  });
  assert.deepEqual(config.server.allowedOrigins, [
    "https://app.example",
    "http://127.0.0.1:3000",
    "*",
  ]);
});

Deno.test("allowed_origins refuses paths and other schemes, naming the entry", async () => {
  for (const bad of ["https://app.example/chat", "ftp://files.example", "app.example"]) {
    await assert.rejects(load({ COMMUCAT_ALLOWED_ORIGINS: bad }), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.match(err.message, /COMMUCAT_ALLOWED_ORIGINS/);
      assert.match(err.message, /origin 1: expected scheme:\/\/host\[:port\]/);
      return true;
    });
  }
});
