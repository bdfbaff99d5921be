/**
 * Federation peers (`federation_peer`) and the durable outbox (`federation_outbox`).
 *
 * Peers come from two places: static `[federation]` peers in config (trusted, always active,
 * read-only here) and database rows with a status. Every database change to a peer writes an
 * operator audit entry in the same transaction, so callers need not append one themselves.
 */
import type { Db, Queryable } from "../db.ts";
import { Conflict, InvalidValue, NotFound, TransitionNotAllowed } from "../errors.ts";
import type {
  FederationPeer,
  OutboxBacklog,
  OutboxEntry,
  OutboxRepo,
  PeerRepo,
  PeerStatus,
} from "../types.ts";
import { translate } from "./rows.ts";
import * as v from "./validate.ts";
import { bytesToHex } from "@noble/hashes/utils.js";
import { insertAudit } from "./audit.ts";

/** A federation peer trusted by configuration (`[federation]` peers). */
export interface StaticPeer {
  domain: string;
  /** HTTPS endpoint of the peer's federation inbound route. */
  endpoint: string;
  /** Ed25519 public key of the peer, 32 bytes. */
  publicKey: Uint8Array;
}

/**
 * Allowed peer status changes. Every change between two different statuses is allowed (an
 * operator may block, unblock or send a peer back to review); setting the status a peer already
 * has is refused, so a caller learns that its change did nothing.
 */
export const PEER_TRANSITIONS: Record<PeerStatus, PeerStatus[]> = {
  pending: ["active", "blocked"],
  active: ["blocked", "pending"],
  blocked: ["active", "pending"],
};

interface PeerRow {
  domain: string;
  endpoint: string;
  public_key: Uint8Array;
  status: PeerStatus;
  last_seen_at: Date | null;
  created_at: Date;
}

const PEER_COLUMNS = "domain, endpoint, public_key, status, last_seen_at, created_at";

function toPeer(r: PeerRow): FederationPeer {
  return {
    domain: r.domain,
    endpoint: r.endpoint,
    publicKey: r.public_key,
    status: r.status,
    source: "database",
    lastSeenAt: r.last_seen_at,
    createdAt: r.created_at,
  };
}

function fromConfig(p: StaticPeer): FederationPeer {
  return {
    domain: p.domain.toLowerCase(),
    endpoint: p.endpoint,
    publicKey: p.publicKey,
    status: "active",
    source: "config",
    lastSeenAt: null,
    createdAt: null,
  };
}

/** What the audit log records about a peer (the key as hex, not bytes). */
function auditView(p: FederationPeer | null): unknown {
  if (!p) return null;
  return {
    domain: p.domain,
    endpoint: p.endpoint,
    public_key: bytesToHex(p.publicKey),
    status: p.status,
  };
}

/** The audit target of a peer: `peer:<domain>`, like the CLI's `device:<id>`, `user:<id>`. */
export function peerTarget(domain: string): string {
  return `peer:${domain}`;
}

async function audit(
  q: Queryable,
  actor: string,
  action: string,
  domain: string,
  before: unknown,
  after: unknown,
): Promise<void> {
  await q.query(
    `INSERT INTO operator_audit (actor, action, target, before, after)
     VALUES ($1, $2, $3, $4::jsonb, $5::jsonb)`,
    [actor, action, peerTarget(domain), JSON.stringify(before), JSON.stringify(after)],
  );
}

export class PgPeerRepo implements PeerRepo {
  constructor(private readonly db: Db, private readonly staticPeers: StaticPeer[] = []) {}

  private refuseStatic(domain: string): void {
    if (this.staticPeers.some((p) => p.domain.toLowerCase() === domain)) {
      throw new Conflict(
        `federation peer ${JSON.stringify(domain)} is configured in [federation] and is ` +
          `read-only here; change it in the config file`,
      );
    }
  }

