/** Sign-in with the admin token, and sign-out. */
import type { Context, Hono } from "hono";
import type { AppEnv, ConsoleDeps } from "../context.ts";
import { tokenMatches } from "../auth.ts";
import { actorOf, auditSession } from "../actions.ts";
import { renderPage, seeOther } from "../render.tsx";
import { ErrorBox } from "../components/flash.tsx";
import { Field } from "../components/forms.tsx";
import { safeNext } from "../middleware/guard.tsx";
import { setSessionCookie } from "../middleware/session.ts";
import { Limits } from "../../server/limits.ts";

const clientAddress = (c: Context<AppEnv>) => c.env?.remoteAddr ?? "unknown";

function SignInForm(
  props: {
    csrf: string;
    next: string;
    error?: string | null;
    note?: string | null;
    hint?: string;
  },
) {
  return (
    <form method="post" action="/sign-in" class="signin">
      <input type="hidden" name="_csrf" value={props.csrf} />
      <input type="hidden" name="next" value={props.next} />
      {props.note && <p class="flash ok" role="status">{props.note}</p>}
      <Field
        name="token"
        label="Admin token"
        type="password"
        required
        autocomplete="current-password"
        error={props.error}
        hint={props.hint ?? "The [admin] token from commucat.toml (or COMMUCAT_ADMIN_TOKEN)."}
      />
      <button type="submit" class="primary">Sign in</button>
    </form>
  );
}

export function register(app: Hono<AppEnv>, deps: ConsoleDeps): void {
  const failures = new Limits(deps.storage.ephemeral, deps.config.limits);
  /** Gives the visitor a pre-sign-in session so the sign-in form has a CSRF token too. */
  const anonymousSession = (c: Context<AppEnv>) => {
    const existing = c.get("session");
    if (existing) return existing;
    const session = deps.sessions.create(false);
    setSessionCookie(c, session, deps.secure, deps.sessions.limits.idleMs / 1000);
    c.set("session", session);
    return session;
  };

  const page = (
    c: Context<AppEnv>,
    status: number,
    error: string | null,
    note: string | null,
    nextValue: string | null = c.req.query("next") ?? null,
  ) => {
    const session = anonymousSession(c);
    const next = safeNext(nextValue);
    const body = deps.signInToken === null
      ? (
        <ErrorBox
          title="Sign-in is not possible."
          detail="No admin token is configured for this console."
          hint="Set [admin] token in commucat.toml (or COMMUCAT_ADMIN_TOKEN) and restart."
        />
      )
      : (
        <SignInForm
          csrf={session.csrf}
          next={next}
          error={error}
          note={note}
          hint={deps.startupTokenFile
            ? `No admin token is configured: use the start-up token in ${deps.startupTokenFile}.`
            : undefined}
        />
      );
    return renderPage(c, deps, { title: "Sign in", status }, body);
  };

  app.get("/sign-in", (c) => {
    if (c.get("session")?.authenticated) return seeOther(c, safeNext(c.req.query("next")));
    const note = c.req.query("expired") ? "Your session expired. Sign in again." : null;
    return page(c, 200, null, note);
  });

  app.post("/sign-in", async (c) => {
    const address = clientAddress(c);
    const form = await c.req.parseBody();
    const next = safeNext(typeof form.next === "string" ? form.next : null);
    const given = typeof form.token === "string" ? form.token : "";
    const right = deps.signInToken !== null && tokenMatches(given, deps.signInToken);
    // Only wrong tokens are limited: the right one always works, so nobody sharing an
    // operator's address can lock the operator out.
    let wait = right ? 0 : deps.limiter.waitFor(address);
    if (!right && wait === 0) {
      // Wrong tokens per address per hour, shared by every console and node through the
      // ephemeral store ([limits] sign_in_failures_per_hour).
      const shared = await failures.consume("sign_in", address);
      if (!shared.ok) wait = shared.retryAfter * 1000;
    }
    if (wait > 0) {
      const seconds = Math.ceil(wait / 1000);
      c.header("Retry-After", String(seconds));
      return page(
        c,
        429,
        `Too many wrong tokens from your address. Wait ${seconds} s before trying again.`,
        null,
        next,
      );
    }
    if (!right) {
      const imposed = deps.limiter.fail(address);
      deps.log.warn("console: wrong admin token", { address });
      const error = imposed > 0
        ? `That token is not right. Wait ${Math.ceil(imposed / 1000)} s before the next try.`
        : "That token is not right.";
      return page(c, 401, error, null, next);
    }
    // A success does not clear the address's failures: they age out on their own.
    // A new session id on sign-in, so a planted pre-sign-in cookie is worth nothing.
    const old = c.get("session");
    if (old) deps.sessions.destroy(old.id);
    const session = deps.sessions.create(true);
    c.set("session", session);
    setSessionCookie(c, session, deps.secure, deps.sessions.limits.absoluteMs / 1000);
    await auditSession(deps.storage, actorOf(session.label), "session.sign-in", address);
    deps.log.info("console: operator signed in", { operator: actorOf(session.label), address });
    return c.redirect(next, 303);
  });

  app.post("/sign-out", async (c) => {
    const session = c.get("session");
    if (session) {
      deps.sessions.destroy(session.id);
      await auditSession(deps.storage, actorOf(session.label), "session.sign-out", clientAddress(c))
        .catch(() => {}); // signing out must work even when storage is down
    }
    // The old cookie is replaced by a fresh pre-sign-in session that carries the goodbye.
    const fresh = deps.sessions.create(false, [{ kind: "ok", text: "You are signed out." }]);
    setSessionCookie(c, fresh, deps.secure, deps.sessions.limits.idleMs / 1000);
    return c.redirect("/sign-in", 303);
  });
}
