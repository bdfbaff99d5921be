/**
 * The operator actions against storage. Each change and its operator audit entry are written
 * in ONE transaction by the repository (the `audit` note), so a change is never left without
 * its audit row, nor an audit row without its change. After the commit, running nodes are told
 * over the ephemeral bus: control events, which live nodes act on, and for a revocation the
 * interrupt key of ccp1.md §6 (no node reads it yet); when that bus reaches no running
 * server (an in-memory store in a CLI process), the result says so in `notes`.
 */
import { generateKeypair } from "../protocol/noise.ts";
import { bytesToHex, hexToBytes } from "../protocol/hex.ts";
import type { Ledger } from "../storage/ledger.ts";
import { Conflict, InvalidValue, NotFound, RedisFailure } from "../storage/errors.ts";
import { INTERRUPT_TTL_SECONDS } from "../storage/ephemeral/shared.ts";
import type {
  ControlEvent,
  DeviceKeyEvent,
  GroupRole,
  PeerStatus,
  Storage,
  User,
} from "../storage/types.ts";
import type {
  AdminOps,
  DeliveryView,
  DeviceChange,
  DeviceFilter,
  DeviceLimitView,
  GroupDetail,
  NodeView,
  Noted,
  PageQuery,
  RotatedKey,
} from "./ops.ts";
import {
  auditView,
  deviceView,
  groupView,
  keyEventView,
  membershipView,
  memberView,
  outboxView,
  pageView,
  peerView,
  userView,
} from "./views.ts";

export { INTERRUPT_TTL_SECONDS };

/** The statuses a peer can be set to. */
export const PEER_STATUSES = ["active", "pending", "blocked"] as const;

export interface LocalAdminOptions {
  storage: Storage;
  /** Who is acting, as the audit log records it: "console:<label>", "cli:<user>", "api:…". */
  actor: string;
  /** Domains of the [federation] peers of the config (read-only here). */
  staticPeerDomains?: Iterable<string>;
  /**
   * Whether control events reach the running servers: true inside a server process or with a
   * shared Redis; false for a CLI on an in-memory store (the result then carries a note).
   */
  reachesServers: boolean;
  /** Where operator key changes are also recorded (rotate-keys); none by default. */
  ledger?: Pick<Ledger, "record"> | null;
}

const NOT_TOLD = "no [storage] redis_url is configured, so running servers were not told; " +
  "they see the change at the device's next handshake";

export class LocalAdmin implements AdminOps {
  readonly #s: Storage;
  readonly #actor: string;
  readonly #static: Set<string>;
  readonly #reaches: boolean;
  readonly #ledger: Pick<Ledger, "record"> | null;

  constructor(options: LocalAdminOptions) {
    this.#s = options.storage;
    this.#actor = options.actor;
    this.#static = new Set([...(options.staticPeerDomains ?? [])].map((d) => d.toLowerCase()));
    this.#reaches = options.reachesServers;
    this.#ledger = options.ledger ?? null;
  }