  /** Add a peer or update its endpoint/key (and status, if given). New peers start pending. */
  async upsert(
    input: { domain: string; endpoint: string; publicKey: Uint8Array; status?: PeerStatus },
    actor: string,
  ): Promise<FederationPeer> {
    const domain = v.domain(input.domain);
    const endpoint = v.endpoint(input.endpoint);
    const key = v.key32("peer public key", input.publicKey);
    const status = input.status === undefined ? null : v.peerStatus(input.status);
    v.actor(actor);
    this.refuseStatic(domain);
    try {
      return await this.db.transaction(async (q) => {
        const cur = await q.query<PeerRow>(
          `SELECT ${PEER_COLUMNS} FROM federation_peer WHERE domain = $1 FOR UPDATE`,
          [domain],
        );
        const before = cur.rows[0] ? toPeer(cur.rows[0]) : null;
        const res = await q.query<PeerRow>(
          `INSERT INTO federation_peer (domain, endpoint, public_key, status)
           VALUES ($1, $2, $3, COALESCE($4, 'pending'))
           ON CONFLICT (domain) DO UPDATE SET endpoint = EXCLUDED.endpoint,
             public_key = EXCLUDED.public_key,
             status = COALESCE($4, federation_peer.status)
           RETURNING ${PEER_COLUMNS}`,
          [domain, endpoint, key, status],
        );
        const after = toPeer(res.rows[0]);
        await audit(
          q,
          actor,
          before ? "peer.update" : "peer.add",
          domain,
          auditView(before),
          auditView(after),
        );
        return after;
      });
    } catch (err) {
      throw translate(err, "federation peer", domain);
    }
  }

  /** The peer as the relay sees it: a static peer wins over a database row. */
  async get(domain: string): Promise<FederationPeer | null> {
    const d = v.domain(domain);
    const fixed = this.staticPeers.find((p) => p.domain.toLowerCase() === d);
    if (fixed) return fromConfig(fixed);
    const res = await this.db.query<PeerRow>(
      `SELECT ${PEER_COLUMNS} FROM federation_peer WHERE domain = $1`,
      [d],
    );
    return res.rows[0] ? toPeer(res.rows[0]) : null;
  }

  /** Change a database peer's status along PEER_TRANSITIONS; audited. */
  async setStatus(domain: string, status: PeerStatus, actor: string): Promise<FederationPeer> {
    const d = v.domain(domain);
    const to = v.peerStatus(status);
    v.actor(actor);
    this.refuseStatic(d);
    return await this.db.transaction(async (q) => {
      const cur = await q.query<PeerRow>(
        `SELECT ${PEER_COLUMNS} FROM federation_peer WHERE domain = $1 FOR UPDATE`,
        [d],
      );
      if (!cur.rows[0]) throw new NotFound("federation peer", d);
      const before = toPeer(cur.rows[0]);
      if (!PEER_TRANSITIONS[before.status].includes(to)) {
        throw new TransitionNotAllowed(`federation peer ${JSON.stringify(d)}`, before.status, to);
      }
      const res = await q.query<PeerRow>(
        `UPDATE federation_peer SET status = $2 WHERE domain = $1 RETURNING ${PEER_COLUMNS}`,
        [d, to],
      );
      const after = toPeer(res.rows[0]);
      await audit(q, actor, "peer.set-status", d, auditView(before), auditView(after));
      return after;
    });
  }

  /** Database peers merged with static ones (static win), in domain order. */
  async list(staticPeers?: StaticPeer[]): Promise<FederationPeer[]> {
    const fixed = (staticPeers ?? this.staticPeers).map(fromConfig);
    const res = await this.db.query<PeerRow>(
      `SELECT ${PEER_COLUMNS} FROM federation_peer ORDER BY domain`,
    );
    const byDomain = new Map<string, FederationPeer>();
    for (const r of res.rows) byDomain.set(r.domain, toPeer(r));
    for (const p of fixed) byDomain.set(p.domain, p);
    return [...byDomain.values()].sort((a, b) => (a.domain < b.domain ? -1 : 1));
  }

  async touch(domain: string): Promise<void> {
    await this.db.query(`UPDATE federation_peer SET last_seen_at = now() WHERE domain = $1`, [
      v.domain(domain),
    ]);
  }
}

/** How long a claimed entry is held back from other claimers while it is being delivered. */
export const OUTBOX_LEASE_SECONDS = 60;

