/**
 * Network names shared by the server, the console, config and the SDK.
 *
 * @module
 */

/**
 * True for a host only this machine reaches: `localhost`, 127.0.0.0/8, `::1` and the
 * IPv4-mapped `::ffff:127.x.y.z`; case, surrounding white space and `[ ]` are ignored.
 */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.trim().replace(/^\[|\]$/g, "").toLowerCase();
  if (host === "::1" || host === "localhost") return true;
  const v4 = host.startsWith("::ffff:") ? host.slice(7) : host;
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(v4) &&
    v4.split(".").every((part) => Number(part) <= 255);
}
