/** Turns a page's markup into an HTML response inside the shared layout. */
import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { ComponentChildren } from "preact";
import { renderToString } from "preact-render-to-string";
import type { AppEnv, ConsoleDeps } from "./context.ts";
import { Layout } from "./components/layout.tsx";
import type { NavKey } from "./components/nav.tsx";
import { takeFlash } from "./middleware/session.ts";
import { StorageError } from "../storage/errors.ts";

export interface PageOptions {
  title: string;
  active?: NavKey;
  status?: number;
  scripts?: string[];
  headers?: Record<string, string>;
}

/** Renders `body` in the layout (with nav and flash when signed in) as a full HTML page. */
export function renderPage(
  c: Context<AppEnv>,
  deps: ConsoleDeps,
  opts: PageOptions,
  body: ComponentChildren,
): Response {
  const session = c.get("session") ?? null;
  const operator = session?.authenticated ? { csrf: session.csrf, label: session.label } : null;
  const html = renderToString(
    <Layout
      title={opts.title}
      active={opts.active}
      nodeId={deps.nodeId}
      operator={operator}
      flash={takeFlash(session)}
      scripts={opts.scripts}
      pendingApprovals={c.get("pendingApprovals") ?? null}
    >
      {body}
    </Layout>,
  );
  // Through the context, so cookies and headers set earlier in the request are kept.
  return c.body("<!doctype html>\n" + html, (opts.status ?? 200) as ContentfulStatusCode, {
    "content-type": "text/html; charset=utf-8",
    ...opts.headers,
  });
}

/** A 303 redirect (after a POST, so reloading does not repeat the action). */
export function seeOther(c: Context<AppEnv>, location: string): Response {
  return c.redirect(location, 303);
}

/** Adds a one-shot message to the session, shown on the next page. */
export function flash(c: Context<AppEnv>, kind: "ok" | "error", text: string): void {
  c.get("session")?.flash.push({ kind, text });
}

/**
 * Runs an operator action. A refusal (a storage error below 500: a transition not allowed, a
 * row that is gone) is news for the operator, not a crash: it becomes the error flash
 * `<refused>: <reason>.` and resolves to false. Anything else is thrown on.
 */
export async function attempt(
  c: Context<AppEnv>,
  refused: string,
  action: () => Promise<void>,
): Promise<boolean> {
  try {
    await action();
    return true;
  } catch (err) {
    if (!(err instanceof StorageError && err.status < 500)) throw err;
    flash(c, "error", `${refused}: ${err.message}.`);
    return false;
  }
}
