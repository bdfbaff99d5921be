/**
 * `deno task sdk [DIR]` (default `dist/commucat`): the browser SDK for web applications built
 * outside this repository, with its typings:
 *
 * - `commucat.js` — client/browser.ts bundled for browsers (what `/chat/static/commucat.js`
 *   serves);
 * - `commucat.d.ts` and `types/` — TypeScript declarations generated from the sources by `tsc`
 *   (npm:typescript, pinned below), so `import { connect } from "./commucat.js"` is typed.
 *
 * Built on demand, never committed (it would go stale as the SDK changes).
 *
 * @module
 */
import { bundle } from "./bundle.ts";

/** The TypeScript compiler used for the declarations. */
export const TYPESCRIPT = "npm:typescript@5.9.3/tsc";

const ROOT = new URL("../", import.meta.url);

async function run(args: string[], cwd: string): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (!out.success && !text.includes("error TS")) throw new Error(text.trim());
  return text;
}

/** The versions of the @noble packages deno.json pins, for tsc's module paths. */
async function noblePaths(): Promise<Record<string, string[]>> {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  const info = JSON.parse(await run(["info", "--json"], ROOT.pathname));
  const cache = `${info.npmCache}/registry.npmjs.org`;
  const paths: Record<string, string[]> = {};
  for (const [key, spec] of Object.entries(config.imports as Record<string, string>)) {
    const m = /^npm:\/(@noble\/[a-z]+)@([\d.]+)\/$/.exec(spec);
    if (m) paths[`${key}*`] = [`${cache}/${m[1]}/${m[2]}/*`];
  }
  return paths;
}

/** Builds the SDK bundle and its declarations into `outDir`; returns the files written. */
export async function buildSdk(outDir: string): Promise<string[]> {
  await Deno.mkdir(`${outDir}/types`, { recursive: true });
  await Deno.writeFile(`${outDir}/commucat.js`, await bundle("client/browser.ts"));
  const scratch = await Deno.makeTempDir({ prefix: "commucat-sdk-types-" });
  try {
    const tsconfig = `${scratch}/tsconfig.json`;
    await Deno.writeTextFile(
      tsconfig,
      JSON.stringify({
        compilerOptions: {
          target: "es2022",
          module: "esnext",
          moduleResolution: "bundler",
          allowImportingTsExtensions: true,
          declaration: true,
          emitDeclarationOnly: true,
          strict: true,
          skipLibCheck: true,
          lib: ["es2022", "dom"],
          types: [],
          rootDir: ROOT.pathname,
          outDir: `${scratch}/out`,
          paths: await noblePaths(),
        },
        files: [new URL("client/browser.ts", ROOT).pathname],
      }),
    );
    const output = await run(["run", "-A", TYPESCRIPT, "-p", tsconfig], ROOT.pathname);
    // The one expected complaint: protocol/crypto.ts names node:crypto's types, which a browser
    // build has no declarations for (they appear in no public declaration).
    const unexpected = output.split("\n").filter((l) =>
      l.includes("error TS") && !/Cannot find module 'node:(crypto|buffer)'/.test(l)
    );
    if (unexpected.length > 0) throw new Error(`tsc: ${unexpected.join("\n")}`);
    const written: string[] = [`${outDir}/commucat.js`];
    const walk = async (dir: string, rel: string) => {
      for await (const e of Deno.readDir(dir)) {
        const path = `${dir}/${e.name}`;
        const target = `${outDir}/types/${rel}${e.name}`;
        if (e.isDirectory) {
          await Deno.mkdir(target, { recursive: true });
          await walk(path, `${rel}${e.name}/`);
        } else if (e.name.endsWith(".d.ts")) {
          // Relative imports name the sources (.ts); declarations are found through .js.
          const text = (await Deno.readTextFile(path))
            .replace(/(from\s+|import\()(["'])(\.{1,2}\/[^"']+)\.ts\2/g, "$1$2$3.js$2");
          await Deno.writeTextFile(target, text);
          written.push(target);
        }
      }
    };
    await walk(`${scratch}/out`, "");
    await Deno.writeTextFile(
      `${outDir}/commucat.d.ts`,
      '/** Types of commucat.js (generated from client/browser.ts). */\nexport * from "./types/client/browser.js";\n',
    );
    written.push(`${outDir}/commucat.d.ts`);
    return written;
  } finally {
    await Deno.remove(scratch, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  const outDir = Deno.args[0] ?? "dist/commucat";
  const files = await buildSdk(outDir);
  console.log(`${files.length} files in ${outDir}: commucat.js, commucat.d.ts, types/`);
}