interface OutboxRow {
  id: string;
  event_id: string;
  peer_domain: string;
  endpoint: string;
  body: unknown;
  attempts: number;
  next_attempt_at: Date;
  last_error: string | null;
  delivered_at: Date | null;
  dead_at: Date | null;
  created_at: Date;
}

const OUTBOX_COLUMNS =
  "id, event_id, peer_domain, endpoint, body, attempts, next_attempt_at, last_error, delivered_at, dead_at, created_at";

function toEntry(r: OutboxRow): OutboxEntry {
  return {
    id: String(r.id),
    eventId: r.event_id,
    peerDomain: r.peer_domain,
    endpoint: r.endpoint,
    body: r.body,
    attempts: r.attempts,
    nextAttemptAt: r.next_attempt_at,
    lastError: r.last_error,
    deliveredAt: r.delivered_at,
    deadAt: r.dead_at,
    createdAt: r.created_at,
  };
}

export class PgOutboxRepo implements OutboxRepo {
  constructor(private readonly db: Db) {}

  /** Queue a signed event for a peer; the same event for the same peer is queued once. */
  async enqueue(
    input: { eventId: string; peerDomain: string; endpoint: string; body: unknown },
  ): Promise<OutboxEntry> {
    const eventId = v.text("event id", input.eventId, 128, 1);
    const domain = v.domain(input.peerDomain);
    const endpoint = v.endpoint(input.endpoint);
    let body: string;
    try {
      body = JSON.stringify(input.body);
    } catch {
      throw new InvalidValue("body", typeof input.body, "a JSON-serialisable value");
    }
    if (body === undefined) throw new InvalidValue("body", input.body, "a JSON value");
    if (body.includes("\\u0000")) throw new InvalidValue("body", "…", "JSON without NUL");
    await this.db.query(
      `INSERT INTO federation_outbox (event_id, peer_domain, endpoint, body)
       VALUES ($1, $2, $3, $4::jsonb)
       ON CONFLICT (event_id, peer_domain) DO NOTHING`,
      [eventId, domain, endpoint, body],
    );
    const res = await this.db.query<OutboxRow>(
      `SELECT ${OUTBOX_COLUMNS} FROM federation_outbox WHERE event_id = $1 AND peer_domain = $2`,
      [eventId, domain],
    );
    return toEntry(res.rows[0]);
  }

  /**
   * Claim up to `limit` undelivered entries that are due, oldest due first, in each peer's
   * order: an entry is claimed only with every live (not delivered, not dead) entry queued
   * before it for the same peer, so a peer's events are never delivered out of the order they
   * were queued in. An entry waiting for its retry, or leased by another claimer, holds back
   * the entries after it (a dead entry does not). Claimed entries are leased (next_attempt_at
   * moves OUTBOX_LEASE_SECONDS ahead) so another node skips them.
   * `now` has millisecond resolution while next_attempt_at (the database's now()) has
   * microseconds: an entry due within `now`'s millisecond is due, or one enqueued in the same
   * millisecond as the claim would wait for the next pass.
   */
  async claimDue(limit: number, now: Date = new Date()): Promise<OutboxEntry[]> {
    v.int("limit", limit, 1, 500);
    const at = v.date("now", now).toISOString();
    const res = await this.db.query<OutboxRow>(
      // due: entries due now that no earlier live entry of their peer waits before (one in
      // its retry back-off, or leased); in_order: of those, the ones every earlier live entry
      // of whose peer was claimed here too (rows another claimer holds locked right now are
      // skipped by SKIP LOCKED, and the entries after them must wait).
      `WITH due AS (
         SELECT o.id, o.peer_domain FROM federation_outbox o
         WHERE o.delivered_at IS NULL AND o.dead_at IS NULL
           AND o.next_attempt_at < $1::timestamptz + interval '1 millisecond'
           AND NOT EXISTS (
             SELECT 1 FROM federation_outbox p
             WHERE p.peer_domain = o.peer_domain AND p.id < o.id
               AND p.delivered_at IS NULL AND p.dead_at IS NULL
               AND p.next_attempt_at >= $1::timestamptz + interval '1 millisecond')
         ORDER BY o.next_attempt_at, o.id
         LIMIT $2
         FOR UPDATE OF o SKIP LOCKED
       ), in_order AS (
         SELECT d.id FROM due d
         WHERE NOT EXISTS (
           SELECT 1 FROM federation_outbox p
           WHERE p.peer_domain = d.peer_domain AND p.id < d.id
             AND p.delivered_at IS NULL AND p.dead_at IS NULL
             AND p.id NOT IN (SELECT id FROM due))
       )
       UPDATE federation_outbox o
       SET next_attempt_at = $1::timestamptz + make_interval(secs => $3)
       FROM in_order due WHERE o.id = due.id
       RETURNING ${OUTBOX_COLUMNS.split(", ").map((c) => "o." + c).join(", ")}`,
      [at, limit, OUTBOX_LEASE_SECONDS],
    );
    return res.rows.sort((a, b) => Number(a.id) - Number(b.id)).map(toEntry);
  }

