/**
 * Browser bundles built when first asked for, like `deno bundle --platform browser --minify`
 * at the command line: the web chat's island (web/islands/entries/chat.tsx → chat.js) and the
 * browser SDK for other web applications (client/browser.ts → commucat.js). Each is built once
 * per process and kept in memory, so what is served always matches the code the server runs
 * (nothing built is committed to go stale).
 *
 * Run `deno run -A web/bundle.ts` to build both and print their sizes.
 *
 * @module
 */

const ROOT = new URL("../", import.meta.url);

/** The bundles served under /chat/static/: file name → entry, relative to the repository. */
export const BUNDLES: Readonly<Record<string, string>> = {
  "chat.js": "web/islands/entries/chat.tsx",
  "commucat.js": "client/browser.ts",
};

const built = new Map<string, Promise<Uint8Array>>();

/** Bundles `entry` (relative to the repository) and returns the JavaScript. */
export async function bundle(entry: string): Promise<Uint8Array> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["bundle", "--quiet", "--platform", "browser", "--minify", entry],
    cwd: ROOT.pathname,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  if (!out.success || out.stdout.length === 0) {
    throw new Error(`bundling ${entry} failed: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  return out.stdout;
}

/** The bundle named `name` (a key of {@link BUNDLES}), built on first use; null when unknown. */
export function bundled(name: string): Promise<Uint8Array> | null {
  const entry = BUNDLES[name];
  if (entry === undefined) return null;
  let pending = built.get(name);
  if (!pending) {
    pending = bundle(entry);
    built.set(name, pending);
    // A failed build is tried again on the next request rather than cached.
    pending.catch(() => built.delete(name));
  }
  return pending;
}

if (import.meta.main) {
  for (const [name, entry] of Object.entries(BUNDLES)) {
    const bytes = await bundle(entry);
    console.log(`${name} ← ${entry}: ${bytes.length} bytes`);
  }
}
