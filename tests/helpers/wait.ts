/**
 * Waiting in tests: for a condition (polled, with a bound that only turns a hang into a failure,
 * never a timing assertion) and for a free loopback port.
 */

/**
 * Polls `check` every `everyMs` until it holds; rejects naming `what` once `ms` have passed.
 */
export async function waitUntil(
  check: () => boolean | Promise<boolean>,
  what: string,
  ms = 5000,
  everyMs = 10,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (${ms} ms)`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** A loopback TCP port nothing listens on right now (bound and released at once). */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}
