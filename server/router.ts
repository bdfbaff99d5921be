/**
 * What happens to each frame after the handshake (ccp1.md §4): channel routes (JOIN, LEAVE),
 * fan-out of MSG / TYPING / KEY_UPDATE / GROUP_EVENT with per-recipient sequences and an ACK to
 * the sender, PRESENCE with peer candidates, GROUP_CREATE and GROUP_INVITE with role checks,
 * and the client's receipt ACKs.
 *
 * @module
 */
import { type Frame, FRAME_TYPE_NAMES, FrameType } from "../protocol/frame.ts";
import {
  parseAck,
  parseGroupCreate,
  parseGroupEvent,
  parseGroupInvite,
  parseJoin,
  parseLeave,
  parsePresence,
  parseTyping,
} from "../protocol/control.ts";
import { ProtocolError } from "../protocol/errors.ts";
import { MAX_U32 } from "../protocol/varint.ts";
import { NotPermitted, RedisFailure, StorageError } from "../storage/errors.ts";
import type { GroupRole } from "../storage/types.ts";
import { type ChannelRoute, ChannelTable } from "./channels.ts";
import type { Connection, RoutedItem } from "./connection.ts";
import { fatal, refusalFor, refused, Titles } from "./errors.ts";
import type { RelayNode } from "./node.ts";
import { getLogLevel } from "./log.ts";
import { rateLimited } from "./limits.ts";

const NON_FATAL = { fatal: false } as const;
const debugEnabled = () => getLogLevel() === "debug";
/** Most sequences one `{acks:[…]}` frame may list. */
export const MAX_ACKS_PER_FRAME = 4096;

/** Turns a storage failure into a non-fatal ERROR that names it. */
function storageRefusal(err: unknown): never {
  throw refusalFor(err, { fatal: false }) ?? err;
}

export class Router {
  readonly channels = new ChannelTable();

  constructor(private readonly node: RelayNode) {}

  /**
   * Handles one post-handshake frame. Returns a promise only when the frame needs I/O before
   * the next one may be handled (so frames of one connection keep their order).
   */
  handle(conn: Connection, frame: Frame): Promise<void> | void {
    try {
      switch (frame.type) {
        case FrameType.Msg:
        case FrameType.KeyUpdate:
        case FrameType.Typing:
        case FrameType.GroupEvent:
          return this.#guard(conn, frame, this.#fanOut(conn, frame));
        case FrameType.Ack:
          return this.#onAck(conn, frame);
        case FrameType.Join:
          return this.#guard(conn, frame, this.#onJoin(conn, frame));
        case FrameType.Leave:
          return this.#onLeave(conn, frame);
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
      this.node.ctx.metrics.degradedFrame(part);
      conn.fail(
        new ProtocolError(Titles.unavailable, 503, `${part}: ${err.message}`, {
          fatal: false,
          retryAfter: 1,
        }),
        frame.sequence,
      );
      return;
    }
    throw err;
  }

  #routeFor(conn: Connection, frame: Frame): ChannelRoute {
    const route = this.channels.get(frame.channel);
    if (!route) {
      throw refused(
        Titles.unknownChannel,
        404,
        `channel ${frame.channel} has no route; JOIN it first`,
      );
    }
    if (!route.members.has(conn.deviceId)) {
      throw refused(
        Titles.notMember,
        403,
        `device ${conn.deviceId} is not a member of channel ${frame.channel}`,
      );
    }
    return route;
  }

  // -------------------------------------------------------------------------------------
  // Fan-out

