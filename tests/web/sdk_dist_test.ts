/**
 * `deno task sdk`: the browser SDK bundle ships with declarations a TypeScript project can
 * check against: a correct use type-checks, a wrong one fails.
 */
import assert from "node:assert/strict";
import { buildSdk, TYPESCRIPT } from "../../web/sdk_dist.ts";

async function tsc(dir: string): Promise<{ ok: boolean; text: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", TYPESCRIPT, "-p", `${dir}/tsconfig.json`],
    cwd: new URL("../../", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  return { ok: out.success, text };
}

Deno.test("the SDK bundle's declarations type a web application's code", async () => {
  const dir = await Deno.makeTempDir({ prefix: "commucat-sdk-dist-" });
  try {
    const files = await buildSdk(`${dir}/commucat`);
    assert.ok(files.some((f) => f.endsWith("/types/client/sdk.d.ts")));
    await Deno.writeTextFile(
      `${dir}/tsconfig.json`,
      JSON.stringify({
        compilerOptions: {
          target: "es2022",
          module: "esnext",
          moduleResolution: "bundler",
          noEmit: true,
          strict: true,
          lib: ["es2022", "dom"],
          types: [],
        },
        files: ["app.ts"],
      }),
    );
    const app = (extra: string) =>
      Deno.writeTextFile(
        `${dir}/app.ts`,
        `import { BrowserKeystore, connect, type InboundMessage } from "./commucat/commucat.js";
const me = await (await BrowserKeystore.open()).create("alice laptop");
const client = await connect({ transport: "ws", deviceId: me.deviceId, keypair: me.keypair, serverKey: "00" });
for await (const m of client.messages()) { const seen: InboundMessage = m; console.log(seen.kind, seen.sender); }
${extra}
export {};
`,
      );
    await app("");
    const good = await tsc(dir);
    assert.ok(good.ok, `a correct use type-checks:\n${good.text}`);
    await app('await client.join("not a channel number", []);');
    const bad = await tsc(dir);
    assert.equal(bad.ok, false);
    assert.match(bad.text, /app\.ts\(5,\d+\): error TS2345/);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
