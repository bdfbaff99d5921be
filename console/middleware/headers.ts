/** Strict security headers on every console response: the one set of server/secure_headers.ts. */
import type { MiddlewareHandler } from "hono";
import type { AppEnv } from "../context.ts";
import { strictSecurityHeaders } from "../../server/secure_headers.ts";

/** Adds CSP, framing, sniffing, referrer and caching headers (HSTS under TLS). */
export function securityHeaders(secure: boolean): MiddlewareHandler<AppEnv> {
  const headers = strictSecurityHeaders<AppEnv>({ tls: secure, imgSrc: ["data:"] });
  return async (c, next) => {
    await headers(c, async () => {
      await next();
      if (!c.res.headers.has("Cache-Control")) c.res.headers.set("Cache-Control", "no-store");
    });
  };
}
