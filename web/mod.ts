/**
 * The web chat on the relay's HTTP listener: `GET /chat/` (the page) and `GET /chat/static/*`
 * (its stylesheet, its island bundle and the SDK bundle for other web applications,
 * commucat.js, both built on first request: web/bundle.ts). Served on the listener that carries `/connect`, so the page and its WebSocket
 * share one origin: the default `allowed_origins` (same origin only) is all it needs, and the
 * console's port (an operator's tool behind the admin token) never has to face users.
 *
 * Every response carries the security headers of server/secure_headers.ts (the relay's routes
 * add them): scripts, styles and connections from this origin only, nothing inline, never
 * framed.
 *
 * @module
 */
import { bytesToHex } from "../protocol/hex.ts";
import { keyFingerprint } from "../client/browser_keystore.ts";
import { chatPage } from "./page.tsx";
import { bundled } from "./bundle.ts";
import { contentSecurityPolicy } from "../server/secure_headers.ts";

/** Image sources of the chat besides its own origin (icons inline, pictures as blobs). */
export const CHAT_IMG_SRC = ["data:", "blob:"];
/** The chat's Content-Security-Policy (server/secure_headers.ts sends it). */
export const CHAT_CONTENT_SECURITY_POLICY = contentSecurityPolicy(CHAT_IMG_SRC);

const STATIC_DIR = new URL("./static/", import.meta.url);
const TYPES: Record<string, string> = {
  css: "text/css; charset=utf-8",
  js: "text/javascript; charset=utf-8",
};

/** What the chat needs to know about the server it is served by. */
export interface ChatServer {
  serverKey: Uint8Array;
  domain: string;
  prologue: string;
  /** Where a failed bundle build is reported (the response says only that it failed). */
  warn: (message: string, fields: Record<string, unknown>) => void;
}

const cache = new Map<string, Uint8Array>();

/** Answers a request under /chat. */
export async function chatResponse(
  request: Request,
  server: ChatServer,
): Promise<Response> {
  const url = new URL(request.url);
  if (request.method !== "GET" && request.method !== "HEAD") {
    return new Response("use GET", { status: 405, headers: { allow: "GET, HEAD" } });
  }
  if (url.pathname === "/chat") {
    return new Response(null, { status: 308, headers: { location: "/chat/" } });
  }
  if (url.pathname === "/chat/") {
    const html = chatPage({
      serverKey: bytesToHex(server.serverKey),
      serverFingerprint: keyFingerprint(server.serverKey),
      domain: server.domain,
      prologue: server.prologue,
    });
    return new Response(html, {
      headers: { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" },
    });
  }
  const match = /^\/chat\/static\/([a-z0-9_-]+\.(css|js))$/.exec(url.pathname);
  if (match) {
    const [, name] = match;
    let bytes = cache.get(name);
    const building = bytes ? null : bundled(name);
    if (building) {
      try {
        bytes = await building;
      } catch (err) {
        server.warn("web chat bundle not built", { bundle: name, error: err });
        return new Response(`the ${name} bundle could not be built; the server's log says why`, {
          status: 500,
          headers: { "content-type": "text/plain; charset=utf-8" },
        });
      }
    } else if (!bytes) {
      try {
        bytes = await Deno.readFile(new URL(name, STATIC_DIR));
      } catch {
        return new Response("not found", { status: 404 });
      }
      cache.set(name, bytes);
    }
    return new Response(bytes as Uint8Array<ArrayBuffer>, {
      headers: {
        "content-type": TYPES[name.split(".").pop()!],
        "cache-control": "no-cache",
      },
    });
  }
  return new Response("not found", { status: 404 });
}
