// deno-lint-ignore-file jsx-key -- server-rendered static children are never reordered, so keys add nothing
/**
 * Access rules: every page but sign-in and static files needs a signed-in session (an expired
 * one is sent to sign-in), and every state-changing request must echo the session's CSRF
 * token (missing or forged → 403).
 */
import type { Context, MiddlewareHandler } from "hono";
import type { AppEnv, ConsoleDeps } from "../context.ts";
import { tokenMatches } from "../auth.ts";
import { renderPage } from "../render.tsx";
import { ErrorBox } from "../components/flash.tsx";

const PUBLIC = [/^\/sign-in$/, /^\/static\//, /^\/favicon\.(?:svg|ico)$/];

/** A local path safe to redirect to after sign-in ("/" for anything else). */
export function safeNext(value: string | null | undefined): string {
  if (!value || !value.startsWith("/") || value.startsWith("//") || /[\\\s]/.test(value)) {
    return "/";
  }
  return value;
}

/** Sends visitors without a signed-in session to the sign-in page. */
export function requireSignIn(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    if (PUBLIC.some((re) => re.test(c.req.path))) return await next();
    if (c.get("session")?.authenticated) return await next();
    if (c.req.path === "/live/figures") return c.text("sign in first", 401);
    const params = new URLSearchParams();
    if (c.get("sessionExpired")) params.set("expired", "1");
    const url = new URL(c.req.url);
    if (c.req.method === "GET" && url.pathname !== "/") {
      params.set("next", url.pathname + url.search);
    }
    const q = params.toString();
    return c.redirect(q ? `/sign-in?${q}` : "/sign-in", 303);
  };
}

/** Reads the `_csrf` field of a form body (or the X-CSRF-Token header). */
async function submittedToken(c: Context<AppEnv>): Promise<string | null> {
  const header = c.req.header("x-csrf-token");
  if (header) return header;
  const type = c.req.header("content-type") ?? "";
  if (!/^(application\/x-www-form-urlencoded|multipart\/form-data)/i.test(type)) return null;
  try {
    const body = await c.req.parseBody();
    const value = body["_csrf"];
    return typeof value === "string" ? value : null;
  } catch {
    return null;
  }
}

/** Refuses a state-changing request whose CSRF token is missing or does not match. */
export function checkCsrf(deps: ConsoleDeps): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    if (c.req.method === "GET" || c.req.method === "HEAD") return await next();
    const session = c.get("session");
    const given = await submittedToken(c);
    if (session && given && tokenMatches(given, session.csrf)) return await next();
    deps.log.warn("console: refused a form without a valid CSRF token", {
      path: c.req.path,
      reason: !session ? "no session" : !given ? "missing token" : "token mismatch",
    });
    return renderPage(c, deps, { title: "Form refused", status: 403 }, [
      <ErrorBox
        title="This form could not be accepted."
        detail={!given
          ? "It carried no security token."
          : "Its security token does not belong to your session (it may be from an old page)."}
        hint="Nothing was changed. Go back, reload the page and submit the form again."
      />,
      <p>
        <a href={c.req.path === "/sign-in" ? "/sign-in" : "/"}>Continue</a>
      </p>,
    ]);
  };
}