  #fanOut(conn: Connection, frame: Frame): Promise<void> | void {
    if (frame.type === FrameType.Typing) parseTyping(frame.json, NON_FATAL);
    if (frame.type === FrameType.GroupEvent) parseGroupEvent(frame.json, NON_FATAL);
    // Frame received = its bytes were read (one clock reading per read, not per frame).
    const started = conn.receivedAt;
    const route = this.#routeFor(conn, frame);
    const item: RoutedItem = { type: frame.type, channel: frame.channel, payload: frame.payload };
    const durable = frame.type !== FrameType.Typing;
    const waits: Promise<unknown>[] = [];
    let lookups: Promise<void>[] | null = null;
    let live = 0;
    for (const member of route.members) {
      if (member === conn.deviceId) continue;
      const outcome = this.node.deliverTo(conn.deviceId, member, item, durable, waits);
      if (outcome === "live") live++;
      else if (outcome instanceof Promise) (lookups ??= []).push(outcome);
    }
    // The common case: every copy handed to a live connection here, ACK at once; the
    // connection times the frames of one read together (one clock reading per read).
    if (lookups === null && waits.length === 0) {
      conn.routedNow++;
      return this.#delivered(conn, frame, route, live, -1);
    }
    const finish = () => {
      if (waits.length === 0) {
        this.#delivered(conn, frame, route, live, started);
        return;
      }
      // ACK once every copy is handed over or durably queued; later frames go on meanwhile.
      Promise.all(waits).then(
        () => this.#delivered(conn, frame, route, live, started),
        (err) => {
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
    if (lookups === null) return finish();
    return Promise.all(lookups).then(finish);
  }

  /** Counts, logs and ACKs a routed frame; `started` < 0: the connection times it. */
  #delivered(
    conn: Connection,
    frame: Frame,
    route: ChannelRoute,
    live: number,
    started: number,
  ): void {
    const { metrics, log, analytics } = this.node.ctx;
    if (started >= 0) metrics.routed((performance.now() - started) / 1000);
    analytics?.routed(frame.type, route, route.members.size - 1, live);
    if (conn.state !== "open") return;
    conn.sendAck(frame.channel, frame.sequence);
    if (!debugEnabled()) return; // one line per frame: debug only, fields built only then
    log.debug("delivered frame", {
      type: FRAME_TYPE_NAMES[frame.type],
      channel: frame.channel,
      sequence: frame.sequence,
      sender: conn.deviceId,
      recipients: route.members.size - 1,
      live,
      bytes: frame.payload.length,
    });
  }

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
  // Channels

  async #onJoin(conn: Connection, frame: Frame): Promise<void> {
    const join = parseJoin(frame.json, NON_FATAL);
    const joins = await this.node.ctx.limits.consume("join", conn.deviceId);
    if (!joins.ok) throw rateLimited("join", joins, `too many JOINs from ${conn.deviceId}`);
    const { log } = this.node.ctx;
    const existing = this.channels.get(frame.channel);
    let members: Set<string>;
    if (join.group_id !== undefined) {
      let roster;
      try {
        roster = await this.node.ctx.storage.groups.roster(join.group_id);
      } catch (err) {
        storageRefusal(err);
      }
      if (!roster.some((m) => m.deviceId === conn.deviceId)) {
        log.warn("group join rejected", {
          device: conn.deviceId,
          group_id: join.group_id,
          channel: frame.channel,
        });
        throw refused(
          Titles.joinRejected,
          403,
          `group join rejected: device ${conn.deviceId} is not a member of group ${join.group_id}`,
        );
      }
      if (existing && existing.groupId !== join.group_id && !existing.members.has(conn.deviceId)) {
        this.#rejectForeignChannel(conn, frame.channel);
      }
      members = new Set(roster.map((m) => m.deviceId));
    } else {
      if (existing && !existing.members.has(conn.deviceId)) {
        this.#rejectForeignChannel(conn, frame.channel);
      }
      // A member's JOIN adds to the route; it never drops the others.
      members = new Set([...(existing?.members ?? []), ...join.members, conn.deviceId]);
    }
    const groupId = join.group_id ?? existing?.groupId ?? null;
    this.node.changeRoutes({
      op: "set",
      channel: frame.channel,
      members: [...members],
      relay: join.relay,
      groupId,
    });
    log.info("channel joined", {
      device: conn.deviceId,
      channel: frame.channel,
      members: members.size,
      relay: join.relay,
      group_id: groupId,
    });
    const ack: Record<string, unknown> = { ack: frame.sequence };
    if (groupId) ack.group_id = groupId;
    conn.sendControl(FrameType.Ack, frame.channel, ack);
    // Presence on the channel: the others learn this device is here (unless this session told
    // them already, e.g. when it came online as a member), and the newcomer who else is.
    if (!conn.presenceToldOn?.has(frame.channel)) {
      this.node.announcePresence(conn, { channel: frame.channel });
    }
    await this.node.tellWhoIsOnline(conn, frame.channel);
  }

