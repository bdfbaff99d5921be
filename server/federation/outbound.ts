/**
 * Outbound federation: turning a frame for a remote member into a signed event in the durable
 * outbox, and the worker that POSTs outbox entries to peers with retries.
 *
 * Retry policy (see docs/FEDERATION.md):
 * - 2xx: delivered. 409 "replayed event": the peer already accepted this event id (our earlier
 *   attempt went through but its answer was lost), so it counts as delivered.
 * - Network errors, timeouts, 408, 429 and 5xx: transient; retried with the outbox's backoff
 *   (2^attempts seconds, capped at one hour).
 * - Any other status (403 "federation peer not allowed" while the peer has not added us yet,
 *   400, 401, 3xx): logged as a rejection and retried on the same backoff, because such
 *   failures are usually a pairing or configuration step an operator is about to finish. The
 *   backlog (`storage.outbox.backlog()`) shows the last error per peer.
 * - Giving up: a 4xx rejection other than 408, 429 and 403 "federation peer not allowed" (the
 *   peer has not paired with us yet, which may take days) that answers attempt
 *   {@link MAX_REJECTED_ATTEMPTS} or later marks the entry dead (`outbox.markDead`): it is
 *   never retried and stays visible with its error (backlog `dead` count). With the backoff
 *   that is about 34 minutes of refusals. An entry whose stored body is not a valid event is
 *   given up at once. A peer blocked here is never a reason to give up (it may be unblocked).
 * - Every attempt re-stamps `created_at` and re-signs the event (the id stays), so a retry hours
 *   later still passes the receiver's ±5 minute clock-skew check.
 *
 * @module
 */
import type { Logger } from "../log.ts";
import type { OutboxEntry, OutboxRepo } from "../../storage/types.ts";
import { type FederationEvent, signEvent, toRfc3339 } from "../../protocol/federation.ts";
import { bytesToHex } from "../../protocol/hex.ts";
import { concatChunks } from "../../protocol/bytes.ts";
import { FederationTitles } from "./errors.ts";
import { EventShapeError, parseSignedEventBody, type SignedEventBody } from "./event.ts";
import { inboundUrl, type PeerDirectory } from "./peers.ts";
import { FederationRefused } from "./errors.ts";

/** How often the worker looks for due entries when nothing nudges it. */
export const POLL_INTERVAL_MS = 500;
/** How long one POST may take before it is abandoned (and retried later). */
export const DELIVERY_TIMEOUT_MS = 10_000;
/** Entries claimed per pass. */
export const CLAIM_BATCH = 32;
/** From this attempt on, a peer's 4xx rejection (see {@link classify}) gives the entry up. */
export const MAX_REJECTED_ATTEMPTS = 10;
/** How much of a peer's error answer is read and kept. */
const MAX_ERROR_BODY = 4096;

/** Options of the outbox worker. */
export interface OutboxWorkerOptions {
  outbox: OutboxRepo;
  peers: PeerDirectory;
  secretKey: Uint8Array;
  log: Logger;
  fetch: typeof fetch;
  now: () => Date;
  pollIntervalMs?: number;
  timeoutMs?: number;
}

/** Result of one delivery attempt. */
type Outcome =
  | { kind: "delivered"; note?: string }
  | {
    kind: "failed";
    error: string;
    /** A refusal rather than a transient failure (logged as `rejected`). */
    permanent: boolean;
    /** When to stop retrying: "now", after MAX_REJECTED_ATTEMPTS ("limit"), or "never". */
    giveUp: "now" | "limit" | "never";
  };

/**
 * Delivers outbox entries. `start()` begins polling; `nudge()` asks for a pass right away
 * (after an enqueue); `stop()` cancels the timer, aborts in-flight POSTs and waits for the
 * current pass to record its outcomes.
 */
export class OutboxWorker {
  #timer: ReturnType<typeof setTimeout> | null = null;
  #pass: Promise<void> | null = null;
  #again = false;
  #stopped = true;
  /** stop() was called: a pass under way tries no further entry. */
  #stopping = false;
  readonly #inflight = new Set<AbortController>();
  readonly #interval: number;
  readonly #timeout: number;

  constructor(private readonly o: OutboxWorkerOptions) {
    this.#interval = o.pollIntervalMs ?? POLL_INTERVAL_MS;
    this.#timeout = o.timeoutMs ?? DELIVERY_TIMEOUT_MS;
  }

