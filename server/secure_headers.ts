/**
 * The security headers of every HTML surface CommuCat serves — the operator console and the web
 * chat — as one `hono/secure-headers` configuration: a Content-Security-Policy of this origin
 * only (nothing inline, never framed), no referrer, same-origin opener and resource policies, no
 * camera, microphone, location or payment, and HSTS when the listener is TLS.
 *
 * @module
 */
import type { Env, MiddlewareHandler } from "hono";
import { secureHeaders } from "hono/secure-headers";

export interface SecurityHeaderOptions {
  /** The listener speaks TLS: add Strict-Transport-Security. */
  tls: boolean;
  /** Image sources besides `'self'` (the chat shows `blob:` images, both `data:` icons). */
  imgSrc?: string[];
}

/** The policy's directives: this origin only, nothing inline, never framed. */
function directives(imgSrc: string[] = []): Record<string, string[]> {
  return {
    defaultSrc: ["'self'"],
    scriptSrc: ["'self'"],
    styleSrc: ["'self'"],
    imgSrc: ["'self'", ...imgSrc],
    connectSrc: ["'self'"],
    fontSrc: ["'self'"],
    objectSrc: ["'none'"],
    baseUri: ["'none'"],
    formAction: ["'self'"],
    frameAncestors: ["'none'"],
  };
}

/** The Content-Security-Policy text the middleware sends for these image sources. */
export function contentSecurityPolicy(imgSrc?: string[]): string {
  return Object.entries(directives(imgSrc))
    .map(([name, values]) =>
      `${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} ${values.join(" ")}`
    )
    .join("; ");
}

/** The middleware adding the headers to every response of the routes it is used on. */
export function strictSecurityHeaders<E extends Env>(
  options: SecurityHeaderOptions,
): MiddlewareHandler<E> {
  return secureHeaders({
    contentSecurityPolicy: directives(options.imgSrc),
    xFrameOptions: "DENY",
    referrerPolicy: "no-referrer",
    crossOriginOpenerPolicy: "same-origin",
    crossOriginResourcePolicy: "same-origin",
    permissionsPolicy: { camera: [], microphone: [], geolocation: [], payment: [] },
    strictTransportSecurity: options.tls ? "max-age=31536000" : false,
  }) as MiddlewareHandler<E>;
}