  #rejectForeignChannel(conn: Connection, channel: number): never {
    this.node.ctx.log.warn("channel join rejected", { device: conn.deviceId, channel });
    throw refused(
      Titles.joinRejected,
      403,
      `channel ${channel} belongs to other members; device ${conn.deviceId} is not one of them`,
    );
  }

  #onLeave(conn: Connection, frame: Frame): void {
    parseLeave(frame.json, NON_FATAL);
    const route = this.#routeFor(conn, frame);
    const members = [...route.members].filter((m) => m !== conn.deviceId);
    if (members.length === 0) this.node.changeRoutes({ op: "delete", channel: frame.channel });
    else {
      this.node.changeRoutes({
        op: "set",
        channel: frame.channel,
        members,
        relay: route.relay,
        groupId: route.groupId,
      });
    }
    conn.presenceToldOn?.delete(frame.channel); // a later JOIN tells the others again
    this.node.ctx.log.info("channel left", { device: conn.deviceId, channel: frame.channel });
    conn.sendControl(FrameType.Ack, frame.channel, { ack: frame.sequence });
  }

  // -------------------------------------------------------------------------------------
  // Presence

  async #onPresence(conn: Connection, frame: Frame): Promise<void> {
    const presence = parsePresence(frame.json, NON_FATAL);
    if (presence.state !== undefined) {
      // A new state reaches the device's channel peers; a refresh (keepalive) sends nothing.
      if (presence.state !== conn.presenceState) {
        conn.presenceState = presence.state;
        this.node.announcePresence(conn);
      }
      await this.node.publishPresence(conn, presence.state === "offline" ? "offline" : "online");
    }
    // Peer-to-peer channels: tell the other members where this device is seen from.
    for (const route of this.channels.channelsOf(conn.deviceId)) {
      if (route.relay) continue;
      for (const member of route.members) {
        if (member === conn.deviceId) continue;
        const candidate = {
          channel: route.channel,
          peer: conn.deviceId,
          candidate: conn.transport.remoteAddr,
        };
        this.node.sendEphemeral(member, FrameType.Presence, route.channel, candidate);
        const peerConn = this.node.localConnection(member);
        if (peerConn) {
          conn.sendControl(FrameType.Presence, route.channel, {
            channel: route.channel,
            peer: member,
            candidate: peerConn.transport.remoteAddr,
          });
        }
      }
    }
  }

  // -------------------------------------------------------------------------------------
  // Groups

  async #onGroupCreate(conn: Connection, frame: Frame): Promise<void> {
    const create = parseGroupCreate(frame.json, NON_FATAL);
    const { storage, log } = this.node.ctx;
    const actor = `device:${conn.deviceId}`;
    let groupId: string;
    const roster: string[] = [conn.deviceId];
    try {
      const group = await storage.groups.create(
        { id: create.group_id, ownerDeviceId: conn.deviceId, relay: create.relay },
        actor,
      );
      groupId = group.id; // the owner becomes its first member
      for (const member of create.members) {
        if (member === conn.deviceId) continue;
        const role: GroupRole = create.roles[member] === "admin" ? "admin" : "member";
        await storage.groups.addMember(groupId, member, role, actor);
        roster.push(member);
      }
    } catch (err) {
      storageRefusal(err);
    }
    log.info("group created", {
      group_id: groupId,
      owner: conn.deviceId,
      members: roster.length,
      relay: create.relay,
    });
    // The frame's channel becomes the group's channel, unless it belongs to someone else.
    const existing = this.channels.get(frame.channel);
    if (frame.channel !== 0 && (!existing || existing.members.has(conn.deviceId))) {
      this.node.changeRoutes({
        op: "set",
        channel: frame.channel,
        members: roster,
        relay: create.relay,
        groupId,
      });
    }
    conn.sendControl(FrameType.Ack, frame.channel, { ack: frame.sequence, group_id: groupId });
  }

  async #onGroupInvite(conn: Connection, frame: Frame): Promise<void> {
    const invite = parseGroupInvite(frame.json, NON_FATAL);
    const { storage, log } = this.node.ctx;
    let role: GroupRole;
    try {
      const group = await storage.groups.get(invite.group_id);
      if (!group) {
        throw refused(Titles.unknownGroup, 404, `group ${invite.group_id} does not exist`);
      }
      // The role rules (co-owners, the last owner kept) are storage/group_roles.ts's.
      const result = await storage.groups.setRole(
        invite.group_id,
        invite.device,
        invite.role,
        `device:${conn.deviceId}`,
        { by: conn.deviceId },
      );
      role = result.member.role;
    } catch (err) {
      if (err instanceof ProtocolError) throw err;
      if (err instanceof NotPermitted) {
        log.warn("group invite refused", { device: conn.deviceId, group_id: invite.group_id });
      }
      storageRefusal(err);
    }
    this.node.changeRoutes({ op: "group-add", groupId: invite.group_id, deviceId: invite.device });
    log.info("group member invited", {
      group_id: invite.group_id,
      device: invite.device,
      role,
      by: conn.deviceId,
    });
    conn.sendControl(FrameType.Ack, frame.channel, {
      ack: frame.sequence,
      group_id: invite.group_id,
      device: invite.device,
      role,
    });
  }
}

function parseSequenceAck(json: unknown): number {
  const ack = parseAck(json, NON_FATAL);
  if ("handshake" in ack) {
    throw refused("Invalid Control Payload", 400, "ACK: a handshake ACK after the handshake");
  }
  return ack.ack;
}