  /** Starts the polling loop (idempotent). */
  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#stopping = false;
    this.#schedule(0);
  }

  /** Runs a pass as soon as possible (the current one finishes first). */
  nudge(): void {
    if (this.#stopped) return;
    if (this.#pass) this.#again = true;
    else this.#schedule(0);
  }

  /** Stops the loop; resolves once no timer, request or storage call of it is pending. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#stopping = true;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    for (const ac of this.#inflight) ac.abort(new Error("federation worker stopping"));
    while (this.#pass) await this.#pass;
  }

  /**
   * One pass now, outside the loop (tests, operator tools): claims due entries until none are
   * left and tries each once. Resolves to the number of entries tried.
   */
  async deliverDue(): Promise<number> {
    while (this.#pass) await this.#pass;
    this.#stopping = false;
    let tried = 0;
    const run = (async () => {
      tried = await this.#deliverAll();
    })();
    this.#pass = run.finally(() => (this.#pass = null));
    await this.#pass;
    return tried;
  }

  #schedule(ms: number): void {
    if (this.#stopped) return;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#run();
    }, ms);
  }

  #run(): void {
    if (this.#pass) {
      this.#again = true;
      return;
    }
    this.#pass = this.#deliverAll()
      .then(() => {}, (err) => {
        this.o.log.warn("federation outbox pass failed", { error: err });
      })
      .finally(() => {
        this.#pass = null;
        const again = this.#again;
        this.#again = false;
        this.#schedule(again ? 0 : this.#interval);
      });
  }

  async #deliverAll(): Promise<number> {
    let tried = 0;
    while (!this.#stopped || tried === 0) {
      const due = await this.o.outbox.claimDue(CLAIM_BATCH, this.o.now());
      if (due.length === 0) break;
      // Peers at once, each peer's entries one after the other in queue order (claimDue hands
      // out a peer's entries only in that order): a peer receives events in the order they
      // were queued, so frames of one conversation arrive in the order they were sent.
      const byPeer = new Map<string, OutboxEntry[]>();
      for (const entry of [...due].sort((a, b) => Number(a.id) - Number(b.id))) {
        const list = byPeer.get(entry.peerDomain);
        if (list) list.push(entry);
        else byPeer.set(entry.peerDomain, [entry]);
      }
      const counts = await Promise.all(
        [...byPeer.values()].map((list) => this.#deliverInOrder(list)),
      );
      tried += counts.reduce((a, b) => a + b, 0);
      if (due.length < CLAIM_BATCH) break;
    }
    return tried;
  }

  /**
   * Delivers one peer's claimed entries in order. After one that is not delivered (it waits
   * for its retry), the rest are handed back untried so that they stay behind it. Resolves to
   * the number tried.
   */
  async #deliverInOrder(entries: OutboxEntry[]): Promise<number> {
    for (let i = 0; i < entries.length; i++) {
      if (this.#stopping && i > 0) return this.#handBack(entries.slice(i), i);
      if (!(await this.#deliverOne(entries[i]))) return this.#handBack(entries.slice(i + 1), i + 1);
    }
    return entries.length;
  }

  async #handBack(rest: OutboxEntry[], tried: number): Promise<number> {
    if (rest.length === 0) return tried;
    try {
      await this.o.outbox.release(rest.map((e) => e.id));
    } catch (err) {
      // Their leases expire and a later pass claims them, still in order.
      this.o.log.warn("federation outbox release failed", {
        peer: rest[0].peerDomain,
        entries: rest.length,
        error: err,
      });
    }
    return tried;
  }

  /**
   * One attempt at one entry and its recorded outcome. True when the peer's later entries may
   * follow: it was delivered, or given up.
   */
  async #deliverOne(entry: OutboxEntry): Promise<boolean> {
    let outcome: Outcome;
    try {
      outcome = await this.#attempt(entry);
    } catch (err) {
      outcome = { kind: "failed", error: errorText(err), permanent: false, giveUp: "never" };
    }
    const fields = { event_id: entry.eventId, peer: entry.peerDomain, attempt: entry.attempts + 1 };
    try {
      if (outcome.kind === "delivered") {
        await this.o.outbox.markDelivered(entry.id);
        this.o.log.info("federation event delivered", { ...fields, note: outcome.note });
        return true;
      } else if (
        outcome.giveUp === "now" ||
        (outcome.giveUp === "limit" && entry.attempts + 1 >= MAX_REJECTED_ATTEMPTS)
      ) {
        await this.o.outbox.markDead(entry.id, outcome.error);
        this.o.log.warn("federation event given up", { ...fields, error: outcome.error });
        return true;
      } else {
        const updated = await this.o.outbox.markFailed(entry.id, outcome.error);
        this.o.log.warn("federation delivery failed", {
          ...fields,
          error: outcome.error,
          rejected: outcome.permanent,
          next_attempt_at: updated.nextAttemptAt,
        });
      }
    } catch (err) {
      // The lease on the entry expires and another pass retries it (the peer's later entries
      // wait behind it until then).
      this.o.log.warn("federation outbox update failed", { ...fields, error: err });
    }
    return false;
  }

  async #attempt(entry: OutboxEntry): Promise<Outcome> {
    let peer;
    try {
      peer = await this.o.peers.requireActive(entry.peerDomain);
    } catch (err) {
      if (err instanceof FederationRefused) {
        // Blocked or unknown here: the operator may change that, so the entry waits.
        return {
          kind: "failed",
          error: `${err.title}: ${err.detail}`,
          permanent: true,
          giveUp: "never",
        };
      }
      throw err;
    }
    let body: SignedEventBody;
    try {
      body = parseSignedEventBody(entry.body);
    } catch (err) {
      const why = err instanceof EventShapeError ? err.message : errorText(err);
      return {
        kind: "failed",
        error: `outbox entry is not a valid event: ${why}`,
        permanent: true,
        giveUp: "now",
      };
    }
    const event: FederationEvent = { ...body.event, created_at: toRfc3339(this.o.now()) };
    const signature = bytesToHex(signEvent(event, this.o.secretKey));
    const json = JSON.stringify({ event, signature });

    const ac = new AbortController();
    this.#inflight.add(ac);
    const timer = setTimeout(
      () => ac.abort(new Error(`no answer within ${this.#timeout} ms`)),
      this.#timeout,
    );
    try {
      const res = await this.o.fetch(inboundUrl(peer.endpoint), {
        method: "POST",
        headers: { "content-type": "application/json", "user-agent": "commucat-federation" },
        body: json,
        signal: ac.signal,
        redirect: "manual",
      });
      const answer = await readLimited(res, MAX_ERROR_BODY);
      return classify(res.status, answer);
    } catch (err) {
      const reason = ac.signal.aborted ? ac.signal.reason : err;
      return {
        kind: "failed",
        error: `network: ${errorText(reason)}`,
        permanent: false,
        giveUp: "never",
      };
    } finally {
      clearTimeout(timer);
      this.#inflight.delete(ac);
    }
  }
}

