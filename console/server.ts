/**
 * The admin console as a Hono app (`createConsoleApp`, for tests: `app.fetch(request)`) and as
 * a listener (`startConsole`, called by the relay server or by console/main.ts).
 */
import { Hono } from "hono";
import type { AppEnv, ConsoleContext, ConsoleDeps } from "./context.ts";
import { silentLogger } from "./context.ts";
import { FigureSampler } from "./figures.ts";
import { SessionStore } from "./middleware/session.ts";
import { SignInLimiter } from "./middleware/rate_limit.ts";
import { securityHeaders } from "./middleware/headers.ts";
import { loadSession } from "./middleware/session.ts";
import { checkCsrf, requireSignIn } from "./middleware/guard.tsx";
import { errorPage, PageError } from "./middleware/errors.tsx";
import * as routes from "./routes/mod.ts";
import { checkBindAllowed, generateStartupToken, tokenMatches, writeStartupToken } from "./auth.ts";
import { createAdminApi } from "../admin/api.ts";
import { listenOn } from "../server/listen.ts";

/** A console app plus what its owner must shut down. */
export interface ConsoleApp {
  app: Hono<AppEnv>;
  deps: ConsoleDeps;
  /** Ends live streams and timers. */
  close(): void;
}

/** Builds the console's request pipeline and routes. */
export function buildConsole(ctx: ConsoleContext): ConsoleApp {
  const now = ctx.now ?? Date.now;
  const closing = new AbortController();
  const secure = ctx.secure ?? false;
  const deps: ConsoleDeps = {
    config: ctx.config,
    storage: ctx.storage,
    nodeId: ctx.nodeId,
    log: ctx.log ?? silentLogger,
    sessions: new SessionStore(now),
    limiter: new SignInLimiter(now),
    sampler: new FigureSampler(ctx.storage, ctx.metrics, now, ctx.sampleIntervalMs),
    signInToken: ctx.signInToken !== undefined ? ctx.signInToken : ctx.config.admin.token,
    startupTokenFile: ctx.startupTokenFile ?? null,
    secure,
    now,
    closing: closing.signal,
  };
  const app = new Hono<AppEnv>();
  // The admin API first: it takes no cookies, so the session and CSRF middleware never see it.
  app.route(
    "/api/v1",
    createAdminApi({
      storage: ctx.storage,
      token: () => deps.signInToken,
      tokenMatches,
      limiter: deps.limiter,
      staticPeerDomains: () => ctx.config.federation.peers.map((p) => p.domain),
      now,
      ledger: ctx.ledger ?? null,
    }),
  );
  app.use(securityHeaders(secure));
  app.use(loadSession(deps.sessions, secure));
  app.use(requireSignIn());
  app.use(checkCsrf(deps));
  // The navigation shows how many devices wait for approval: counted at most once a second.
  let pending: { at: number; count: number | null } | null = null;
  app.use(async (c, next) => {
    if (c.req.method === "GET" && c.get("session")?.authenticated) {
      const t = now();
      if (!pending || t - pending.at >= 1000) {
        const count = await ctx.storage.devices.countAwaitingApproval().catch(() => null);
        pending = { at: t, count };
      }
      c.set("pendingApprovals", pending.count);
    }
    await next();
  });

  routes.staticFiles.register(app);
  routes.signIn.register(app, deps);
  routes.dashboard.register(app, deps, ctx.metrics !== undefined);
  routes.live.register(app, deps);
  routes.devices.register(app, deps);
  routes.deviceActions.register(app, deps);
  routes.deviceDetail.register(app, deps);
  routes.users.register(app, deps);
  routes.groups.register(app, deps);
  routes.groupRoles.register(app, deps);
  routes.peers.register(app, deps);
  routes.keyEventArchive.register(app, deps);
  routes.keyEvents.register(app, deps);
  routes.analytics.register(app, deps);
  routes.audit.register(app, deps);

  app.notFound((c) =>
    errorPage(new PageError(404, "Page not found", `there is no page at ${c.req.path}`), c, deps)
  );
  app.onError((err, c) => errorPage(err, c, deps));
  return {
    app,
    deps,
    close() {
      closing.abort();
      deps.sampler.stop();
    },
  };
}

/** The console's Hono app; `app.fetch(request)` serves one request. */
export function createConsoleApp(ctx: ConsoleContext): Hono<AppEnv> {
  return buildConsole(ctx).app;
}

/** A running console. */
export interface RunningConsole {
  port: number;
  hostname: string;
  /** Base URL, e.g. http://127.0.0.1:8080. */
  url: string;
  /** The generated start-up token when no admin token is configured (loopback only). */
  startupToken: string | null;
  /** Where the start-up token was written (`<data_dir>/console-token`), or null. */
  startupTokenFile: string | null;
  stop(): Promise<void>;
}

/**
 * Serves the console on `config.server.consoleBind` (port 0 picks a free one), over TLS when
 * `tls_cert` and `tls_key` are set. Without an admin token it refuses any bind but loopback and
 * writes a start-up token to `<data_dir>/console-token` (mode 0600) instead of logging it.
 */
export async function startConsole(ctx: ConsoleContext): Promise<RunningConsole> {
  const { config } = ctx;
  const bind = config.server.consoleBind;
  const log = ctx.log ?? silentLogger;
  checkBindAllowed(bind.hostname, config.admin.token);
  let startupToken: string | null = null;
  let startupTokenFile: string | null = null;
  if (config.admin.token === null && ctx.signInToken == null) {
    startupToken = generateStartupToken();
    startupTokenFile = await writeStartupToken(config.server.dataDir, startupToken);
    log.warn("console: no admin token configured; a sign-in token for this run was written", {
      file: startupTokenFile,
    });
  }
  const tls = config.server.tlsCert && config.server.tlsKey
    ? {
      cert: await Deno.readTextFile(config.server.tlsCert),
      key: await Deno.readTextFile(config.server.tlsKey),
    }
    : null;
  const consoleApp = buildConsole({
    ...ctx,
    signInToken: ctx.signInToken ?? config.admin.token ?? startupToken,
    startupTokenFile,
    secure: tls !== null,
  });
  const { promise: listening, resolve } = Promise.withResolvers<Deno.NetAddr>();
  const server = listenOn(
    { setting: "console_bind", hostname: bind.hostname, port: bind.port },
    () =>
      Deno.serve({
        hostname: bind.hostname,
        port: bind.port,
        ...(tls ?? {}),
        onListen: (addr) => resolve(addr as Deno.NetAddr),
      }, (req, info) =>
        consoleApp.app.fetch(req, {
          remoteAddr: (info.remoteAddr as Deno.NetAddr).hostname,
        })),
  );
  const addr = await listening;
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  const url = `${tls ? "https" : "http"}://${host}:${addr.port}`;
  log.info("console: listening", { url });
  let stopped: Promise<void> | null = null;
  return {
    port: addr.port,
    hostname: addr.hostname,
    url,
    startupToken,
    startupTokenFile,
    stop() {
      stopped ??= (async () => {
        consoleApp.close();
        await server.shutdown();
      })();
      return stopped;
    },
  };
}