  /** Tells every node; the durable change is committed already. */
  async #announce(
    done: string,
    event: ControlEvent,
    interrupt?: { deviceId: string; reason: string },
  ): Promise<string[]> {
    try {
      if (interrupt) {
        await this.#s.ephemeral.setInterrupt(
          interrupt.deviceId,
          interrupt.reason,
          INTERRUPT_TTL_SECONDS,
        );
      }
      await this.#s.ephemeral.publishControl(event);
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      const message = `${done} in the database, but running servers could not be told: ${why}`;
      throw err instanceof RedisFailure
        ? new RedisFailure(message, { cause: err })
        : new Error(message, { cause: err });
    }
    return this.#reaches ? [] : [NOT_TOLD];
  }

  users(filter: { search?: string } & PageQuery) {
    return this.#s.users.list(filter).then((p) => pageView(p, userView));
  }

  async registerUser(
    input: { handle: string; displayName?: string | null; avatarUrl?: string | null },
  ) {
    const user = await this.#s.users.create(
      {
        handle: input.handle,
        displayName: input.displayName ?? null,
        avatarUrl: input.avatarUrl ?? null,
      },
      { actor: this.#actor, action: "user.register" },
    );
    return userView(user);
  }

  async #user(user: string) {
    const found = await this.#s.users.getByHandle(user).catch(() => null) ??
      await this.#s.users.get(user).catch(() => null);
    if (!found) throw new NotFound("user", user);
    return found;
  }

  async deviceLimit(user: string): Promise<DeviceLimitView> {
    const u = await this.#user(user);
    const [maxDevices, devices] = await Promise.all([
      this.#s.pairing.deviceLimit(u.id),
      this.#s.pairing.countDevices(u.id),
    ]);
    return { userId: u.id, handle: u.handle, maxDevices, devices };
  }

  async setDeviceLimit(user: string, limit: number | null): Promise<DeviceLimitView> {
    const u = await this.#user(user);
    await this.#s.pairing.setDeviceLimit(u.id, limit, this.#actor, {
      actor: this.#actor,
      action: "user.device-limit",
    });
    return await this.deviceLimit(u.id);
  }

  devices(filter: DeviceFilter) {
    return this.#s.devices.list(filter).then((p) => pageView(p, deviceView));
  }

  async device(id: string) {
    const d = await this.#s.devices.get(id);
    if (!d) throw new NotFound("device", id);
    return deviceView(d);
  }

  async approveDevice(id: string): Promise<DeviceChange> {
    const { device, event } = await this.#s.devices.approve(id, this.#actor, {
      actor: this.#actor,
      action: "device.approve",
    });
    const notes = await this.#announce(`device ${id} is approved`, {
      kind: "device-approved",
      deviceId: id,
    });
    return { device: deviceView(device), event: keyEventView(event), notes };
  }

  async rejectDevice(id: string): Promise<DeviceChange> {
    const { device, event } = await this.#s.devices.reject(id, this.#actor, {
      actor: this.#actor,
      action: "device.reject",
    });
    return { device: deviceView(device), event: keyEventView(event), notes: [] };
  }

  async revokeDevice(id: string): Promise<DeviceChange> {
    const { device, event } = await this.#s.devices.revoke(id, this.#actor, {
      actor: this.#actor,
      action: "device.revoke",
    });
    const notes = await this.#announce(
      `device ${id} is revoked`,
      { kind: "device-revoked", deviceId: id },
      { deviceId: id, reason: "device revoked by operator" },
    );
    return { device: deviceView(device), event: keyEventView(event), notes };
  }

  async rotateKey(
    input: { userId?: string; handle?: string; deviceId?: string },
  ): Promise<RotatedKey> {
    if ((input.userId === undefined) === (input.handle === undefined)) {
      throw new InvalidValue(
        "user",
        input.userId ?? input.handle ?? null,
        "exactly one of a user id or a handle",
      );
    }
    let user: User | null;
    if (input.userId !== undefined) {
      user = await this.#s.users.get(input.userId);
      if (!user) throw new NotFound("user", input.userId);
    } else {
      user = await this.#s.users.getByHandle(input.handle!);
      if (!user) throw new NotFound("user with handle", input.handle!);
    }
    const existing = input.deviceId === undefined
      ? null
      : await this.#s.devices.get(input.deviceId);
    if (existing && existing.userId !== user.id) {
      throw new Conflict(
        `device ${JSON.stringify(existing.id)} belongs to another user (${existing.userId}), ` +
          `not to ${user.id}`,
      );
    }
    const keys = generateKeypair();
    let event: DeviceKeyEvent;
    const id = existing?.id ?? input.deviceId ?? crypto.randomUUID();
    if (existing) {
      ({ event } = await this.#s.devices.rotateKey(id, keys.publicKey, this.#actor, {
        actor: this.#actor,
        action: "device.rotate-key",
      }));
    } else {
      ({ event } = await this.#s.devices.register(
        { id, userId: user.id, publicKey: keys.publicKey, status: "active" },
        this.#actor,
        { actor: this.#actor, action: "device.register" },
      ));
    }
    const notes: string[] = [];
    try {
      await this.#ledger?.record("device_key_event", {
        device_id: id,
        user_id: user.id,
        kind: event.kind,
        event_id: event.eventId,
        public_key: event.publicKey,
        actor: event.actor,
        recorded_at: event.recordedAt,
      });
    } catch (err) {
      // The key is stored: it must still reach the operator, so the failure becomes a note.
      notes.push(`the ledger record failed: ${err instanceof Error ? err.message : String(err)}`);
    }
    return {
      userId: user.id,
      deviceId: id,
      registered: !existing,
      publicKey: bytesToHex(keys.publicKey),
      privateKey: bytesToHex(keys.privateKey),
      event: keyEventView(event),
      notes,
    };
  }

  async keyEvents(deviceId: string | null, range: { from?: Date; to?: Date } = {}) {
    if (deviceId !== null && !(await this.#s.devices.get(deviceId))) {
      throw new NotFound("device", deviceId);
    }
    const events = await this.#s.keyEvents.export(deviceId, range.from, range.to);
    return events.map(keyEventView);
  }

  async delivery(deviceId: string): Promise<DeliveryView> {
    if (!(await this.#s.devices.get(deviceId))) throw new NotFound("device", deviceId);
    const [q, route, presence] = await Promise.all([
      this.#s.relay.depth(deviceId),
      this.#s.ephemeral.getRoute(deviceId),
      this.#s.ephemeral.getPresence(deviceId),
    ]);
    return {
      deviceId,
      depth: q.depth,
      oldestAt: q.oldest ? q.oldest.toISOString() : null,
      inFlight: q.inFlight ?? 0,
      redelivered: q.redelivered ?? 0,
      online: route !== null || presence?.state === "online",
      nodeId: route?.nodeId ?? null,
    };
  }

  async peers() {
    const [peers, backlog] = await Promise.all([this.#s.peers.list(), this.#s.outbox.backlog()]);
    const by = new Map(backlog.map((b) => [b.peerDomain, b]));
    return peers.map((p) => peerView(p, by.get(p.domain)));
  }

  #refuseStatic(domain: string): void {
    if (this.#static.has(domain.toLowerCase())) {
      throw new InvalidValue(
        "peer",
        domain,
        "a database peer (peers from the config are read-only)",
      );
    }
  }

  async #peer(domain: string) {
    const all = await this.peers();
    const p = all.find((x) => x.domain === domain.toLowerCase());
    if (!p) throw new NotFound("federation peer", domain);
    return p;
  }

  async addPeer(
    input: { domain: string; endpoint: string; publicKey: string; status?: PeerStatus },
  ) {
    this.#refuseStatic(input.domain);
    if (!/^[0-9a-fA-F]{64}$/.test(input.publicKey)) {
      throw new InvalidValue("public key", input.publicKey, "64 hex characters (an Ed25519 key)");
    }
    if (input.status !== undefined && !PEER_STATUSES.includes(input.status)) {
      throw new InvalidValue("status", input.status, "active, pending or blocked");
    }
    const found = await this.#s.peers.get(input.domain);
    // The peer repository writes the audit entry in the same transaction.
    const peer = await this.#s.peers.upsert({
      domain: input.domain,
      endpoint: input.endpoint,
      publicKey: hexToBytes(input.publicKey),
      status: input.status,
    }, this.#actor);
    let notes: string[] = [];
    if (found && found.status !== peer.status) {
      notes = await this.#announce(`peer ${peer.domain} is ${peer.status}`, {
        kind: "peer-status",
        domain: peer.domain,
        status: peer.status,
      });
    }
    return { peer: await this.#peer(peer.domain), notes };
  }

  async setPeerStatus(domain: string, status: PeerStatus) {
    this.#refuseStatic(domain);
    if (!PEER_STATUSES.includes(status)) {
      throw new InvalidValue("status", status, "active, pending or blocked");
    }
    // The repository checks the transition and writes the audit entry in one transaction.
    const peer = await this.#s.peers.setStatus(domain, status, this.#actor);
    const notes = await this.#announce(`peer ${peer.domain} is ${peer.status}`, {
      kind: "peer-status",
      domain: peer.domain,
      status: peer.status,
    });
    return { peer: await this.#peer(peer.domain), notes };
  }

  async retryPeer(domain: string) {
    const known = await this.#s.peers.list();
    if (!known.some((p) => p.domain === domain.toLowerCase())) {
      throw new NotFound("federation peer", domain);
    }
    // Audited in the same transaction; the outbox worker picks the entries up on its next pass.
    const dueNow = await this.#s.outbox.retryNow(domain.toLowerCase(), this.#actor);
    return { domain: domain.toLowerCase(), dueNow, notes: [] };
  }

  async deadLetters(filter: { peerDomain?: string; limit?: number }) {
    return (await this.#s.outbox.listDead(filter)).map(outboxView);
  }

  async replayDeadLetter(id: string) {
    const entry = await this.#s.outbox.replay(id, this.#actor);
    return { entry: outboxView(entry), notes: [] };
  }

  groups(filter: { search?: string } & PageQuery) {
    return this.#s.groups.list(filter).then((p) => pageView(p, groupView));
  }

  async group(id: string): Promise<GroupDetail> {
    const group = await this.#s.groups.get(id);
    if (!group) throw new NotFound("group", id);
    const [roster, trail] = await Promise.all([
      this.#s.groups.roster(id),
      this.#s.groups.auditTrail(id, { limit: 100 }),
    ]);
    return {
      group: groupView(group),
      roster: roster.map(memberView),
      history: trail.items.map(membershipView),
      moreHistory: trail.nextCursor !== null,
    };
  }

  async removeGroupMember(groupId: string, deviceId: string): Promise<Noted> {
    if (!(await this.#s.groups.get(groupId))) throw new NotFound("group", groupId);
    const removed = await this.#s.groups.removeMember(groupId, deviceId, this.#actor, {
      audit: { actor: this.#actor, action: "group.remove-member" },
    });
    if (!removed) throw new NotFound(`member of group ${groupId}`, deviceId);
    const notes = await this.#announce(`device ${deviceId} is removed from ${groupId}`, {
      kind: "member-removed",
      groupId,
      deviceId,
    });
    return { notes };
  }

  /**
   * Set a member's role under the group role rules (an operator acts); the change and its
   * audit entry commit together. `changed` is false when the member already had that role.
   */
  async setGroupRole(
    groupId: string,
    deviceId: string,
    role: GroupRole,
  ): Promise<{ role: GroupRole; previous: GroupRole | null; changed: boolean }> {
    if (!(await this.#s.groups.get(groupId))) throw new NotFound("group", groupId);
    const { member, previous } = await this.#s.groups.setRole(
      groupId,
      deviceId,
      role,
      this.#actor,
      {
        audit: { actor: this.#actor, action: "group.set-role" },
      },
    );
    return { role: member.role, previous, changed: previous !== member.role };
  }

  /**
   * Hand a group's ownership from `from` to `to`; `from` stays as an admin, or with `leave` is
   * removed (and every node drops it from the group's conversation). Audited in the same
   * transaction.
   */
  async transferGroupOwnership(
    groupId: string,
    from: string,
    to: string,
    leave: boolean,
  ): Promise<Noted> {
    if (!(await this.#s.groups.get(groupId))) throw new NotFound("group", groupId);
    await this.#s.groups.transferOwnership(groupId, from, to, this.#actor, {
      leave,
      audit: { actor: this.#actor, action: "group.transfer-ownership" },
    });
    if (!leave) return { notes: [] };
    const notes = await this.#announce(`device ${from} is removed from ${groupId}`, {
      kind: "member-removed",
      groupId,
      deviceId: from,
    });
    return { notes };
  }

  audit(filter: { actor?: string; action?: string; target?: string } & PageQuery) {
    return this.#s.audit.list(filter).then((p) => pageView(p, auditView));
  }

  async nodes(): Promise<NodeView[]> {
    const now = Date.now();
    return (await this.#s.ephemeral.listNodeHeartbeats()).map((h) => ({
      nodeId: h.nodeId,
      address: h.address,
      version: h.version,
      startedAt: h.startedAt,
      uptimeSeconds: Math.max(0, Math.round((now - Date.parse(h.startedAt)) / 1000)),
      connections: h.connections,
      framesPerSecond: h.framesPerSecond,
      lastHeartbeatAt: h.at,
    }));
  }
}