/** Maps a peer's HTTP answer to an outcome (see the module notes). */
export function classify(status: number, answer: string): Outcome {
  if (status >= 200 && status < 300) return { kind: "delivered" };
  const problem = parseProblem(answer);
  if (status === 409 && problem?.title === FederationTitles.replayedEvent) {
    return { kind: "delivered", note: "peer had already accepted this event" };
  }
  const summary = problem
    ? `HTTP ${status} ${problem.title}${problem.detail ? `: ${problem.detail}` : ""}`
    : `HTTP ${status}${answer ? `: ${answer.slice(0, 200)}` : ""}`;
  const transient = status === 408 || status === 429 || status >= 500;
  // A 4xx is the peer refusing this event; 403 "peer not allowed" is unfinished pairing, and a
  // 3xx a misconfigured endpoint, both of which an operator fixes without the event changing.
  const rejection = status >= 400 && status < 500 && !transient &&
    !(status === 403 && problem?.title === FederationTitles.peerNotAllowed);
  return {
    kind: "failed",
    error: summary,
    permanent: !transient,
    giveUp: rejection ? "limit" : "never",
  };
}

function parseProblem(text: string): { title: string; detail: string } | null {
  try {
    const v = JSON.parse(text);
    if (v && typeof v === "object" && typeof v.title === "string") {
      return { title: v.title, detail: typeof v.detail === "string" ? v.detail : "" };
    }
  } catch {
    // Not a problem document.
  }
  return null;
}

/** Reads at most `max` bytes of a response body as text and releases the rest. */
async function readLimited(res: Response, max: number): Promise<string> {
  if (!res.body) return "";
  const reader = res.body.getReader();
  const parts: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < max) {
      const { done, value } = await reader.read();
      if (done) break;
      parts.push(value);
      size += value.length;
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
  return new TextDecoder().decode(concatChunks(parts).subarray(0, max));
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
