/**
 * Bundles every island entry (console/islands/entries/<name>.tsx) into console/static/<name>.js
 * with `deno bundle --platform browser --minify`. The output is committed so a clean clone
 * serves the console without a build step; tests/console/bundle_test.ts fails when it is stale.
 *
 * Run: deno run -A console/build.ts
 */

const ENTRIES = new URL("./islands/entries/", import.meta.url);
const STATIC = new URL("./static/", import.meta.url);

/** The island names (entry file names without .tsx). */
export async function islandNames(): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(ENTRIES)) {
    if (e.isFile && e.name.endsWith(".tsx")) names.push(e.name.slice(0, -4));
  }
  return names.sort();
}

/** Bundles one island into `outFile`; throws with deno's message when bundling fails. */
export async function bundleIsland(name: string, outFile: string): Promise<void> {
  const entry = new URL(`${name}.tsx`, ENTRIES).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["bundle", "--quiet", "--platform", "browser", "--minify", "-o", outFile, entry],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  if (!out.success) {
    throw new Error(`bundling island ${name} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

if (import.meta.main) {
  for (const name of await islandNames()) {
    const file = new URL(`${name}.js`, STATIC).pathname;
    await bundleIsland(name, file);
    console.log(`bundled ${name} → ${file}`);
  }
}
