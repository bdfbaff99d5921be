/**
 * The web chat on the relay's HTTP listener: `GET /chat/` (the page) and `GET /chat/static/*`
 * (its stylesheet, its island bundle and the SDK bundle for other web applications,
 * commucat.js, both built on first request: web/bundle.ts). Served on the listener that carries `/connect`, so the page and its WebSocket
 * share one origin: the default `allowed_origins` (same origin only) is all it needs, and the
 * console's port (an operator's tool behind the admin token) never has to face users.
 *
 * Every response carries a strict Content-Security-Policy: scripts, styles and connections
 * from this origin only, nothing inline, never framed.
 *
 * @module
 */
import { bytesToHex } from "../protocol/hex.ts";
import { keyFingerprint } from "../client/browser_keystore.ts";
import { chatPage } from "./page.tsx";
import { bundled } from "./bundle.ts";

/** The chat page's security policy. */
export const CHAT_CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data: blob:",
  "connect-src 'self'",
  "font-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

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

/** True for the paths the web chat answers. */
export function isChatPath(pathname: string): boolean {
  return pathname === "/chat" || pathname.startsWith("/chat/");
}

function secure(response: Response, isTls: boolean): Response {
  const h = response.headers;
  h.set("content-security-policy", CHAT_CONTENT_SECURITY_POLICY);
  h.set("x-frame-options", "DENY");
  h.set("x-content-type-options", "nosniff");
  h.set("referrer-policy", "no-referrer");
  h.set("cross-origin-opener-policy", "same-origin");
  h.set("cross-origin-resource-policy", "same-origin");
  h.set("permissions-policy", "camera=(), microphone=(), geolocation=(), payment=()");
  if (isTls) h.set("strict-transport-security", "max-age=31536000");
  return response;
}

const cache = new Map<string, Uint8Array>();

/** Answers a request under /chat. */
export async function chatResponse(
  request: Request,
  server: ChatServer,
  isTls: boolean,
): Promise<Response> {
  const url = new URL(request.url);
  if (request.method !== "GET" && request.method !== "HEAD") {
    return secure(
      new Response("use GET", { status: 405, headers: { allow: "GET, HEAD" } }),
      isTls,
    );
  }
  if (url.pathname === "/chat") {
    return secure(new Response(null, { status: 308, headers: { location: "/chat/" } }), isTls);
  }
  if (url.pathname === "/chat/") {
    const html = chatPage({
      serverKey: bytesToHex(server.serverKey),
      serverFingerprint: keyFingerprint(server.serverKey),
      domain: server.domain,
      prologue: server.prologue,
    });
    return secure(
      new Response(html, {
        headers: { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" },
      }),
      isTls,
    );
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
        return secure(
          new Response(`the ${name} bundle could not be built; the server's log says why`, {
            status: 500,
            headers: { "content-type": "text/plain; charset=utf-8" },
          }),
          isTls,
        );
      }
    } else if (!bytes) {
      try {
        bytes = await Deno.readFile(new URL(name, STATIC_DIR));
      } catch {
        return secure(new Response("not found", { status: 404 }), isTls);
      }
      cache.set(name, bytes);
    }
    return secure(
      new Response(bytes as Uint8Array<ArrayBuffer>, {
        headers: {
          "content-type": TYPES[name.split(".").pop()!],
          "cache-control": "no-cache",
        },
      }),
      isTls,
    );
  }
  return secure(new Response("not found", { status: 404 }), isTls);
}
