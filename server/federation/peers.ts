/**
 * Who federation talks to: member addresses (`device@domain`), peer resolution (static
 * `[federation]` peers merged with `federation_peer` rows) and peer endpoints.
 *
 * @module
 */
import type { StaticPeer } from "../config/mod.ts";
import type { Logger } from "../log.ts";
import { TransitionNotAllowed } from "../../storage/errors.ts";
import type { FederationPeer, PeerRepo } from "../../storage/types.ts";
import { FederationRefused, FederationTitles } from "./errors.ts";
import { isDomain, parseMember } from "../../protocol/ids.ts";

/** The path of the inbound route; a peer endpoint given as a bare base URL gets it appended. */
export const INBOUND_PATH = "/federation/events";

export { isDomain, type MemberAddress, parseMember } from "../../protocol/ids.ts";

/** The remote domain of `member`, or null when it is local (bare or ours) or malformed. */
export function remoteDomainOf(member: string, ownDomain: string): string | null {
  const address = parseMember(member);
  if (!address || address.domain === null) return null;
  return address.domain === ownDomain.toLowerCase() ? null : address.domain;
}

/**
 * The URL events are POSTed to. A peer's endpoint is normally the full URL of its inbound route
 * (`https://chat.example.org/federation/events`). A base URL — path `/` or `/federation`, the
 * form the sample config and the CLI show — gets the rest of {@link INBOUND_PATH} appended. Any
 * other path is used as given (a reverse proxy may map it).
 */
export function inboundUrl(endpoint: string): string {
  const url = new URL(endpoint);
  const path = url.pathname.replace(/\/+$/, "");
  if (path === "" || path === "/federation") url.pathname = INBOUND_PATH;
  return url.toString();
}

/**
 * Resolves peers: a static peer from config is trusted and always active; otherwise the
 * `federation_peer` row decides. Lookups go to storage every time so an operator's block or
 * approval takes effect on the next event.
 */
export class PeerDirectory {
  readonly #static: Map<string, FederationPeer>;

  constructor(
    staticPeers: StaticPeer[],
    private readonly repo: PeerRepo,
    private readonly log: Logger,
  ) {
    this.#static = new Map(
      staticPeers.map((p) => [p.domain.toLowerCase(), {
        domain: p.domain.toLowerCase(),
        endpoint: p.endpoint,
        publicKey: p.publicKey,
        status: "active" as const,
        source: "config" as const,
        lastSeenAt: null,
        createdAt: null,
      }]),
    );
  }

  /** The peer for a domain (static first), or null when neither config nor storage knows it. */
  async lookup(domain: string): Promise<FederationPeer | null> {
    const d = domain.toLowerCase();
    const fixed = this.#static.get(d);
    if (fixed) return fixed;
    if (!isDomain(d)) return null;
    return await this.repo.get(d);
  }

  /**
   * The peer traffic for `domain` may be queued to. A pending peer becomes active here (the
   * guide: it is promoted once traffic for it needs sending); a blocked or unknown one is
   * refused with 403 "federation peer not allowed".
   */
  async forOutbound(domain: string): Promise<FederationPeer> {
    const peer = await this.lookup(domain);
    if (peer?.status === "active") return peer;
    if (peer?.status === "pending") {
      try {
        const promoted = await this.repo.setStatus(peer.domain, "active", "federation");
        this.log.info("federation peer activated", { peer: peer.domain, reason: "traffic queued" });
        return promoted;
      } catch (err) {
        // Another node (or request) promoted it first; re-read what it is now.
        if (!(err instanceof TransitionNotAllowed)) throw err;
        const now = await this.lookup(domain);
        if (now?.status === "active") return now;
        throw notAllowed(domain, now);
      }
    }
    throw notAllowed(domain, peer);
  }

  /**
   * The peer an inbound event from `origin` may come from, or a queued event may be delivered
   * to: active only. (Queued events do not promote a peer again: an operator who sent it back
   * to pending or blocked it after the event was queued has the last word.)
   */
  async requireActive(origin: string): Promise<FederationPeer> {
    const peer = await this.lookup(origin);
    if (peer?.status === "active") return peer;
    throw notAllowed(origin, peer);
  }
}

/** The refusal for a peer that is unknown, blocked or (inbound) still pending. */
export function notAllowed(domain: string, peer: FederationPeer | null): FederationRefused {
  const why = peer === null
    ? `domain ${JSON.stringify(domain)} is not a federation peer: add it to [federation] peers ` +
      `or run \`deno task cli peers add\` with status active`
    : `federation peer ${JSON.stringify(domain)} is ${peer.status}` +
      (peer.status === "blocked" ? "" : `: an operator must set it active`);
  return new FederationRefused(FederationTitles.peerNotAllowed, 403, why);
}
