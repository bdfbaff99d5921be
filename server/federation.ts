/**
 * The seam where frames for remote members (`device@other.domain`, ccp1.md §7) leave this node.
 * Today a frame for a remote member is recorded as "federation event queued" in the log; the
 * signed outbox delivery and the inbound endpoint plug in here.
 *
 * @module
 */
import type { NodeContext } from "./context.ts";
import type { RoutedItem } from "./connection.ts";

/** Splits `device@domain`; a member without a domain, or with ours, is local. */
export function remoteDomainOf(member: string, ownDomain: string): string | null {
  const at = member.lastIndexOf("@");
  if (at <= 0 || at === member.length - 1) return null;
  const domain = member.slice(at + 1).toLowerCase();
  return domain === ownDomain.toLowerCase() ? null : domain;
}

/** A local member written as `device@ourdomain` is the device id without the domain. */
export function localDeviceId(member: string, ownDomain: string): string {
  const suffix = `@${ownDomain.toLowerCase()}`;
  return member.toLowerCase().endsWith(suffix) ? member.slice(0, -suffix.length) : member;
}

export class FederationRouter {
  constructor(private readonly ctx: NodeContext) {}

  /** The remote domain of `member`, or null when the member is local. */
  remoteDomain(member: string): string | null {
    return remoteDomainOf(member, this.ctx.config.server.domain);
  }

  /**
   * Hands a frame for a remote member to federation. Resolves once it is recorded; the outbox
   * (signed event, HTTPS POST with retries) takes it from here when that delivery lands.
   */
  queue(sender: string, target: string, domain: string, item: RoutedItem): Promise<void> {
    this.ctx.log.info("federation event queued", {
      sender,
      target,
      domain,
      channel: item.channel,
      bytes: item.payload.length,
    });
    return Promise.resolve();
  }
}