  async markDelivered(id: string): Promise<void> {
    const res = await this.db.query(
      `UPDATE federation_outbox SET delivered_at = now() WHERE id = $1`,
      [v.bigId("outbox id", id)],
    );
    if (res.rowCount === 0) throw new NotFound("outbox entry", id);
  }

  /**
   * Hands claimed entries back unattempted: due again at once (still behind any earlier entry
   * of their peer that waits for a retry). The worker releases the rest of a peer's claimed
   * entries when one of them fails, so that they keep their place behind it.
   */
  async release(ids: string[]): Promise<void> {
    if (!Array.isArray(ids)) throw new InvalidValue("outbox ids", ids, "an array of outbox ids");
    if (ids.length === 0) return;
    await this.db.query(
      `UPDATE federation_outbox SET next_attempt_at = now()
       WHERE id = ANY($1::bigint[]) AND delivered_at IS NULL AND dead_at IS NULL`,
      [ids.map((id) => v.bigId("outbox id", id))],
    );
  }

  /** Count a failed attempt; retry after 2^attempts seconds (capped at an hour). */
  async markFailed(id: string, error: string): Promise<OutboxEntry> {
    v.bigId("outbox id", id);
    const why = errorText(error);
    const res = await this.db.query<OutboxRow>(
      `UPDATE federation_outbox
       SET attempts = attempts + 1,
           next_attempt_at = now() + make_interval(secs => LEAST(power(2, LEAST(attempts + 1, 12)), 3600)),
           last_error = $2, last_error_at = now()
       WHERE id = $1
       RETURNING ${OUTBOX_COLUMNS}`,
      [id, why],
    );
    if (!res.rows[0]) throw new NotFound("outbox entry", id);
    return toEntry(res.rows[0]);
  }

  /**
   * Give an entry up: count the attempt, keep the error, stop retrying (`dead_at`). The entry
   * stays for operators to see; claimDue never returns it again.
   */
  async markDead(id: string, error: string): Promise<OutboxEntry> {
    v.bigId("outbox id", id);
    const why = errorText(error);
    const res = await this.db.query<OutboxRow>(
      `UPDATE federation_outbox
       SET attempts = attempts + 1, last_error = $2, last_error_at = now(),
           dead_at = COALESCE(dead_at, now())
       WHERE id = $1 AND delivered_at IS NULL
       RETURNING ${OUTBOX_COLUMNS}`,
      [id, why],
    );
    if (res.rows[0]) return toEntry(res.rows[0]);
    const exists = await this.db.query(`SELECT 1 FROM federation_outbox WHERE id = $1`, [id]);
    if (exists.rowCount === 0) throw new NotFound("outbox entry", id);
    throw new Conflict(`outbox entry ${id} was already delivered; it cannot be marked dead`);
  }

