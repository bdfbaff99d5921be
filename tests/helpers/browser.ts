/**
 * Browser tests: `browserTest` registers a test that runs in headless Chromium when it is
 * installed and is reported as ignored, with the reason in its name, when it is not. With
 * COMMUCAT_REQUIRE_BROWSER=1 (set by .ci/run) a missing Chromium is a failure instead, so CI
 * never skips browser tests silently.
 */
import { findChromium, launchChromium } from "../../console/chromium.ts";

export { launchChromium };

/** Whether a missing browser must fail the run (COMMUCAT_REQUIRE_BROWSER=1). */
export function browserRequired(env: { get(key: string): string | undefined } = Deno.env): boolean {
  const value = env.get("COMMUCAT_REQUIRE_BROWSER") ?? "";
  return value === "1" || value.toLowerCase() === "true";
}

/**
 * Whether browser tests can run here: `{ run: true, missing: null }`, or `{ run: false, reason }`
 * when they are to be ignored. When Chromium is required but missing, `run` is true and
 * `missing` says why the test is going to fail.
 */
export function browserAvailability():
  | { run: true; missing: string | null }
  | { run: false; reason: string } {
  const found = findChromium();
  if (found.path !== null) return { run: true, missing: null };
  if (browserRequired()) return { run: true, missing: found.reason };
  return { run: false, reason: found.reason };
}

/** A Deno.test that needs Chromium (see the module comment). */
export function browserTest(
  name: string,
  fn: (t: Deno.TestContext) => Promise<void>,
  options: Omit<Deno.TestDefinition, "name" | "fn" | "ignore"> = {},
): void {
  const available = browserAvailability();
  if (!available.run) {
    Deno.test({
      ...options,
      name:
        `${name} (ignored: ${available.reason}; set COMMUCAT_REQUIRE_BROWSER=1 to fail instead)`,
      ignore: true,
      fn,
    });
    return;
  }
  const missing = available.missing;
  if (missing !== null) {
    // Required but missing: fail at once, before the test sets anything up.
    Deno.test({
      ...options,
      name,
      fn: () => {
        throw new Error(`${missing} (COMMUCAT_REQUIRE_BROWSER=1 makes this a failure)`);
      },
    });
    return;
  }
  Deno.test({ ...options, name, fn });
}
