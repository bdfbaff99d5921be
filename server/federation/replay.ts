/**
 * Replay protection for inbound events: each (origin, event_id) is accepted once.
 *
 * The clock-skew check already refuses any event whose `created_at` is more than
 * {@link CLOCK_SKEW_MS} from now, so an id only has to be remembered for as long as an event
 * carrying it could still pass that check: {@link REPLAY_WINDOW_MS}. The in-memory guard is
 * bounded; when it is full of ids that are all still inside the window it refuses new events
 * (503, the sender retries) rather than forgetting ids early and weakening the protection.
 *
 * One process remembers only what it saw: with several nodes behind one federation endpoint, a
 * durable guard (the `idempotency` table) must be injected instead.
 *
 * @module
 */
import { ProblemError } from "../../protocol/errors.ts";

/** How far `created_at` may be from the receiver's clock: 5 minutes. */
export const CLOCK_SKEW_MS = 5 * 60 * 1000;
/** How long an accepted event id is remembered: both sides of the skew window, plus a minute. */
export const REPLAY_WINDOW_MS = 2 * CLOCK_SKEW_MS + 60 * 1000;
/** Default capacity of the in-memory guard. */
export const DEFAULT_REPLAY_CAPACITY = 200_000;

/** Records accepted event ids. */
export interface ReplayGuard {
  /**
   * Records (origin, eventId) and resolves true, or resolves false when it was recorded before
   * and is still remembered. Throws {@link ReplayGuardFull} when it cannot record safely.
   */
  claim(origin: string, eventId: string, now: Date): Promise<boolean>;
  /** Forgets a claim whose delivery failed, so the sender's retry is accepted. */
  release(origin: string, eventId: string): Promise<void>;
}

/** The guard cannot record another id without forgetting one still inside the window. */
export class ReplayGuardFull extends ProblemError {
  constructor(capacity: number) {
    super(
      "Federation Busy",
      503,
      `replay guard holds ${capacity} event ids that are all inside the replay window`,
    );
    this.name = "ReplayGuardFull";
  }
}

/** A bounded in-memory guard: ids expire REPLAY_WINDOW_MS after they were claimed. */
export class MemoryReplayGuard implements ReplayGuard {
  // Insertion order is claim order, so the oldest entries are always at the front.
  readonly #expiry = new Map<string, number>();

  constructor(
    private readonly capacity = DEFAULT_REPLAY_CAPACITY,
    private readonly windowMs = REPLAY_WINDOW_MS,
  ) {}

  /** How many ids are remembered. */
  get size(): number {
    return this.#expiry.size;
  }

  claim(origin: string, eventId: string, now: Date): Promise<boolean> {
    const t = now.getTime();
    this.#purge(t);
    const key = `${origin}\n${eventId}`;
    const until = this.#expiry.get(key);
    if (until !== undefined && until > t) return Promise.resolve(false);
    if (this.#expiry.size >= this.capacity) {
      return Promise.reject(new ReplayGuardFull(this.capacity));
    }
    this.#expiry.set(key, t + this.windowMs);
    return Promise.resolve(true);
  }

  release(origin: string, eventId: string): Promise<void> {
    this.#expiry.delete(`${origin}\n${eventId}`);
    return Promise.resolve();
  }

  #purge(t: number): void {
    for (const [key, until] of this.#expiry) {
      if (until > t) break;
      this.#expiry.delete(key);
    }
  }
}
