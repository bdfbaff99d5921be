/**
 * Server-side sessions kept in memory (they do not survive a restart; operators sign in again).
 * The cookie carries only a random 32-byte id. A session also carries its CSRF token, a public
 * label used as the operator identity in the audit log (never the cookie value), and one-shot
 * flash messages.
 */
import { randomBytes } from "node:crypto";
import type { MiddlewareHandler } from "hono";
import { getCookie, setCookie } from "hono/cookie";
import type { AppEnv } from "../context.ts";

/** A message shown once on the next page. */
export interface Flash {
  kind: "ok" | "error";
  text: string;
}

export interface ConsoleSession {
  /** The cookie value: 32 random bytes, base64url. Secret. */
  id: string;
  /** Public name for the audit log and the header: 8 random bytes, hex. */
  label: string;
  /** Synchronizer token every state-changing form must echo. Secret. */
  csrf: string;
  /** False for the pre-sign-in session that protects the sign-in form itself. */
  authenticated: boolean;
  createdAt: number;
  lastSeenAt: number;
  flash: Flash[];
}

export interface SessionLimits {
  /** Lifetime of a signed-in session regardless of activity (default 8 h). */
  absoluteMs: number;
  /** A signed-in session ends after this long without a request (default 30 min). */
  idleMs: number;
  /** Pre-sign-in sessions kept at most (oldest dropped first). */
  maxAnonymous: number;
}

export const DEFAULT_SESSION_LIMITS: SessionLimits = {
  absoluteMs: 8 * 60 * 60 * 1000,
  idleMs: 30 * 60 * 1000,
  maxAnonymous: 10_000,
};

const token = (bytes: number) => randomBytes(bytes).toString("base64url");

/** In-memory session store; expiry is checked on every read, so no timer is needed. */
export class SessionStore {
  #sessions = new Map<string, ConsoleSession>();

  constructor(
    private readonly now: () => number,
    readonly limits: SessionLimits = DEFAULT_SESSION_LIMITS,
  ) {}

  /** Starts a new session (authenticated after sign-in, anonymous for the sign-in form). */
  create(authenticated: boolean, flash: Flash[] = []): ConsoleSession {
    const t = this.now();
    const session: ConsoleSession = {
      id: token(32),
      label: randomBytes(8).toString("hex"),
      csrf: token(32),
      authenticated,
      createdAt: t,
      lastSeenAt: t,
      flash,
    };
    this.#sessions.set(session.id, session);
    if (!authenticated) this.#trimAnonymous();
    return session;
  }

  /** Looks a session up; returns "expired" (and forgets it) when it has run out. */
  get(id: string | undefined): ConsoleSession | "expired" | null {
    if (!id) return null;
    const session = this.#sessions.get(id);
    if (!session) return null;
    const t = this.now();
    const { absoluteMs, idleMs } = this.limits;
    if (t - session.createdAt > absoluteMs || t - session.lastSeenAt > idleMs) {
      this.#sessions.delete(id);
      return session.authenticated ? "expired" : null;
    }
    session.lastSeenAt = t;
    return session;
  }

  /** Ends a session. */
  destroy(id: string): void {
    this.#sessions.delete(id);
  }

  /** How many sessions are held (for tests). */
  get size(): number {
    return this.#sessions.size;
  }

  #trimAnonymous(): void {
    let anonymous = 0;
    for (const s of this.#sessions.values()) if (!s.authenticated) anonymous++;
    for (const [id, s] of this.#sessions) {
      if (anonymous <= this.limits.maxAnonymous) break;
      if (!s.authenticated) {
        this.#sessions.delete(id);
        anonymous--;
      }
    }
  }
}

/** The cookie name: `__Host-` prefixed under TLS so it is bound to this origin and Secure. */
export const cookieName = (secure: boolean) =>
  secure ? "__Host-commucat_console" : "commucat_console";

/** Sets the session cookie: HttpOnly, SameSite=Strict, Path=/, Secure under TLS. */
export function setSessionCookie(
  c: Parameters<MiddlewareHandler<AppEnv>>[0],
  session: ConsoleSession,
  secure: boolean,
  maxAgeSeconds: number,
): void {
  setCookie(c, cookieName(secure), session.id, {
    httpOnly: true,
    sameSite: "Strict",
    secure,
    path: "/",
    maxAge: maxAgeSeconds,
  });
}

/** Loads the session named by the cookie into `c.var.session` (null when none). */
export function loadSession(store: SessionStore, secure: boolean): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const found = store.get(getCookie(c, cookieName(secure)));
    c.set("session", found === "expired" ? null : found);
    c.set("sessionExpired", found === "expired");
    await next();
  };
}

/** Takes the session's pending flash messages (they are shown once). */
export function takeFlash(session: ConsoleSession | null): Flash[] {
  if (!session) return [];
  const out = session.flash;
  session.flash = [];
  return out;
}
