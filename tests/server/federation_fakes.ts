/**
 * Test doubles for federation tests: in-memory PeerRepo and OutboxRepo with the semantics of
 * the Postgres repositories (pending peers, allowed transitions, leased claims, 2^n backoff),
 * a capturing logger, and a two-domain harness with real HTTP listeners on loopback.
 */
import type { Config, StaticPeer } from "../../server/config/mod.ts";
import type { LogFields, Logger } from "../../server/log.ts";
import { Conflict, NotFound, TransitionNotAllowed } from "../../storage/errors.ts";
import * as v from "../../storage/repos/validate.ts";
import { outboxBacklog } from "../helpers/outbox.ts";
import type {
  FederationPeer,
  OutboxBacklog,
  OutboxEntry,
  OutboxRepo,
  PeerRepo,
  PeerStatus,
  Storage,
} from "../../storage/types.ts";
import { createFederation, type Federation } from "../../server/federation/mod.ts";
import { federationKeypair } from "../../protocol/federation.ts";

/**
 * The wall clock plus an offset tests can move forward, shared by a domain's federation and its
 * fake repositories (the database's own now() keeps running, so a frozen clock would not do).
 */
export class Clock {
  offset = 0;
  get ms(): number {
    return Date.now() + this.offset;
  }
  now = (): Date => new Date(this.ms);
  advance(ms: number): void {
    this.offset += ms;
  }
}

/** Runs a repository step, turning a thrown error into a rejection (as the real repos do). */
function checked<T>(fn: () => T): Promise<T> {
  try {
    return Promise.resolve(fn());
  } catch (err) {
    return Promise.reject(err);
  }
}

/** The rejection the real outbox gives for an id that is not one, or null for a good id. */
function badOutboxId(id: string): Promise<never> | null {
  try {
    v.bigId("outbox id", id);
    return null;
  } catch (err) {
    return Promise.reject(err);
  }
}

export class MemoryPeerRepo implements PeerRepo {
  rows = new Map<string, FederationPeer>();
  touched: string[] = [];
  upsert(
    input: { domain: string; endpoint: string; publicKey: Uint8Array; status?: PeerStatus },
  ): Promise<FederationPeer> {
    return checked(() => {
      const domain = v.domain(input.domain);
      const endpoint = v.endpoint(input.endpoint);
      const publicKey = v.key32("peer public key", input.publicKey);
      const status = input.status === undefined ? undefined : v.peerStatus(input.status);
      const before = this.rows.get(domain);
      const peer: FederationPeer = {
        domain,
        endpoint,
        publicKey,
        status: status ?? before?.status ?? "pending",
        source: "database",
        lastSeenAt: before?.lastSeenAt ?? null,
        createdAt: before?.createdAt ?? new Date(),
      };
      this.rows.set(domain, peer);
      return { ...peer };
    });
  }
  get(domain: string): Promise<FederationPeer | null> {
    return checked(() => {
      const peer = this.rows.get(v.domain(domain));
      return peer ? { ...peer } : null;
    });
  }
  setStatus(domain: string, status: PeerStatus): Promise<FederationPeer> {
    return checked(() => {
      const d = v.domain(domain);
      const to = v.peerStatus(status);
      const peer = this.rows.get(d);
      if (!peer) throw new NotFound("federation peer", d);
      if (peer.status === to) throw new TransitionNotAllowed(`peer ${d}`, peer.status, to);
      peer.status = to;
      return { ...peer };
    });
  }
  list(): Promise<FederationPeer[]> {
    return Promise.resolve([...this.rows.values()]);
  }
  touch(domain: string): Promise<void> {
    return checked(() => {
      const d = v.domain(domain);
      this.touched.push(d);
      const peer = this.rows.get(d);
      if (peer) peer.lastSeenAt = new Date();
    });
  }
}

