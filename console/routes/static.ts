/** GET /static/<name>: the stylesheet and island bundles from console/static/. */
import type { Hono } from "hono";
import type { AppEnv } from "../context.ts";

const STATIC_DIR = new URL("../static/", import.meta.url);
const TYPES: Record<string, string> = {
  css: "text/css; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  svg: "image/svg+xml",
};

/** The console's icon: a cat's head in the console's accent colour. */
const FAVICON = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">` +
  `<path fill="#2563eb" d="M4 3l7 6h10l7-6v15a12 12 0 0 1-24 0z"/>` +
  `<circle cx="11.5" cy="17" r="2" fill="#fff"/><circle cx="20.5" cy="17" r="2" fill="#fff"/>` +
  `<path d="M13 23q3 2 6 0" stroke="#fff" stroke-width="1.6" fill="none"/></svg>`;

export function register(app: Hono<AppEnv>): void {
  const icon = (c: { body: (b: string, s: 200, h: Record<string, string>) => Response }) =>
    c.body(FAVICON, 200, {
      "content-type": "image/svg+xml",
      "cache-control": "public, max-age=86400",
    });
  app.get("/favicon.svg", (c) => icon(c));
  app.get("/favicon.ico", (c) => icon(c));
  const cache = new Map<string, Uint8Array>();
  app.get("/static/:name{[a-z0-9_-]+\\.(?:css|js|svg)}", async (c) => {
    const name = c.req.param("name");
    let bytes = cache.get(name);
    if (!bytes) {
      try {
        bytes = await Deno.readFile(new URL(name, STATIC_DIR));
      } catch {
        return c.text("not found", 404);
      }
      cache.set(name, bytes);
    }
    return c.body(bytes as Uint8Array<ArrayBuffer>, 200, {
      "content-type": TYPES[name.split(".").pop()!],
      "cache-control": "no-cache",
    });
  });
}
