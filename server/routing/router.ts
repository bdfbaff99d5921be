/**
 * What happens to each frame after the handshake (ccp1.md §4): JOIN and LEAVE bind and unbind a
 * device's channel ids to conversations; MSG / TYPING / KEY_UPDATE / GROUP_EVENT fan out to the
 * other members of the sender's conversation with the sender stamped for devices that asked for
 * it, and the sender's ACK follows the rule of §5; PRESENCE with peer candidates; GROUP_CREATE
 * and GROUP_INVITE with role checks; the client's receipt ACKs; server requests (a KEY_UPDATE on
 * channel 0).
 *
 * @module
 */
import { type Frame, FRAME_TYPE_NAMES, FrameType } from "../../protocol/frame.ts";
import {
  parseAck,
  parseGroupCreate,
  parseGroupEvent,
  parseGroupInvite,
  parseJoin,
  parseLeave,
  parsePresence,
  parseTyping,
} from "../../protocol/control.ts";
import { ProtocolError } from "../../protocol/errors.ts";
import { MAX_U32 } from "../../protocol/varint.ts";
import { NotPermitted, RedisFailure, StorageError } from "../../storage/errors.ts";
import type { GroupRole } from "../../storage/types.ts";
import type { NodeContext } from "../context.ts";
import type { Delivery } from "../delivery/delivery.ts";
import { type RoutedItem, SenderAck } from "../session/sender_ack.ts";
import { fatal, refusalFor, refused, Titles } from "../errors.ts";
import { rateLimited } from "../limits.ts";
import { getLogLevel } from "../log.ts";
import type { Connection } from "../session/connection.ts";
import { type Conversation, type Conversations, resolveUser } from "./conversations.ts";
import type { PresenceService } from "./presence.ts";
import type { Requests } from "./requests.ts";

const NON_FATAL = { fatal: false } as const;
/** The waits of a fan-out that has none (never written to). */
const NO_WAITS: readonly Promise<unknown>[] = Object.freeze([]);
const debugEnabled = () => getLogLevel() === "debug";
/** Most sequences one `{acks:[…]}` frame may list. */
export const MAX_ACKS_PER_FRAME = 4096;

/** What the router tells the rest of the node about group rosters. */
export interface GroupNotifier {
  /** A group's roster changed here: every node drops its cached conversation. */
  groupChanged(groupId: string): void;
}

export class Router {
  constructor(
    private readonly ctx: NodeContext,
    readonly conversations: Conversations,
    private readonly delivery: Delivery,
    private readonly presence: PresenceService,
    private readonly requests: Requests,
    private readonly groups: GroupNotifier,
  ) {}

  /**
   * Handles one post-handshake frame. Returns a promise only when the frame needs I/O before
   * the next one may be handled (so frames of one connection keep their order).
   */
  handle(conn: Connection, frame: Frame): Promise<void> | void {
    try {
      switch (frame.type) {
        case FrameType.KeyUpdate:
          if (frame.channel === 0) {
            return this.#guard(conn, frame, this.requests.handle(conn, frame));
          }
          return this.#guard(conn, frame, this.#fanOut(conn, frame));
        case FrameType.Msg:
        case FrameType.Typing:
        case FrameType.GroupEvent:
          return this.#guard(conn, frame, this.#fanOut(conn, frame));
        case FrameType.Ack:
          return this.#onAck(conn, frame);
        case FrameType.Join:
          return this.#guard(conn, frame, this.#onJoin(conn, frame));
        case FrameType.Leave:
          return this.#guard(conn, frame, this.#onLeave(conn, frame));
        case FrameType.Presence:
          return this.#guard(conn, frame, this.#onPresence(conn, frame));
        case FrameType.GroupCreate:
          return this.#guard(conn, frame, this.#onGroupCreate(conn, frame));
        case FrameType.GroupInvite:
          return this.#guard(conn, frame, this.#onGroupInvite(conn, frame));
        case FrameType.Hello:
        case FrameType.Auth:
          throw fatal(
            Titles.unexpectedHandshake,
            400,
            `${FRAME_TYPE_NAMES[frame.type]} after the handshake completed`,
          );
        case FrameType.Error:
          conn.log.info("client reported an error", { problem: frame.json });
          return;
        default:
          throw fatal(Titles.unsupportedFrame, 400, `frame type ${frame.type} is not handled`);
      }
    } catch (err) {
      return this.#reject(conn, frame, err);
    }
  }

