/**
 * Slows down guessing of the admin token: after a few wrong tokens from one client address,
 * that address must wait before trying again, and the wait doubles with every further failure
 * (capped). A wrong token during the wait gets 429 and is not counted again; the right token
 * always works, so wrong tokens from a shared address can never lock the operator out. Used by
 * the sign-in page and the admin API alike.
 */

export interface LimiterOptions {
  /** Wrong tokens allowed before the first wait (default 3). */
  freeFailures: number;
  /** The first wait (default 1 s); each further failure doubles it. */
  baseDelayMs: number;
  /** The longest wait (default 15 min). */
  maxDelayMs: number;
  /** Failures are forgotten this long after the last one (default 1 h). */
  forgetAfterMs: number;
  /** Addresses tracked at most; the oldest are dropped first. */
  maxAddresses: number;
}

const DEFAULTS: LimiterOptions = {
  freeFailures: 3,
  baseDelayMs: 1_000,
  maxDelayMs: 15 * 60 * 1000,
  forgetAfterMs: 60 * 60 * 1000,
  maxAddresses: 10_000,
};

interface Entry {
  failures: number;
  lastFailure: number;
  blockedUntil: number;
}

/** Per-address failure counting with a growing wait. */
export class SignInLimiter {
  #entries = new Map<string, Entry>();
  readonly options: LimiterOptions;

  constructor(private readonly now: () => number, options: Partial<LimiterOptions> = {}) {
    this.options = { ...DEFAULTS, ...options };
  }

  /** Milliseconds `address` must still wait before its next attempt (0 = may try now). */
  waitFor(address: string): number {
    const entry = this.#live(address);
    return entry ? Math.max(0, entry.blockedUntil - this.now()) : 0;
  }

  /** Records a wrong token; returns the wait now imposed (0 while failures are still free). */
  fail(address: string): number {
    const t = this.now();
    const entry = this.#live(address) ?? { failures: 0, lastFailure: t, blockedUntil: 0 };
    entry.failures++;
    entry.lastFailure = t;
    const over = entry.failures - this.options.freeFailures;
    const wait = over <= 0
      ? 0
      : Math.min(this.options.maxDelayMs, this.options.baseDelayMs * 2 ** Math.min(over - 1, 30));
    entry.blockedUntil = t + wait;
    this.#entries.delete(address); // re-insert so Map order is least recently failed first
    this.#entries.set(address, entry);
    while (this.#entries.size > this.options.maxAddresses) {
      this.#entries.delete(this.#entries.keys().next().value!);
    }
    return wait;
  }

  /** Forgets an address's failures after a correct token. */
  succeed(address: string): void {
    this.#entries.delete(address);
  }

  #live(address: string): Entry | null {
    const entry = this.#entries.get(address);
    if (!entry) return null;
    if (this.now() - entry.lastFailure > this.options.forgetAfterMs) {
      this.#entries.delete(address);
      return null;
    }
    return entry;
  }
}
