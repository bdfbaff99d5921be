/**
 * Presence (ccp1.md §4.3, §6): the device's presence record in the ephemeral store, and live
 * PRESENCE `{channel, peer, state}` frames between the members of a conversation. A device's
 * presence reaches the members who joined the conversations it joined itself (consent on both
 * sides: listing a device in a JOIN does not let the lister watch it), at most
 * `limits.presence_fanout` copies per announcement.
 *
 * @module
 */
import { encodeControlPayload, FrameType } from "../../protocol/frame.ts";
import type { Presence as PresenceRecord } from "../../storage/types.ts";
import type { NodeContext } from "../context.ts";
import type { Delivery } from "../delivery/delivery.ts";
import { routed } from "../session/sender_ack.ts";
import { localDeviceId, remoteDomainOf } from "../federation.ts";
import type { Connection } from "../session/connection.ts";
import type { Binding, Conversation, Conversations } from "./conversations.ts";

export class PresenceService {
  /** Announcements still looking up where members are (awaited on stop). */
  readonly #running = new Set<Promise<void>>();

  constructor(
    private readonly ctx: NodeContext,
    private readonly conversations: Conversations,
    private readonly delivery: Delivery,
  ) {}

  /** Stores the device's presence record (ccp1.md §6). */
  async publish(conn: Connection, state: "online" | "offline"): Promise<void> {
    const { presenceTtl } = this.ctx.config.limits;
    await this.ctx.storage.ephemeral.setPresence(
      conn.deviceId,
      this.record(conn, state),
      presenceTtl,
    );
  }

  /** The device's presence record (ccp1.md §6) in `state`, for the presence TTL. */
  record(conn: Connection, state: "online" | "offline"): PresenceRecord {
    const { presenceTtl } = this.ctx.config.limits;
    const user = conn.user!;
    return {
      entity: conn.deviceId,
      state,
      expires_at: new Date(Date.now() + presenceTtl * 1000).toISOString(),
      user: {
        id: user.id,
        handle: user.handle,
        display_name: user.display_name,
        avatar_url: user.avatar_url,
      },
    };
  }

  /**
   * Tells the members who joined the device's conversations (or only the one bound to
   * `channel`) its presence: PRESENCE `{channel, peer, state}` with `conn.presenceState`, live
   * only — never queued, never federated. With `notify: false` the channels are only marked as
   * told (a session that took over from one in the same state); `bound`, the device's bindings
   * when the caller has them (a session that ended), saves reading them again. Runs in the
   * background.
   */
  announce(
    conn: Connection,
    options: { channel?: number; notify?: boolean; bound?: Map<number, string> } = {},
  ): void {
    const state = conn.presenceState;
    const job = this.#announce(conn, state, options).catch((err) =>
      conn.log.debug("presence not announced", { error: err })
    ).finally(() => this.#running.delete(job));
    this.#running.add(job);
  }

  async #announce(
    conn: Connection,
    state: string,
    options: { channel?: number; notify?: boolean; bound?: Map<number, string> },
  ): Promise<void> {
    const device = conn.deviceId;
    const bindings = await this.#bindings(conn, options.channel, options.bound);
    for (const b of bindings) (conn.presenceToldOn ??= new Set()).add(b.channel);
    if (options.notify === false || bindings.length === 0) return;
    const joined = await this.conversations.joinedOf(bindings.map((b) => b.conversation.id));
    let budget = this.ctx.config.limits.presenceFanout;
    for (const [i, { channel, conversation }] of bindings.entries()) {
      for (const member of joined[i]) {
        if (member === device || !conversation.members.has(member)) continue;
        if (budget-- <= 0) {
          this.ctx.log.warn("presence fan-out cut at its limit", {
            device,
            limit: this.ctx.config.limits.presenceFanout,
          });
          return;
        }
        this.delivery.sendLive(
          member,
          FrameType.Presence,
          channel,
          { channel, peer: device, state },
          device,
        );
      }
    }
  }

  async #bindings(
    conn: Connection,
    channel?: number,
    bound?: Map<number, string>,
  ): Promise<Binding[]> {
    if (channel === undefined) return await this.conversations.bindingsOf(conn.deviceId, bound);
    const found = await this.conversations.lookup(conn.deviceId, channel);
    return found === null ? [] : [{ channel, conversation: found }];
  }

  /**
   * Tells `conn` which other members who joined `conversation` are online now: PRESENCE
   * `{channel, peer, state}` for each. A member on this node reports the state it announced;
   * one elsewhere is online while its presence record says so.
   */
  async tellWhoIsOnline(
    conn: Connection,
    channel: number,
    conversation: Conversation,
  ): Promise<void> {
    const { storage, config } = this.ctx;
    const [joined] = await this.conversations.joinedOf([conversation.id]);
    const lookups: Promise<[string, string] | null>[] = [];
    for (const member of joined.slice(0, config.limits.presenceFanout)) {
      if (member === conn.deviceId || !conversation.members.has(member)) continue;
      if (remoteDomainOf(member, config.server.domain) !== null) continue;
      const id = localDeviceId(member, config.server.domain);
      const local = this.delivery.localConnection(id);
      if (local) {
        lookups.push(Promise.resolve([member, local.presenceState]));
        continue;
      }
      lookups.push(
        storage.ephemeral.getPresence(id).then(
          (p) => (p?.state === "online" ? [member, "online"] : null),
          (err) => {
            conn.log.debug("presence lookup failed", { error: err, device: id });
            return null;
          },
        ),
      );
    }
    for (const found of await Promise.all(lookups)) {
      if (found === null || found[1] === "offline" || conn.state !== "open") continue;
      const value = { channel, peer: found[0], state: found[1] };
      conn.deliver(
        routed({
          type: FrameType.Presence,
          channel,
          payload: encodeControlPayload(value),
          sender: found[0],
        }),
        null,
        false,
      );
    }
  }

  /** Resolves when no announcement is still running. */
  async idle(): Promise<void> {
    while (this.#running.size > 0) await Promise.allSettled([...this.#running]);
  }
}
