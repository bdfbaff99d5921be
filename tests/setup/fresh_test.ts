/**
 * The fresh-machine path of the README: Node and npm present, Deno and Chromium absent (hidden
 * from PATH by .ci/hide-from-path). `npx -y deno@2.9.6 task serve` starts the server, and the
 * browser tests are reported as ignored with the reason — or fail when COMMUCAT_REQUIRE_BROWSER=1.
 * (.ci/run runs the whole suite as `npx -y deno@2.9.6 task test` with Deno hidden from PATH.)
 */
import assert from "node:assert/strict";

const ROOT = new URL("../../", import.meta.url).pathname;
const HIDE = `${ROOT}.ci/hide-from-path`;
const BROWSERS = ["chromium", "chromium-browser", "google-chrome"];

function baseEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = { ...Deno.env.toObject(), NO_COLOR: "1", ...extra };
  delete env.COMMUCAT_CHROMIUM;
  delete env.COMMUCAT_REQUIRE_BROWSER;
  return { ...env, ...extra };
}

async function run(args: string[], env: Record<string, string>) {
  const out = await new Deno.Command(HIDE, { args, env, cwd: ROOT, clearEnv: true, stdin: "null" })
    .output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  return { code: out.code, text };
}

function onPath(name: string): boolean {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      if (Deno.statSync(`${dir}/${name}`).isFile) return true;
    } catch { /* not here */ }
  }
  return false;
}

Deno.test("without Chromium the browser tests are ignored, with the reason", async () => {
  const r = await run(
    [...BROWSERS, "--", Deno.execPath(), "test", "-A", "tests/console/browser_test.ts"],
    baseEnv(),
  );
  assert.equal(r.code, 0, r.text);
  assert.match(r.text, /\(ignored: Chromium not found on PATH \(looked for chromium/);
  assert.match(r.text, /ok \| 0 passed \| 0 failed \| 1 ignored/);
});

Deno.test("with COMMUCAT_REQUIRE_BROWSER=1 a missing Chromium fails the browser tests", async () => {
  const r = await run(
    [...BROWSERS, "--", Deno.execPath(), "test", "-A", "tests/console/browser_test.ts"],
    baseEnv({ COMMUCAT_REQUIRE_BROWSER: "1" }),
  );
  assert.equal(r.code, 1, r.text);
  assert.match(
    r.text,
    /Chromium not found on PATH .*COMMUCAT_REQUIRE_BROWSER=1 makes this a failure/,
  );
  assert.match(r.text, /FAILED \| 0 passed \| 1 failed/);
});

Deno.test({
  name: "the README's `npx -y deno@2.9.6 task serve` starts the server with Deno hidden from PATH",
  ignore: !onPath("npx"),
  async fn() {
    const dataDir = await Deno.makeTempDir({ prefix: "commucat-fresh-" });
    // setsid: the server runs in its own process group, stopped as a whole below.
    const child = new Deno.Command("setsid", {
      args: [HIDE, "deno", ...BROWSERS, "--", "npx", "-y", "deno@2.9.6", "task", "serve"],
      env: baseEnv({
        COMMUCAT_DATA_DIR: dataDir,
        COMMUCAT_BIND: "127.0.0.1:0",
        COMMUCAT_TCP_BIND: "127.0.0.1:0",
        COMMUCAT_CONSOLE_BIND: "127.0.0.1:0",
      }),
      clearEnv: true,
      cwd: ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stderr = new Response(child.stderr).text();
    let seen = "";
    try {
      const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let http: string | null = null;
      while (http === null) {
        const { value, done } = await reader.read();
        if (done) break;
        seen += value;
        http = seen.match(/HTTP listening on (http:\/\/127\.0\.0\.1:\d+)/)?.[1] ?? null;
      }
      assert.ok(http, `no "HTTP listening" line:\n${seen}`);
      const res = await fetch(`${http}/healthz`);
      assert.equal(res.status, 200);
      await res.body?.cancel();
      assert.match(seen, /generated keys kept in/);
      reader.releaseLock();
    } finally {
      try {
        Deno.kill(-child.pid, "SIGTERM");
      } catch { /* already gone */ }
      const status = await child.status;
      await child.stdout.cancel().catch(() => {});
      const err = await stderr;
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
      assert.ok(status.signal === "SIGTERM" || status.code === 0 || status.code === 143, err);
    }
  },
});
