/**
 * Opening a listener with an error that says which address and which setting: "address in use"
 * from the OS names neither.
 */

/** Runs `open`; an address-in-use or permission failure is rethrown naming the address. */
export function listenOn<T>(
  what: { setting: string; hostname: string; port: number },
  open: () => T,
): T {
  try {
    return open();
  } catch (err) {
    const host = what.hostname.includes(":") ? `[${what.hostname}]` : what.hostname;
    const address = `${host}:${what.port}`;
    if (err instanceof Deno.errors.AddrInUse) {
      throw new Error(
        `cannot listen on ${address} (${what.setting}): the address is already in use — ` +
          `another process (perhaps another CommuCat server) holds it; stop it or set ` +
          `${what.setting} to a free port`,
        { cause: err },
      );
    }
    if (err instanceof Deno.errors.PermissionDenied) {
      throw new Error(
        `cannot listen on ${address} (${what.setting}): permission denied ` +
          `(ports below 1024 need privileges); choose a port of 1024 or above`,
        { cause: err },
      );
    }
    if (err instanceof Deno.errors.AddrNotAvailable) {
      throw new Error(
        `cannot listen on ${address} (${what.setting}): no network interface has that address`,
        { cause: err },
      );
    }
    throw err;
  }
}
