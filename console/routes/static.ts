/** GET /static/<name>: the stylesheet and island bundles from console/static/. */
import type { Hono } from "hono";
import type { AppEnv } from "../context.ts";

const STATIC_DIR = new URL("../static/", import.meta.url);
const TYPES: Record<string, string> = {
  css: "text/css; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  svg: "image/svg+xml",
};

export function register(app: Hono<AppEnv>): void {
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
