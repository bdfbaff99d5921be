/**
 * The seam between the relay and federation (ccp1.md §7): frames for remote members
 * (`device@other.domain`) leave through `server/federation/` as signed events in a durable
 * outbox, and events from peers arrive at `POST /federation/events` and are handed to the
 * local device (live connection or relay queue) by the node.
 *
 * @module
 */
import type { NodeContext } from "./context.ts";
import { encodeItemFrame, type RelayItem } from "../protocol/relay_item.ts";
import type { RelayAck } from "../storage/types.ts";
import {
  createFederation,
  type DeliverLocal,
  type Federation,
  type RemoteDevice,
  USERS_PATH,
} from "./federation/mod.ts";

/** Splits `device@domain`; a member without a domain, or with ours, is local. */
export function remoteDomainOf(member: string, ownDomain: string): string | null {
  const at = member.lastIndexOf("@");
  if (at <= 0 || at === member.length - 1) return null;
  const domain = member.slice(at + 1).toLowerCase();
  return domain === ownDomain.toLowerCase() ? null : domain;
}

/** A local member written as `device@ourdomain` is the device id without the domain. */
export function localDeviceId(member: string, ownDomain: string): string {
  if (!member.includes("@")) return member; // the common case, on every routed frame
  const suffix = `@${ownDomain.toLowerCase()}`;
  return member.toLowerCase().endsWith(suffix) ? member.slice(0, -suffix.length) : member;
}

/** Test and operator knobs passed through to the federation service. */
export interface FederationOptions {
  /** Outbox worker poll interval in ms (default 500). */
  pollIntervalMs?: number;
  /** HTTP client for outbound POSTs (default the global fetch). */
  fetch?: typeof fetch;
}

/** The relay's view of federation: send to remote members, serve the inbound endpoint. */
export class FederationRouter {
  readonly #federation: Federation;

  constructor(
    private readonly ctx: NodeContext,
    deliverLocal: DeliverLocal,
    options: FederationOptions = {},
    receiptsQueued?: (deviceId: string) => void,
  ) {
    this.#federation = createFederation({
      config: ctx.config,
      storage: ctx.storage,
      log: ctx.log,
      deliverLocal,
      receiptsQueued,
      pollIntervalMs: options.pollIntervalMs,
      fetch: options.fetch,
    });
  }

  /** The remote domain of `member`, or null when the member is local. */
  remoteDomain(member: string): string | null {
    return remoteDomainOf(member, this.ctx.config.server.domain);
  }

  /**
   * Signs and durably queues a frame for a remote member (logged once as "federation event
   * queued" by the federation service). Resolves once the event is in the outbox, which the
   * sender's ACK waits for; rejects with a non-fatal `FederationRefused` (e.g. 403 "federation
   * peer not allowed") that the router sends back to the sender as an ERROR. Resolves to the
   * event id (the sender's ACK names it in `remote`, and a receipt names it again).
   */
  async queue(sender: string, target: string, item: RelayItem): Promise<string> {
    const { eventId } = await this.#federation.send({
      channel: item.channel,
      // The relay does not carry the sender's sequence across servers: the receiving server
      // numbers the frame for its recipient (ccp1.md §7 keeps the field; it is 0 here).
      sequence: 0,
      frame: encodeItemFrame(item),
      sender,
      target,
    });
    return eventId;
  }

  /**
   * A local device acknowledged queued envelopes: those that came from peers are reported to
   * their origins (signed offset events through the outbox). Never rejects.
   */
  reportAcknowledged(deviceId: string, acked: RelayAck[]): Promise<void> {
    return this.#federation.reportAcknowledged(deviceId, acked);
  }

  /** `POST /federation/events`; never throws. */
  handleInbound(request: Request, remoteAddr?: string): Promise<Response> {
    return this.#federation.handleInbound(request, remoteAddr);
  }

  /**
   * The active devices of `name` (handle or user id) on the peer `domain`, asked for with a
   * signed `GET /federation/users/<name>` and cached 30 s; throws a non-fatal refusal.
   */
  remoteUserDevices(domain: string, name: string): Promise<RemoteDevice[]> {
    return this.#federation.remoteUserDevices(domain, name);
  }

  /** True for `/federation/users/<name>` (the user directory peers read). */
  isUserQuery(pathname: string): boolean {
    return pathname.startsWith(USERS_PATH) && pathname.length > USERS_PATH.length;
  }

  /** `GET /federation/users/<name>` from a peer; never throws. */
  handleUserQuery(request: Request): Promise<Response> {
    return this.#federation.handleUserQuery(request);
  }

  /** The path the inbound endpoint is mounted at on the HTTP listener. */
  get inboundPath(): string {
    return this.#federation.inboundPath;
  }

  /** This server's Ed25519 federation public key (what peers configure for us). */
  get publicKey(): Uint8Array {
    return this.#federation.publicKey;
  }

  /** Starts the outbox worker. */
  start(): void {
    this.#federation.start();
  }

  /** Stops the outbox worker; nothing of it runs once this resolves. */
  stop(): Promise<void> {
    return this.#federation.stop();
  }

  /** Runs one outbox delivery pass now (tests). */
  deliverDue(): Promise<number> {
    return this.#federation.deliverDue();
  }
}