export class MemoryOutboxRepo implements OutboxRepo {
  entries: OutboxEntry[] = [];
  #next = 1;
  constructor(private readonly clock: Pick<Clock, "ms" | "now">) {}
  enqueue(
    input: { eventId: string; peerDomain: string; endpoint: string; body: unknown },
  ): Promise<OutboxEntry> {
    try {
      v.text("event id", input.eventId, 128, 1);
      v.domain(input.peerDomain);
      v.endpoint(input.endpoint);
    } catch (err) {
      return Promise.reject(err);
    }
    const existing = this.entries.find((e) =>
      e.eventId === input.eventId && e.peerDomain === input.peerDomain
    );
    return Promise.resolve(existing ?? this.seed(input));
  }
  /** Stores an entry as given, without the checks (rows the real store would refuse). */
  seed(input: { eventId: string; peerDomain: string; endpoint: string; body: unknown }) {
    const entry: OutboxEntry = {
      id: String(this.#next++),
      eventId: input.eventId,
      peerDomain: input.peerDomain,
      endpoint: input.endpoint,
      // Stored as JSON, as the database does.
      body: JSON.parse(JSON.stringify(input.body)),
      attempts: 0,
      nextAttemptAt: this.clock.now(),
      lastError: null,
      deliveredAt: null,
      deadAt: null,
      createdAt: this.clock.now(),
    };
    this.entries.push(entry);
    return entry;
  }
  claimDue(limit: number, now: Date = this.clock.now()): Promise<OutboxEntry[]> {
    try {
      v.int("limit", limit, 1, 500);
      v.date("now", now);
    } catch (err) {
      return Promise.reject(err);
    }
    // Each peer's queue order (entries are kept in id order): a live entry that is not due
    // holds back the peer's later ones.
    const live = this.entries.filter((e) => e.deliveredAt === null && e.deadAt === null);
    const held = new Set<string>();
    const due: OutboxEntry[] = [];
    for (const e of live) {
      if (held.has(e.peerDomain)) continue;
      if (e.nextAttemptAt.getTime() > now.getTime()) held.add(e.peerDomain);
      else if (due.length < limit) due.push(e);
    }
    due.sort((a, b) => a.nextAttemptAt.getTime() - b.nextAttemptAt.getTime());
    for (const e of due) e.nextAttemptAt = new Date(now.getTime() + 60_000);
    return Promise.resolve(due.map((e) => ({ ...e })));
  }
  release(ids: string[]): Promise<void> {
    for (const id of ids) {
      const bad = badOutboxId(id);
      if (bad) return bad;
    }
    for (const e of this.entries) {
      if (ids.includes(e.id) && e.deliveredAt === null && e.deadAt === null) {
        e.nextAttemptAt = this.clock.now();
      }
    }
    return Promise.resolve();
  }
  markDelivered(id: string): Promise<void> {
    const bad = badOutboxId(id);
    if (bad) return bad;
    const e = this.entries.find((x) => x.id === id);
    if (!e) return Promise.reject(new NotFound("outbox entry", id));
    e.deliveredAt = this.clock.now();
    return Promise.resolve();
  }
  markFailed(id: string, error: string): Promise<OutboxEntry> {
    const bad = badOutboxId(id);
    if (bad) return bad;
    const e = this.entries.find((x) => x.id === id);
    if (!e) return Promise.reject(new NotFound("outbox entry", id));
    e.attempts++;
    e.lastError = error;
    e.nextAttemptAt = new Date(
      this.clock.ms + Math.min(2 ** Math.min(e.attempts, 12), 3600) * 1000,
    );
    return Promise.resolve({ ...e });
  }
  markDead(id: string, error: string): Promise<OutboxEntry> {
    const bad = badOutboxId(id);
    if (bad) return bad;
    const e = this.entries.find((x) => x.id === id);
    if (!e) return Promise.reject(new NotFound("outbox entry", id));
    if (e.deliveredAt) return Promise.reject(new Conflict(`outbox entry ${id} was delivered`));
    e.attempts++;
    e.lastError = error;
    e.deadAt ??= this.clock.now();
    return Promise.resolve({ ...e });
  }
  backlog(): Promise<OutboxBacklog[]> {
    return Promise.resolve(outboxBacklog(this.entries));
  }
  retryNow(peerDomain: string): Promise<number> {
    let n = 0;
    for (const e of this.entries) {
      if (e.peerDomain !== peerDomain || e.deliveredAt || e.deadAt) continue;
      if (e.nextAttemptAt.getTime() > this.clock.ms) {
        e.nextAttemptAt = this.clock.now();
        n++;
      }
    }
    return Promise.resolve(n);
  }
  listDead(filter: { peerDomain?: string; limit?: number }): Promise<OutboxEntry[]> {
    return Promise.resolve(
      this.entries.filter((e) =>
        e.deadAt && !e.deliveredAt &&
        (filter.peerDomain === undefined || e.peerDomain === filter.peerDomain)
      ).reverse().slice(0, filter.limit ?? 100).map((e) => ({ ...e })),
    );
  }
  get(id: string): Promise<OutboxEntry | null> {
    const bad = badOutboxId(id);
    if (bad) return bad;
    const e = this.entries.find((x) => x.id === id);
    return Promise.resolve(e ? { ...e } : null);
  }
  replay(id: string): Promise<OutboxEntry> {
    const bad = badOutboxId(id);
    if (bad) return bad;
    const e = this.entries.find((x) => x.id === id);
    if (!e) return Promise.reject(new NotFound("outbox entry", id));
    if (!e.deadAt || e.deliveredAt) {
      return Promise.reject(new Conflict(`outbox entry ${id} is not dead`));
    }
    e.deadAt = null;
    e.attempts = 0;
    e.nextAttemptAt = this.clock.now();
    return Promise.resolve({ ...e });
  }
}

/** One captured log line. */
export interface LogLine {
  level: string;
  msg: string;
  fields: LogFields;
}

/** A logger that keeps every line in `lines`. */
export function captureLogger(lines: LogLine[] = [], base: LogFields = {}): Logger & {
  lines: LogLine[];
} {
  const write = (level: string) => (msg: string, fields: LogFields = {}) =>
    lines.push({ level, msg, fields: { ...base, ...fields } });
  return {
    lines,
    debug: write("debug"),
    info: write("info"),
    warn: write("warn"),
    error: write("error"),
    child: (fields) => captureLogger(lines, { ...base, ...fields }),
  };
}

/** The smallest Config federation reads. */
export function testConfig(domain: string, seed: Uint8Array, peers: StaticPeer[]): Config {
  return {
    server: { domain },
    crypto: { federationSeed: seed },
    federation: { peers },
  } as unknown as Config;
}

/** A storage whose only working parts are the peer and outbox repositories. */
export function fakeStorage(peers: PeerRepo, outbox: OutboxRepo): Storage {
  return { dbKind: "pglite", peers, outbox } as unknown as Storage;
}

/** A frame delivered by a domain's federation. */
export interface Delivered {
  device: string;
  frame: Uint8Array;
  meta: { origin: string; sender: string; channel: number; eventId?: string };
}

/** One domain of a test: its federation, storage doubles, clock, log and HTTP listener. */
export interface TestDomain {
  domain: string;
  seed: Uint8Array;
  publicKey: Uint8Array;
  clock: Clock;
  peers: MemoryPeerRepo;
  outbox: MemoryOutboxRepo;
  log: ReturnType<typeof captureLogger>;
  delivered: Delivered[];
  /** Replace to make local delivery fail. */
  deliverLocal: (device: string, frame: Uint8Array, meta: Delivered["meta"]) => Promise<void>;
  fed: Federation;
  server: Deno.HttpServer<Deno.NetAddr> | null;
  url: string;
  /** Starts the listener (on `port`, or a free one). */
  listen(port?: number): void;
  close(): Promise<void>;
}

/** A domain with its identity; its federation is made by {@link finishDomain}. */
export function newIdentity(
  domain: string,
): { domain: string; seed: Uint8Array; publicKey: Uint8Array } {
  const seed = crypto.getRandomValues(new Uint8Array(32));
  return { domain, seed, publicKey: federationKeypair(seed).publicKey };
}

/** Builds a domain's federation over fakes, with these static peers. */
export function makeDomain(
  id: { domain: string; seed: Uint8Array; publicKey: Uint8Array },
  staticPeers: StaticPeer[],
  options: { storage?: Storage; clock?: Clock } = {},
): TestDomain {
  const clock = options.clock ?? new Clock();
  const peers = new MemoryPeerRepo();
  const outbox = new MemoryOutboxRepo(clock);
  const log = captureLogger();
  const delivered: Delivered[] = [];
  const d: TestDomain = {
    ...id,
    clock,
    peers,
    outbox,
    log,
    delivered,
    deliverLocal: (device, frame, meta) => {
      delivered.push({ device, frame: frame.slice(), meta });
      return Promise.resolve();
    },
    fed: undefined as unknown as Federation,
    server: null,
    url: "",
    listen(port = 0) {
      d.server = Deno.serve({
        hostname: "127.0.0.1",
        port,
        onListen: () => {},
      }, (req, info) => {
        const path = new URL(req.url).pathname;
        if (path !== d.fed.inboundPath) return new Response("not found", { status: 404 });
        return d.fed.handleInbound(req, info.remoteAddr.hostname);
      });
      d.url = `http://127.0.0.1:${d.server.addr.port}`;
    },
    async close() {
      await d.fed.stop();
      if (d.server) await d.server.shutdown();
      d.server = null;
    },
  };
  d.fed = createFederation({
    config: testConfig(id.domain, id.seed, staticPeers),
    storage: options.storage ?? fakeStorage(peers, outbox),
    log,
    deliverLocal: (device, frame, meta) => d.deliverLocal(device, frame, meta),
    now: clock.now,
    pollIntervalMs: 20,
    timeoutMs: 2000,
  });
  return d;
}

export { freePort, waitUntil as waitFor } from "../helpers/wait.ts";
