/** Finding and launching the system's headless Chromium (never a downloaded one). */
import { type Browser, chromium } from "playwright-core";

/** The executable names searched for on PATH, in order. */
export const CHROMIUM_NAMES = [
  "chromium",
  "chromium-browser",
  "google-chrome",
  "google-chrome-stable",
];

/** Where Chromium is, or why it was not found. */
export type ChromiumLookup = { path: string } | { path: null; reason: string };

function isExecutableFile(path: string): boolean {
  try {
    const info = Deno.statSync(path);
    return info.isFile && (info.mode === null || (info.mode & 0o111) !== 0);
  } catch {
    return false;
  }
}

/**
 * Finds Chromium: COMMUCAT_CHROMIUM when set (it must exist), else the first of CHROMIUM_NAMES
 * on PATH. Hiding Chromium from PATH therefore makes it missing.
 */
export function findChromium(
  env: { get(key: string): string | undefined } = Deno.env,
): ChromiumLookup {
  const override = env.get("COMMUCAT_CHROMIUM");
  if (override) {
    return isExecutableFile(override)
      ? { path: override }
      : { path: null, reason: `COMMUCAT_CHROMIUM=${override} is not an executable file` };
  }
  const dirs = (env.get("PATH") ?? "").split(":").filter((d) => d !== "");
  for (const name of CHROMIUM_NAMES) {
    for (const dir of dirs) {
      const path = `${dir}/${name}`;
      if (isExecutableFile(path)) return { path };
    }
  }
  return {
    path: null,
    reason: `Chromium not found on PATH (looked for ${CHROMIUM_NAMES.join(", ")}): ` +
      `install it (apt-get install -y chromium; .ci/run does) or set COMMUCAT_CHROMIUM to its path`,
  };
}

/** Launches headless Chromium; throws a clear message when it is not installed. */
export async function launchChromium(): Promise<Browser> {
  const found = findChromium();
  if (found.path === null) throw new Error(found.reason);
  return await chromium.launch({
    executablePath: found.path,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}