  /**
   * Undelivered entries per peer: live ones (count, oldest) apart from dead ones (count); the
   * most recent error over both, so a peer whose entries all died still shows why.
   */
  async backlog(): Promise<OutboxBacklog[]> {
    const res = await this.db.query<
      {
        peer_domain: string;
        pending: string;
        dead: string;
        oldest: Date | null;
        last_error: string | null;
        next_attempt_at: Date | null;
        attempts: number | null;
      }
    >(
      `SELECT peer_domain,
              count(*) FILTER (WHERE dead_at IS NULL) AS pending,
              count(*) FILTER (WHERE dead_at IS NOT NULL) AS dead,
              min(created_at) FILTER (WHERE dead_at IS NULL) AS oldest,
              (array_agg(last_error ORDER BY last_error_at DESC NULLS LAST))[1] AS last_error,
              min(next_attempt_at) FILTER (WHERE dead_at IS NULL) AS next_attempt_at,
              max(attempts) FILTER (WHERE dead_at IS NULL) AS attempts
       FROM federation_outbox WHERE delivered_at IS NULL
       GROUP BY peer_domain ORDER BY peer_domain`,
    );
    return res.rows.map((r) => ({
      peerDomain: r.peer_domain,
      pending: Number(r.pending),
      oldest: r.oldest,
      lastError: r.last_error,
      dead: Number(r.dead),
      nextAttemptAt: r.next_attempt_at,
      attempts: Number(r.attempts ?? 0),
    }));
  }

  async retryNow(peerDomain: string, actor: string): Promise<number> {
    const domain = v.domain(peerDomain);
    v.actor(actor);
    return await this.db.transaction(async (q) => {
      const res = await q.query(
        `UPDATE federation_outbox SET next_attempt_at = now()
         WHERE peer_domain = $1 AND delivered_at IS NULL AND dead_at IS NULL
           AND next_attempt_at > now()`,
        [domain],
      );
      await insertAudit(q, {
        actor,
        action: "peer.retry-now",
        target: peerTarget(domain),
        before: null,
        after: { due_now: res.rowCount },
      });
      return res.rowCount;
    });
  }

  async listDead(filter: { peerDomain?: string; limit?: number }): Promise<OutboxEntry[]> {
    const limit = v.int("limit", filter.limit ?? 100, 1, 500);
    const domain = filter.peerDomain === undefined ? null : v.domain(filter.peerDomain);
    const res = await this.db.query<OutboxRow>(
      `SELECT ${OUTBOX_COLUMNS} FROM federation_outbox
       WHERE dead_at IS NOT NULL AND delivered_at IS NULL
         AND ($1::text IS NULL OR peer_domain = $1)
       ORDER BY dead_at DESC, id DESC LIMIT $2`,
      [domain, limit],
    );
    return res.rows.map(toEntry);
  }

  async get(id: string): Promise<OutboxEntry | null> {
    const res = await this.db.query<OutboxRow>(
      `SELECT ${OUTBOX_COLUMNS} FROM federation_outbox WHERE id = $1`,
      [v.bigId("outbox id", id)],
    );
    return res.rows[0] ? toEntry(res.rows[0]) : null;
  }

  async replay(id: string, actor: string): Promise<OutboxEntry> {
    v.bigId("outbox id", id);
    v.actor(actor);
    return await this.db.transaction(async (q) => {
      const res = await q.query<OutboxRow>(
        `UPDATE federation_outbox SET dead_at = NULL, attempts = 0, next_attempt_at = now()
         WHERE id = $1 AND dead_at IS NOT NULL AND delivered_at IS NULL
         RETURNING ${OUTBOX_COLUMNS}`,
        [id],
      );
      const entry = res.rows[0];
      if (!entry) {
        const exists = await q.query(`SELECT 1 FROM federation_outbox WHERE id = $1`, [id]);
        if (exists.rowCount === 0) throw new NotFound("outbox entry", id);
        throw new Conflict(`outbox entry ${id} is not dead; only dead entries are replayed`);
      }
      await insertAudit(q, {
        actor,
        action: "outbox.replay",
        target: peerTarget(entry.peer_domain),
        before: { id, event_id: entry.event_id, last_error: entry.last_error },
        after: { id, state: "pending" },
      });
      return toEntry(entry);
    });
  }
}

/** An error as stored: at most 4096 characters, without NUL (which text columns refuse). */
function errorText(error: string): string {
  return String(error).replaceAll("\u0000", "").slice(0, 4096);
}
