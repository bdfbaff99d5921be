/** What the console needs from its host, and the per-request state its middleware sets. */
import type { Config } from "../server/config/mod.ts";
import type { Storage } from "../storage/types.ts";
import type { Ledger } from "../storage/ledger.ts";
import type { FigureSampler, FiguresSource } from "./figures.ts";
import type { ConsoleSession, SessionStore } from "./middleware/session.ts";
import type { SignInLimiter } from "./middleware/rate_limit.ts";

/** The subset of the server's logger the console writes to (server/log.ts fits it). */
export interface ConsoleLogger {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

/** Everything the host hands to `createConsoleApp` / `startConsole`. */
export interface ConsoleContext {
  config: Config;
  storage: Storage;
  /** The node this console runs on (shown in the header). */
  nodeId: string;
  /** Live figures from the relay server; absent when the console runs on its own. */
  metrics?: FiguresSource;
  log?: ConsoleLogger;
  /**
   * The token operators sign in with; defaults to `config.admin.token`. `startConsole` sets it
   * to a generated start-up token when none is configured (loopback only).
   */
  signInToken?: string | null;
  /** True when served over TLS: cookies get `Secure` and the `__Host-` prefix. */
  secure?: boolean;
  /** Clock in milliseconds (tests move time forward to expire sessions). */
  now?: () => number;
  /** How often the dashboard samples live figures (default 5 s). */
  sampleIntervalMs?: number;
  /** Where the generated start-up token was written, shown on the sign-in page. */
  startupTokenFile?: string | null;
  /** Where the admin API records operator key changes (the server's ledger); none alone. */
  ledger?: Pick<Ledger, "record"> | null;
}

/** Shared state built once per app from the context. */
export interface ConsoleDeps {
  config: Config;
  storage: Storage;
  nodeId: string;
  log: ConsoleLogger;
  sessions: SessionStore;
  limiter: SignInLimiter;
  sampler: FigureSampler;
  signInToken: string | null;
  startupTokenFile: string | null;
  secure: boolean;
  now: () => number;
  /** Closed when the console stops, so live streams end. */
  closing: AbortSignal;
}

/** Hono environment: `c.env` carries the client address, `c.var` the session. */
export interface AppEnv {
  Bindings: { remoteAddr?: string };
  Variables: {
    session: ConsoleSession | null;
    /** True when the request carried a session cookie that has expired. */
    sessionExpired: boolean;
    /** Devices and keys waiting for approval, for the navigation (null when unknown). */
    pendingApprovals: number | null;
  };
}

/** A logger that writes nothing (tests and embedding without a logger). */
export const silentLogger: ConsoleLogger = {
  info() {},
  warn() {},
  error() {},
};
