/** Launching the system's headless Chromium (never a downloaded one) for screenshots and tests. */
import { type Browser, chromium } from "playwright-core";

/** Where Debian installs Chromium; COMMUCAT_CHROMIUM overrides. */
export function chromiumPath(): string {
  return Deno.env.get("COMMUCAT_CHROMIUM") ?? "/usr/bin/chromium";
}

/** Launches headless Chromium; throws a clear message when it is not installed. */
export async function launchChromium(): Promise<Browser> {
  const path = chromiumPath();
  try {
    await Deno.stat(path);
  } catch {
    throw new Error(
      `Chromium not found at ${path}: install it (apt-get install -y chromium; .ci/run does) ` +
        `or set COMMUCAT_CHROMIUM to its path`,
    );
  }
  return await chromium.launch({
    executablePath: path,
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