  /** Reports non-fatal refusals from async handlers; fatal ones end the read loop. */
  #guard(conn: Connection, frame: Frame, result: Promise<void> | void): Promise<void> | void {
    if (!result) return;
    return result.catch((err) => this.#reject(conn, frame, err));
  }

  #reject(conn: Connection, frame: Frame, err: unknown): Promise<void> | void {
    if (err instanceof ProtocolError && !err.fatal) {
      conn.fail(err, frame.sequence);
      return;
    }
    // Degrade, don't drop: a storage part that failed while handling a frame (Redis during
    // PRESENCE or JOIN, Postgres during a group change) answers a non-fatal 503 naming the part;
    // the connection stays and the client may send the frame again.
    if (err instanceof StorageError && err.status >= 500) {
      const part = err instanceof RedisFailure ? "redis" : "postgres";
      this.ctx.metrics.degradedFrame(part);
      conn.fail(
        new ProtocolError(Titles.unavailable, 503, `${part}: ${err.message}`, {
          fatal: false,
          retryAfter: 1,
        }),
        frame.sequence,
      );
      return;
    }
    const refusal = refusalFor(err, { fatal: false });
    if (refusal !== null) {
      conn.fail(refusal, frame.sequence);
      return;
    }
    throw err;
  }

  /** The conversation the sender bound the frame's channel to (a promise when not cached). */
  #conversationOf(conn: Connection, frame: Frame): Conversation | Promise<Conversation> {
    const found = this.conversations.lookup(conn.deviceId, frame.channel);
    if (found instanceof Promise) return found.then((c) => this.#checkMember(conn, frame, c));
    if (found !== null && found.users.size > 0 && !found.members.has(conn.deviceId)) {
      // A device its user gained after this expansion: look the user's devices up again.
      return this.conversations.reload(found.id).then((c) => this.#checkMember(conn, frame, c));
    }
    return this.#checkMember(conn, frame, found);
  }

  #checkMember(conn: Connection, frame: Frame, c: Conversation | null): Conversation {
    if (c === null) {
      throw refused(
        Titles.unknownChannel,
        404,
        `channel ${frame.channel} is not bound to a conversation of device ${conn.deviceId}; JOIN it first`,
      );
    }
    if (!c.members.has(conn.deviceId)) {
      throw refused(
        Titles.notMember,
        403,
        `device ${conn.deviceId} is no longer a member of the conversation on channel ${frame.channel}`,
      );
    }
    return c;
  }

  // -------------------------------------------------------------------------------------
  // Fan-out

  #fanOut(conn: Connection, frame: Frame): Promise<void> | void {
    if (frame.type === FrameType.Typing) parseTyping(frame.json, NON_FATAL);
    if (frame.type === FrameType.GroupEvent) parseGroupEvent(frame.json, NON_FATAL);
    const found = this.#conversationOf(conn, frame);
    if (found instanceof Promise) return found.then((c) => this.#fanOutTo(conn, frame, c));
    return this.#fanOutTo(conn, frame, found);
  }

  #fanOutTo(conn: Connection, frame: Frame, conversation: Conversation): Promise<void> | void {
    // Frame received = its bytes were read (one clock reading per read, not per frame).
    const started = conn.receivedAt;
    const durable = frame.type !== FrameType.Typing;
    const ack = durable
      ? new SenderAck(
        conn,
        frame.type,
        frame.channel,
        frame.sequence,
        this.#ackSent,
        conn.deviceId,
        started,
        conversation.members.size - 1,
        frame.payload.length,
      )
      : null;
    const item: RoutedItem = {
      type: frame.type,
      channel: frame.channel,
      payload: frame.payload,
      sender: conn.deviceId,
      ack,
      at: Date.now(),
    };
    // The common case (every copy live) allocates no array: copies that must settle first are
    // collected in a scratch array, taken over only when there are any.
    // (A fan-out started while another one is collecting would take a fresh array.)
    const scratch = this.#waits.length === 0 ? this.#waits : [];
    let lookups: Promise<void>[] | null = null;
    let live = 0;
    for (const target of this.delivery.targetsOf(conversation)) {
      if (target.member === conn.deviceId) continue;
      const outcome = this.delivery.deliverToTarget(target, item, durable, scratch);
      if (outcome === "live") live++;
      else if (outcome instanceof Promise) (lookups ??= []).push(outcome);
    }
    const waits = scratch.length === 0 ? NO_WAITS : scratch.splice(0);
    this.ctx.analytics?.routed(frame.type, conversation, conversation.members.size - 1, live);
    if (ack === null) {
      // TYPING: a hint of the moment, acknowledged once handed out.
      conn.sendAck(frame.channel, frame.sequence);
      return;
    }
    if (lookups === null && waits.length === 0) {
      ack.release();
      return;
    }
    const settle = () => {
      if (waits.length === 0) {
        ack.release();
        return;
      }
      // ACK once every copy is held or durably queued; later frames go on meanwhile.
      Promise.all(waits).then(
        () => ack.release(),
        (err) => {
          ack.abandon();
          conn.log.warn("delivery failed", { error: err, channel: frame.channel });
          // Refusals (e.g. federation's "federation peer not allowed") reach the sender as is.
          const problem = err instanceof ProtocolError && !err.fatal
            ? err
            : refusalFor(err, { fatal: false, context: "frame not delivered" }) ??
              refused(Titles.unavailable, 503, "frame not delivered; send it again");
          conn.fail(problem, frame.sequence);
        },
      );
    };
    if (lookups === null) return settle();
    return Promise.all(lookups).then(settle);
  }

  /** Copies of the frame being fanned out that must settle before its ACK (reused, see #fanOutTo). */
  readonly #waits: Promise<unknown>[] = [];

  /** Counts and logs a frame whose ACK was just sent. */
  readonly #ackSent = (ack: SenderAck): void => {
    const { metrics, log } = this.ctx;
    metrics.routed((performance.now() - ack.receivedAt) / 1000);
    if (!debugEnabled()) return; // one line per frame: debug only, fields built only then
    log.debug("delivered frame", {
      type: FRAME_TYPE_NAMES[ack.type],
      channel: ack.channel,
      sequence: ack.sequence,
      sender: ack.sender,
      recipients: ack.recipients,
      bytes: ack.bytes,
    });
  };

  // -------------------------------------------------------------------------------------
  // Receipt ACKs from the client

  #onAck(conn: Connection, frame: Frame): void {
    const json = frame.json as Record<string, unknown> | null;
    const sequences: number[] = [];
    if (json && typeof json === "object" && Object.hasOwn(json, "acks")) {
      const list = json.acks;
      if (
        !Array.isArray(list) || list.length > MAX_ACKS_PER_FRAME ||
        !list.every((n) => Number.isInteger(n) && n >= 0 && n <= MAX_U32)
      ) {
        throw refused(
          "Invalid Control Payload",
          400,
          `ACK.acks: expected an array of at most ${MAX_ACKS_PER_FRAME} sequences (u32)`,
        );
      }
      sequences.push(...(list as number[]));
      if (Object.hasOwn(json, "ack") && json.ack !== null) {
        sequences.push(parseSequenceAck(json));
      }
    } else {
      sequences.push(parseSequenceAck(json));
    }
    conn.acknowledge(sequences);
  }

  // -------------------------------------------------------------------------------------
  // Conversations

  async #onJoin(conn: Connection, frame: Frame): Promise<void> {
    const join = parseJoin(frame.json, NON_FATAL);
    const listed = (frame.json as { members?: unknown }).members;
    if (Array.isArray(listed) && new Set(listed).size !== listed.length) {
      const twice = listed.find((m, i) => listed.indexOf(m) !== i);
      throw refused(
        Titles.joinRejected,
        400,
        `JOIN.members lists ${String(twice)} more than once; list each device once`,
      );
    }
    const joins = await this.ctx.limits.consume("join", conn.deviceId);
    if (!joins.ok) throw rateLimited("join", joins, `too many JOINs from ${conn.deviceId}`);
    const conversation = await this.conversations.join(
      conn.deviceId,
      frame.channel,
      join,
      conn.user?.id,
    );
    this.ctx.log.info("channel joined", {
      device: conn.deviceId,
      channel: frame.channel,
      conversation: conversation.id,
      members: conversation.members.size,
      group_id: conversation.groupId,
    });
    const ack: Record<string, unknown> = { ack: frame.sequence };
    if (conversation.groupId) ack.group_id = conversation.groupId;
    // A conversation of users: its entries (`@<user id>`, device ids), what a sealed envelope
    // names as its member set (docs/PROTOCOL.md §11).
    else if (conversation.users.size > 0) ack.members = [...conversation.entries];
    conn.sendControl(FrameType.Ack, frame.channel, ack);
    // Presence in the conversation: the others learn this device is here (unless this session
    // told them already), and the newcomer who else is.
    if (!conn.presenceToldOn?.has(frame.channel)) {
      this.presence.announce(conn, { channel: frame.channel });
    }
    await this.presence.tellWhoIsOnline(conn, frame.channel, conversation);
  }

  async #onLeave(conn: Connection, frame: Frame): Promise<void> {
    parseLeave(frame.json, NON_FATAL);
    await this.conversations.leave(conn.deviceId, frame.channel);
    conn.presenceToldOn?.delete(frame.channel); // a later JOIN tells the others again
    this.ctx.log.info("channel left", { device: conn.deviceId, channel: frame.channel });
    conn.sendControl(FrameType.Ack, frame.channel, { ack: frame.sequence });
  }

  // -------------------------------------------------------------------------------------
  // Presence

  async #onPresence(conn: Connection, frame: Frame): Promise<void> {
    const presence = parsePresence(frame.json, NON_FATAL);
    if (presence.state !== undefined) {
      // A new state reaches the device's conversations; a refresh (keepalive) sends nothing.
      if (presence.state !== conn.presenceState) {
        conn.presenceState = presence.state;
        this.presence.announce(conn);
      }
      // A failure is a non-fatal 503 naming the part (#reject); the keepalive did its job.
      await this.presence.publish(conn, presence.state === "offline" ? "offline" : "online");
    }
    // Peer-to-peer conversations: tell the other members where this device is seen from.
    const bindings = await this.conversations.bindingsOf(conn.deviceId);
    let budget = this.ctx.config.limits.presenceFanout;
    for (const { channel, conversation } of bindings) {
      if (conversation.relay) continue;
      for (const member of conversation.members) {
        if (member === conn.deviceId || budget-- <= 0) continue;
        const candidate = { channel, peer: conn.deviceId, candidate: conn.transport.remoteAddr };
        this.delivery.sendLive(member, FrameType.Presence, channel, candidate, conn.deviceId);
        const peerConn = this.delivery.localConnection(member);
        if (peerConn) {
          this.delivery.sendLive(conn.deviceId, FrameType.Presence, channel, {
            channel,
            peer: member,
            candidate: peerConn.transport.remoteAddr,
          }, member);
        }
      }
    }
  }

  // -------------------------------------------------------------------------------------
  // Groups

  async #onGroupCreate(conn: Connection, frame: Frame): Promise<void> {
    const create = parseGroupCreate(frame.json, NON_FATAL);
    const { storage, log } = this.ctx;
    const actor = `device:${conn.deviceId}`;
    if (create.group_id !== undefined && await storage.groups.get(create.group_id) !== null) {
      throw refused(
        Titles.groupExists,
        409,
        `group ${create.group_id} already exists; GROUP_INVITE adds members to it`,
      );
    }
    const maxMembers = this.ctx.config.limits.maxMembersPerJoin;
    // Users (`@alice`) go on the roster as `@<user id>`: every active device of each is a member.
    const roles: Record<string, string> = {};
    const named: string[] = [];
    for (const m of create.members) {
      const member = m.startsWith("@")
        ? "@" + await resolveUser(this.ctx, m, "GROUP_CREATE.members", USER_TITLES)
        : m;
      named.push(member);
      if (create.roles[m] !== undefined) roles[member] = create.roles[m];
    }
    const others = [...new Set(named)].filter((m) => m !== conn.deviceId);
    if (others.length + 1 > maxMembers) {
      throw refused(
        Titles.tooManyMembers,
        413,
        `GROUP_CREATE.members lists ${
          others.length + 1
        } devices with the owner; at most ${maxMembers} (limits.max_members_per_join); GROUP_INVITE adds more later`,
      );
    }
    const group = await storage.groups.create(
      { id: create.group_id, ownerDeviceId: conn.deviceId, relay: create.relay },
      actor,
    );
    for (const member of others) {
      const role: GroupRole = (roles[member] ?? create.roles[member]) === "admin"
        ? "admin"
        : "member";
      await storage.groups.addMember(group.id, member, role, actor);
    }
    log.info("group created", {
      group_id: group.id,
      owner: conn.deviceId,
      members: others.length + 1,
      relay: create.relay,
    });
    // The frame's channel becomes the creator's channel for the group, when it is free.
    if (frame.channel !== 0) {
      const conversation = await this.conversations.group(group.id);
      await this.conversations.bind(conn.deviceId, frame.channel, conversation).catch((err) => {
        if (!(err instanceof ProtocolError)) throw err;
        log.info("group channel not bound", { group_id: group.id, reason: err.detail });
      });
    }
    conn.sendControl(FrameType.Ack, frame.channel, { ack: frame.sequence, group_id: group.id });
  }

  async #onGroupInvite(conn: Connection, frame: Frame): Promise<void> {
    const invite = parseGroupInvite(frame.json, NON_FATAL);
    const { storage, log } = this.ctx;
    const group = await storage.groups.get(invite.group_id);
    if (!group) {
      throw refused(Titles.unknownGroup, 404, `group ${invite.group_id} does not exist`);
    }
    // The role rules (co-owners, the last owner kept) are storage/group_roles.ts's. A user
    // (`@alice`) goes on the roster as `@<user id>`.
    const member = invite.device.startsWith("@")
      ? "@" + await resolveUser(this.ctx, invite.device, "GROUP_INVITE.device", USER_TITLES)
      : invite.device;
    let role: GroupRole;
    try {
      const result = await storage.groups.setRole(
        invite.group_id,
        member,
        invite.role,
        `device:${conn.deviceId}`,
        { by: conn.deviceId },
      );
      role = result.member.role;
    } catch (err) {
      if (err instanceof NotPermitted) {
        log.warn("group invite refused", { device: conn.deviceId, group_id: invite.group_id });
      }
      throw err;
    }
    this.groups.groupChanged(invite.group_id);
    log.info("group member invited", {
      group_id: invite.group_id,
      device: member,
      role,
      by: conn.deviceId,
    });
    conn.sendControl(FrameType.Ack, frame.channel, {
      ack: frame.sequence,
      group_id: invite.group_id,
      device: member,
      role,
    });
  }
}

/** Refusal titles for a user named in a group frame. */
const USER_TITLES = { unknown: Titles.unknownUser, remote: Titles.remoteUser };

function parseSequenceAck(json: unknown): number {
  const ack = parseAck(json, NON_FATAL);
  if ("handshake" in ack) {
    throw refused("Invalid Control Payload", 400, "ACK: a handshake ACK after the handshake");
  }
  return ack.ack;
}
