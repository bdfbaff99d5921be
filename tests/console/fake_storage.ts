// deno-lint-ignore-file require-await -- async so a refusal rejects, as in the real repositories
/**
 * An in-memory Storage for fast console page tests: keyset pages, the real repositories'
 * validators, status transitions and group role rules that refuse with the typed errors, key
 * events, audit entries and a recorded control bus. Its users, devices, handshake
 * registration, key events, sessions, groups, peers and audit run through the storage contract
 * (tests/storage/contract_fakes_test.ts); its ephemeral store is the real in-memory one; the
 * rest answers what the console reads.
 */
import { MemoryEphemeralStore } from "../../storage/ephemeral/mod.ts";
import { bytesToHex } from "@noble/hashes/utils.js";
import {
  Conflict,
  InvalidValue,
  NotFound,
  NotPermitted,
  PairingRefused,
  StorageFailure,
  TransitionNotAllowed,
} from "../../storage/errors.ts";
import { type Actor, decideRemoval, decideRole, type Decision } from "../../storage/group_roles.ts";
import { sameBytes } from "../../storage/repos/rows.ts";
import * as v from "../../storage/repos/validate.ts";
import { MemoryOutboxRepo } from "../server/federation_fakes.ts";
import { validateNewUser } from "../../storage/repos/users.ts";
import type { StaticPeer } from "../../storage/repos/federation.ts";
import type {
  AuditEntry,
  AuditNote,
  ControlEvent,
  Device,
  DeviceKeyEvent,
  DeviceStatus,
  DeviceWithUser,
  FederationPeer,
  Group,
  GroupMember,
  GroupRole,
  HandshakeRegistration,
  KeyEventKind,
  MembershipEvent,
  OutboxEntry,
  Page,
  PageRequest,
  PeerStatus,
  RelayEnvelope,
  SessionRecord,
  Storage,
  User,
} from "../../storage/types.ts";

let counter = 0;
const nextId = (prefix: string) => `${prefix}-${String(++counter).padStart(6, "0")}`;

/** Pages `items` (already in listing order) by their index, like a keyset cursor would. */
function page<T>(items: T[], key: (t: T) => string, req: PageRequest): Page<T> {
  const limit = Math.min(Math.max(req.limit ?? 50, 1), 500);
  let start = 0;
  if (req.cursor) {
    const i = items.findIndex((t) => key(t) === req.cursor);
    start = i < 0 ? items.length : i + 1;
  }
  const slice = items.slice(start, start + limit);
  const more = start + limit < items.length;
  return { items: slice, nextCursor: more ? key(slice.at(-1)!) : null };
}

type HelloUser = { id?: string; handle?: string; displayName?: string; avatarUrl?: string };

/** Parts of the contract the console never calls. */
const notInFake = (): never => {
  throw new Error("not implemented in the console's fake storage");
};

/** The fake plus hooks tests use. */
/** What the real device repository records in the audit log about a device. */
const deviceView = (d: Device) => ({
  status: d.status,
  publicKey: bytesToHex(d.publicKey),
  pendingPublicKey: d.pendingPublicKey ? bytesToHex(d.pendingPublicKey) : null,
});

export interface FakeStorage extends Storage {
  /** Control events published so far. */
  control: ControlEvent[];
  /** Interrupts set so far. */
  interrupts: Map<string, string>;
  /** When set, every repository call throws this. */
  failWith: Error | null;
  /** Adds a relay envelope directly (for queue depth figures). */
  addEnvelope(deviceId: string, enqueuedAt: Date): void;
  /**
   * Stores a peer as given, without the repository's checks: rows the real store would refuse
   * (markup in a domain), so pages are shown to escape whatever a database holds.
   */
  seedPeer(peer: Omit<FederationPeer, "source" | "lastSeenAt" | "createdAt">): void;
  /** Stores a user as given (a handle the real store refuses, such as markup), likewise. */
  seedUser(fields: { handle: string; displayName: string | null; avatarUrl: string | null }): User;
  /**
   * Stores a device as given (an id the real store refuses, such as markup), with its key
   * event, likewise.
   */
  seedDevice(fields: {
    id: string;
    userId: string;
    publicKey: Uint8Array;
    status: "active" | "pending";
    actor: string;
  }): Device;
  /** Stores an outbox entry as given (a domain or endpoint the real store refuses), likewise. */
  seedOutbox(
    fields: { eventId: string; peerDomain: string; endpoint: string; body: unknown },
  ): OutboxEntry;
  /** Stores a group (and members) as given (ids the real store refuses), likewise. */
  seedGroup(fields: {
    id: string;
    ownerDeviceId: string;
    actor: string;
    members?: [string, GroupRole][];
  }): void;
  /** An active device asks for a new key, as a handshake without auto-approve would. */
  requestKey(deviceId: string, publicKey: Uint8Array): void;
}

/** A fresh, empty in-memory storage. `clock` defaults to Date.now. */
export function fakeStorage(
  clock: () => number = Date.now,
  staticPeers: StaticPeer[] = [],
): FakeStorage {
  const now = () => new Date(clock());
  const staticDomains = new Set(staticPeers.map((p) => p.domain.toLowerCase()));
  const staticView = (p: StaticPeer): FederationPeer => ({
    ...p,
    domain: p.domain.toLowerCase(),
    status: "active",
    source: "config",
    lastSeenAt: null,
    createdAt: null,
  });
  const users = new Map<string, User>();
  const devices = new Map<string, Device>();
  const keyEvents: DeviceKeyEvent[] = [];
  const sessions: SessionRecord[] = [];
  const envelopes: RelayEnvelope[] = [];
  const groups = new Map<string, Omit<Group, "memberCount">>();
  const members: GroupMember[] = [];
  const membership: MembershipEvent[] = [];
  const peers = new Map<string, FederationPeer>();
  const outboxRepo = new MemoryOutboxRepo({
    get ms() {
      return clock();
    },
    now,
  });
  const audit: AuditEntry[] = [];
  // The real in-memory store (held to the ephemeral contract), recording what the console
  // publishes on the control bus and the interrupts it sets.
  const streams = new MemoryEphemeralStore();
  // Like the real peer repository: peer changes are audited in the same step as the change.
  const peerAudit = (p: FederationPeer) => ({
    domain: p.domain,
    endpoint: p.endpoint,
    public_key: bytesToHex(p.publicKey),
    status: p.status,
  });
  /** Like the real repositories: an audit note is recorded together with the change. */
  const noteAudit = (
    note: AuditNote | undefined,
    target: string,
    before: unknown,
    after: unknown,
  ) => {
    if (!note) return;
    audit.push({ id: nextId("aud"), ...note, target, before, after, recordedAt: now() });
  };
  const recordAudit = (
    actor: string,
    action: string,
    domain: string,
    before: unknown,
    after: FederationPeer,
  ) =>
    audit.push({
      id: nextId("aud"),
      actor,
      action,
      target: `peer:${domain}`,
      before,
      after: peerAudit(after),
      recordedAt: now(),
    });
  const control: ControlEvent[] = [];
  const interrupts = new Map<string, string>();
  const publishControl = streams.publishControl.bind(streams);
  streams.publishControl = (event) => publishControl(event).then(() => void control.push(event));
  const setInterrupt = streams.setInterrupt.bind(streams);
  streams.setInterrupt = (deviceId, reason, ttl) =>
    setInterrupt(deviceId, reason, ttl).then(() => void interrupts.set(deviceId, reason));

  const fs = {} as FakeStorage;
  const guard = () => {
    if (fs.failWith) throw fs.failWith;
  };

  const keyEvent = (d: Device, kind: KeyEventKind, actor: string, key = d.publicKey) => {
    const e: DeviceKeyEvent = {
      eventId: nextId("evt"),
      deviceId: d.id,
      publicKey: key,
      kind,
      actor,
      recordedAt: now(),
    };
    keyEvents.push(e);
    return e;
  };
  const mustDevice = (id: string) => {
    const d = devices.get(id);
    if (!d) throw new NotFound("device", id);
    return d;
  };
  // Like the real repository: never approved, or asking for a new key.
  const awaiting = (d: Device) => d.status === "pending" || d.pendingPublicKey !== null;
  const withUser = (d: Device): DeviceWithUser => ({
    ...d,
    userHandle: users.get(d.userId)?.handle ?? d.userId,
  });

  const addDevice = (id: string, userId: string, publicKey: Uint8Array, status: DeviceStatus) => {
    const d: Device = {
      id,
      userId,
      publicKey,
      status,
      pendingPublicKey: null,
      createdAt: now(),
      updatedAt: now(),
      lastSeenAt: null,
    };
    devices.set(id, d);
    return d;
  };
  /** A status or key change with its key event (and audit note), as the real repository. */
  const change = async (
    id: string,
    actor: string,
    note: AuditNote | undefined,
    fn: (d: Device) => DeviceKeyEvent,
  ) => {
    guard();
    v.actor(actor);
    const d = mustDevice(v.id("device id", id));
    const before = deviceView(d);
    const event = fn(d);
    d.updatedAt = now();
    noteAudit(note, `device:${id}`, before, deviceView(d));
    return { device: { ...d }, event };
  };
  /** The user a new device names (storage/repos/devices.ts resolveUser). */
  const resolveUser = (hello: HelloUser): { user: User; created: boolean } => {
    if (hello.id !== undefined) {
      const found = users.get(v.id("user id", hello.id));
      if (found) return { user: found, created: false };
      if (hello.handle === undefined) throw new NotFound("user", hello.id);
    }
    if (hello.handle === undefined) throw new InvalidValue("user", hello, "a user id or a handle");
    const fields = validateNewUser({
      id: hello.id,
      handle: hello.handle,
      displayName: hello.displayName ?? null,
      avatarUrl: hello.avatarUrl ?? null,
    });
    const holder = [...users.values()].find((u) => u.handle === fields.handle);
    if (holder && hello.id === undefined) return { user: holder, created: false };
    if (holder || users.has(fields.id)) {
      throw new Conflict(
        `handle ${JSON.stringify(fields.handle)} is already taken by another user`,
      );
    }
    const user: User = { ...fields, createdAt: now(), updatedAt: now() };
    users.set(user.id, user);
    return { user, created: true };
  };
  /** The registration table of ccp1.md §3 after the fast path (a known key) missed. */
  const handshake = (
    id: string,
    key: Uint8Array,
    hello: HelloUser,
    autoApprove: boolean,
    maxDevicesPerUser = Number.MAX_SAFE_INTEGER,
  ): HandshakeRegistration => {
    const actor = "handshake";
    const device = devices.get(id);
    if (!device) {
      const { user, created } = resolveUser(hello);
      if (!created) {
        // The fake keeps no per-user limits (pairing.deviceLimit): the default applies.
        const count = [...devices.values()]
          .filter((d) => d.userId === user.id && d.status !== "revoked").length;
        if (count >= maxDevicesPerUser) {
          throw new PairingRefused(
            "device-limit",
            `user ${user.handle} has ${count} devices; at most ${maxDevicesPerUser} ([limits] max_devices_per_user, or the user's own limit set by an operator)`,
            user.id,
          );
        }
      }
      const approve = autoApprove && created;
      const d = addDevice(id, user.id, key, approve ? "active" : "pending");
      const event = keyEvent(d, approve ? "registered" : "pending", actor);
      return { outcome: approve ? "registered" : "pending", device: { ...d }, user, event };
    }
    const user = { ...users.get(device.userId)! };
    if (device.status === "revoked") return { outcome: "revoked", device: { ...device }, user };
    if (device.status === "pending") {
      if (sameBytes(device.publicKey, key)) {
        return { outcome: "pending", device: { ...device }, user, event: null };
      }
      device.publicKey = key;
      device.updatedAt = now();
      const event = keyEvent(device, "pending", actor);
      return { outcome: "pending", device: { ...device }, user, event };
    }
    if (sameBytes(device.publicKey, key)) {
      return { outcome: "accepted", device: { ...device }, user };
    }
    if (sameBytes(device.pendingPublicKey, key)) {
      return { outcome: "pending", device: { ...device }, user, event: null };
    }
    device.pendingPublicKey = key;
    device.updatedAt = now();
    const event = keyEvent(device, "rotation-pending", actor, key);
    return { outcome: "pending", device: { ...device }, user, event };
  };

  // Groups, with the role rules of storage/group_roles.ts as the real repository applies them.
  const memberOf = (groupId: string, deviceId: string) =>
    members.find((m) => m.groupId === groupId && m.deviceId === deviceId);
  const withCount = (g: Omit<Group, "memberCount">): Group => ({
    ...g,
    memberCount: members.filter((m) => m.groupId === g.id).length,
  });
  const ownerCount = (groupId: string) =>
    members.filter((m) => m.groupId === groupId && m.role === "owner").length;
  const actingAs = (groupId: string, by: string | undefined): Actor | null =>
    by === undefined ? "operator" : memberOf(groupId, by)?.role ?? null;
  const enforce = (d: Decision, groupId: string, deviceId: string): GroupRole => {
    if (d.ok) return d.role;
    if (d.kind === "last-owner") {
      throw new Conflict(
        `device ${JSON.stringify(deviceId)} owns group ${JSON.stringify(groupId)}: ${d.reason}`,
      );
    }
    throw new NotPermitted(`group ${JSON.stringify(groupId)}: ${d.reason}`);
  };
  const membershipEvent = (
    groupId: string,
    deviceId: string,
    action: MembershipEvent["action"],
    role: GroupRole | null,
    actor: string,
    previousRole: GroupRole | null,
  ) =>
    membership.push({
      id: nextId("mem"),
      groupId,
      deviceId,
      action,
      role,
      previousRole,
      actor,
      recordedAt: now(),
    });
  /** Sets a member's role (adding it when absent) with its membership event. */
  const putRole = (
    groupId: string,
    deviceId: string,
    role: GroupRole,
    actor: string,
    previous: GroupRole | null,
  ): GroupMember => {
    let m = memberOf(groupId, deviceId);
    if (m) m.role = role;
    else members.push(m = { groupId, deviceId, role, joinedAt: now() });
    membershipEvent(groupId, deviceId, previous ? "role-changed" : "added", role, actor, previous);
    return { ...m };
  };
  const setRoleRuled = (
    groupId: string,
    deviceId: string,
    requested: GroupRole,
    actor: string,
    by: string | undefined,
  ) => {
    const current = memberOf(groupId, deviceId)?.role ?? null;
    const role = enforce(
      decideRole({
        by: actingAs(groupId, by),
        current,
        requested,
        owners: ownerCount(groupId),
        self: by === deviceId,
      }),
      groupId,
      deviceId,
    );
    if (current === role) return { member: { ...memberOf(groupId, deviceId)! }, previous: current };
    return { member: putRole(groupId, deviceId, role, actor, current), previous: current };
  };
  /** When the primary owner stops owning the group, the longest-standing owner takes it. */
  const settlePrimaryOwner = (g: Omit<Group, "memberCount">) => {
    if (memberOf(g.id, g.ownerDeviceId)?.role === "owner") return;
    const next = members.find((m) => m.groupId === g.id && m.role === "owner");
    if (next) g.ownerDeviceId = next.deviceId;
  };
  const addGroup = (id: string, owner: string, relay: boolean, actor: string) => {
    const g = { id, ownerDeviceId: owner, relay, createdAt: now() };
    groups.set(id, g);
    members.push({ groupId: id, deviceId: owner, role: "owner", joinedAt: now() });
    membershipEvent(id, owner, "added", "owner", actor, null);
    return g;
  };

  Object.assign(
    fs,
    {
      dbKind: "pglite" as const,
      control,
      interrupts,
      failWith: null,
      seedUser(fields) {
        const u: User = { id: crypto.randomUUID(), ...fields, createdAt: now(), updatedAt: now() };
        users.set(u.id, u);
        return u;
      },
      seedPeer(peer) {
        peers.set(peer.domain, { ...peer, source: "database", lastSeenAt: null, createdAt: now() });
      },
      addEnvelope(deviceId: string, enqueuedAt: Date) {
        envelopes.push({
          envelopeId: String(envelopes.length + 1),
          deviceId,
          channelId: 1,
          payload: new Uint8Array(8),
          enqueuedAt,
          expiresAt: new Date(enqueuedAt.getTime() + 86_400_000),
          attempts: 0,
          lastSequence: null,
          sender: null,
        });
      },
      requestKey(deviceId: string, publicKey: Uint8Array) {
        const d = mustDevice(deviceId);
        if (d.status !== "active") throw new Error(`requestKey: ${deviceId} is ${d.status}`);
        handshake(deviceId, publicKey, {}, false);
      },
      seedOutbox(fields) {
        return outboxRepo.seed(fields);
      },
      seedDevice(fields) {
        const d = addDevice(fields.id, fields.userId, fields.publicKey, fields.status);
        keyEvent(d, fields.status === "active" ? "registered" : "pending", fields.actor);
        return { ...d };
      },
      seedGroup(fields) {
        addGroup(fields.id, fields.ownerDeviceId, true, fields.actor);
        for (const [deviceId, role] of fields.members ?? []) {
          putRole(fields.id, deviceId, role, fields.actor, null);
        }
      },
      users: {
        async create(input, note) {
          guard();
          // The real repository's checks (storage/repos/users.ts), with its validators.
          const fields = validateNewUser(input);
          if ([...users.values()].some((u) => u.handle === fields.handle)) {
            throw new Conflict(`handle ${JSON.stringify(fields.handle)} is already taken`);
          }
          if (users.has(fields.id)) {
            throw new Conflict(`user ${JSON.stringify(fields.id)} already exists`);
          }
          const u: User = { ...fields, createdAt: now(), updatedAt: now() };
          users.set(u.id, u);
          noteAudit(note, `user:${u.id}`, null, {
            handle: u.handle,
            displayName: u.displayName,
            avatarUrl: u.avatarUrl,
          });
          return Promise.resolve(u);
        },
        async get(id) {
          guard();
          return users.get(v.id("user id", id)) ?? null;
        },
        async getByHandle(h) {
          guard();
          const handle = v.storedHandle(h);
          return [...users.values()].find((u) => u.handle === handle) ?? null;
        },
        async update(id, changes) {
          guard();
          v.id("user id", id);
          const displayName = v.optionalText("display name", changes.displayName, 256);
          const avatarUrl = v.optionalText("avatar url", changes.avatarUrl, 2048);
          const u = users.get(id);
          if (!u) throw new NotFound("user", id);
          if (displayName !== undefined) u.displayName = displayName;
          if (avatarUrl !== undefined) u.avatarUrl = avatarUrl;
          u.updatedAt = now();
          return { ...u };
        },
        async list(filter) {
          guard();
          // As the real listing: a case-insensitive handle prefix, matched literally.
          const prefix = filter.search ? v.text("search", filter.search, 256).toLowerCase() : "";
          const all = [...users.values()]
            .filter((u) => u.handle.toLowerCase().startsWith(prefix))
            .sort((a, b) => a.handle < b.handle ? -1 : a.handle > b.handle ? 1 : 0);
          return Promise.resolve(page(all, (u) => u.id, filter));
        },
      },
      devices: {
        async register(input, actor, note) {
          guard();
          // The real repository's checks (storage/repos/devices.ts), with its validators.
          const id = v.newId("device id", input.id);
          const userId = v.id("user id", input.userId);
          const publicKey = v.key32("public key", input.publicKey);
          if (input.status !== "active" && input.status !== "pending") {
            throw new InvalidValue("device status", input.status, "active or pending");
          }
          v.actor(actor);
          if (!users.has(userId)) throw new NotFound("user", userId);
          if (devices.has(id)) throw new Conflict(`device ${JSON.stringify(id)} already exists`);
          const d = addDevice(id, userId, publicKey, input.status);
          const event = keyEvent(d, input.status === "active" ? "registered" : "pending", actor);
          noteAudit(note, `device:${id}`, null, deviceView(d));
          return { device: { ...d }, event };
        },
        async get(id) {
          guard();
          const d = devices.get(v.id("device id", id));
          return d ? { ...d } : null;
        },
        async approve(id, actor, note) {
          return change(id, actor, note, (d) => {
            if (d.status === "pending") {
              d.status = "active";
              return keyEvent(d, "approved", actor);
            }
            if (d.status === "active" && d.pendingPublicKey) {
              d.publicKey = d.pendingPublicKey;
              d.pendingPublicKey = null;
              return keyEvent(d, "approved", actor);
            }
            throw new TransitionNotAllowed(`device ${JSON.stringify(id)}`, d.status, "active");
          });
        },
        async reject(id, actor, note) {
          return change(id, actor, note, (d) => {
            if (d.status === "pending") {
              d.status = "revoked";
              return keyEvent(d, "rejected", actor);
            }
            if (d.status === "active" && d.pendingPublicKey) {
              const dropped = d.pendingPublicKey;
              d.pendingPublicKey = null;
              return keyEvent(d, "rejected", actor, dropped);
            }
            throw new TransitionNotAllowed(`device ${JSON.stringify(id)}`, d.status, "rejected");
          });
        },
        async revoke(id, actor, note) {
          return change(id, actor, note, (d) => {
            if (d.status === "revoked") {
              throw new TransitionNotAllowed(`device ${JSON.stringify(id)}`, "revoked", "revoked");
            }
            d.status = "revoked";
            d.pendingPublicKey = null;
            return keyEvent(d, "revoked", actor);
          });
        },
        async rotateKey(id, publicKey, actor, note) {
          const key = v.key32("public key", publicKey);
          return change(id, actor, note, (d) => {
            if (d.status !== "active") {
              throw new TransitionNotAllowed(`device ${JSON.stringify(id)}`, d.status, "rotated");
            }
            d.publicKey = key;
            d.pendingPublicKey = null;
            return keyEvent(d, "rotated", actor);
          });
        },
        async resolveForHandshake(input) {
          guard();
          const id = v.newId("device id", input.deviceId);
          const key = v.key32("client static key", input.publicKey);
          if (typeof input.user !== "object" || input.user === null) {
            throw new InvalidValue("user", input.user, "an object with an id or a handle");
          }
          const known = devices.get(id);
          if (known?.status === "active" && sameBytes(known.publicKey, key)) {
            return {
              outcome: "accepted",
              device: { ...known },
              user: { ...users.get(known.userId)! },
            };
          }
          if (input.pairingCode !== undefined) {
            // The fake issues no pairing codes (pairing.issue), so none can be redeemed.
            throw new Error("the fake storage pairs no devices");
          }
          if (input.beforeChange) await input.beforeChange();
          return handshake(id, key, input.user, input.autoApprove, input.maxDevicesPerUser);
        },
        async touch(id) {
          guard();
          const d = devices.get(v.id("device id", id));
          if (d) d.lastSeenAt = now();
        },
        async revokedAmong(ids) {
          guard();
          if (!Array.isArray(ids)) {
            throw new InvalidValue("device ids", ids, "an array of device ids");
          }
          return ids.map((id) => v.id("device id", id))
            .filter((id) => devices.get(id)?.status === "revoked");
        },
        async list(filter) {
          guard();
          // As the real listing: AND of the filters, a case-insensitive literal prefix of the
          // device id or the owner's handle, newest first (ties by device id, descending).
          const status = filter.status === undefined ? null : v.deviceStatus(filter.status);
          const userId = filter.userId === undefined ? null : v.id("user id", filter.userId);
          const prefix = filter.search ? v.text("search", filter.search, 256).toLowerCase() : "";
          const awaitingOnly = filter.awaitingApproval ?? false;
          if (typeof awaitingOnly !== "boolean") {
            throw new InvalidValue("awaiting approval", awaitingOnly, "true or false");
          }
          const all = [...devices.values()]
            .map(withUser)
            .filter((d) => status === null || d.status === status)
            .filter((d) => !awaitingOnly || awaiting(d))
            .filter((d) => userId === null || d.userId === userId)
            .filter((d) =>
              d.id.toLowerCase().startsWith(prefix) || d.userHandle.toLowerCase().startsWith(prefix)
            )
            .sort((a, b) =>
              b.createdAt.getTime() - a.createdAt.getTime() ||
              (a.id < b.id ? 1 : a.id > b.id ? -1 : 0)
            );
          return page(all, (d) => d.id, filter);
        },
        async countByStatus() {
          guard();
          const counts: Record<DeviceStatus, number> = { pending: 0, active: 0, revoked: 0 };
          for (const d of devices.values()) counts[d.status]++;
          return counts;
        },
        async countAwaitingApproval() {
          guard();
          return [...devices.values()].filter(awaiting).length;
        },
      },
      keyEvents: {
        async list(filter) {
          guard();
          if (filter.from !== undefined) v.date("from", filter.from);
          if (filter.to !== undefined) v.date("to", filter.to);
          const all = keyEvents
            .filter((e) => !filter.deviceId || e.deviceId === filter.deviceId)
            .filter((e) => !filter.from || e.recordedAt >= filter.from)
            .filter((e) => !filter.to || e.recordedAt <= filter.to)
            .slice().reverse();
          return Promise.resolve(page(all, (e) => e.eventId, filter));
        },
        export(deviceId, from, to) {
          guard();
          return Promise.resolve(
            keyEvents.filter((e) =>
              (!deviceId || e.deviceId === deviceId) && (!from || e.recordedAt >= from) &&
              (!to || e.recordedAt <= to)
            ),
          );
        },
      },
      analytics: {
        add: () => Promise.resolve(),
        rollups: () => (guard(), Promise.resolve([])),
        latency: () => (guard(), Promise.resolve([])),
        purge: () => Promise.resolve(0),
      },
      keyEventArchive: {
        withJobLock: () => Promise.resolve({ locked: false as const }),
        due: () => Promise.resolve([]),
        commitChunk: () => Promise.reject(new Error("the fake storage archives nothing")),
        purgeRestored: () => Promise.resolve(0),
        chunks: () => (guard(), Promise.resolve([])),
        chunksForDevice: () => (guard(), Promise.resolve([])),
        restore: () => Promise.reject(new Error("the fake storage restores nothing")),
      },
      pairing: {
        issue: () => Promise.reject(new Error("the fake storage issues no pairing codes")),
        list: () => (guard(), Promise.resolve([])),
        devicesOf: (userId) => (guard(),
          Promise.resolve(
            [...devices.values()].filter((d) => d.userId === userId).map((d) => ({
              ...d,
              pairedBy: null,
            })),
          )),
        pairedBy: () => (guard(), Promise.resolve(null)),
        countDevices: (userId) => (guard(),
          Promise.resolve(
            [...devices.values()].filter((d) => d.userId === userId && d.status !== "revoked")
              .length,
          )),
        deviceLimit: () => (guard(), Promise.resolve(null)),
        setDeviceLimit: () => Promise.reject(new Error("the fake storage sets no device limits")),
      },
      sessions: {
        async record(s) {
          v.newId("session id", s.sessionId);
          if (s.pattern !== "XK" && s.pattern !== "IK") {
            throw new InvalidValue("pattern", s.pattern, "XK or IK");
          }
          if (sessions.some((x) => x.sessionId === s.sessionId)) {
            throw new Conflict(`session ${JSON.stringify(s.sessionId)} already exists`);
          }
          const r = { ...s, createdAt: now() };
          sessions.push(r);
          return Promise.resolve(r);
        },
        open: notInFake,
        listRecent: (p) => Promise.resolve(page(sessions.slice().reverse(), (s) => s.sessionId, p)),
        byDevice: (id, p) => (guard(),
          Promise.resolve(
            page(sessions.filter((s) => s.deviceId === id).reverse(), (s) => s.sessionId, p),
          )),
      },
      relay: {
        depth(id) {
          guard();
          const mine = envelopes.filter((e) => e.deviceId === id);
          return Promise.resolve({ depth: mine.length, oldest: mine[0]?.enqueuedAt ?? null });
        },
        totalDepth: () => (guard(), Promise.resolve(envelopes.length)),
        waiting: (
          ids,
        ) => (guard(),
          Promise.resolve(ids.filter((id) => envelopes.some((e) => e.deviceId === id)))),
        enqueue: notInFake,
        claim: notInFake,
        claimForReplay: notInFake,
        markSent: notInFake,
        ack: notInFake,
        requeue: notInFake,
        purgeExpired: notInFake,
        expire: notInFake,
      },
      offsets: { store: notInFake, read: notInFake, list: notInFake },
      groups: {
        async create(input, actor) {
          guard();
          // The real repository's checks (storage/repos/groups.ts), with its validators.
          const id = input.id === undefined ? crypto.randomUUID() : v.newId("group id", input.id);
          const owner = v.id("owner device id", input.ownerDeviceId);
          if (typeof input.relay !== "boolean") {
            throw new InvalidValue("relay", input.relay, "true or false");
          }
          v.actor(actor);
          if (groups.has(id)) throw new Conflict(`group ${JSON.stringify(id)} already exists`);
          return { ...addGroup(id, owner, input.relay, actor), memberCount: 1 };
        },
        async get(id) {
          guard();
          const g = groups.get(v.id("group id", id));
          return g ? withCount(g) : null;
        },
        async list(filter) {
          guard();
          // As the real listing: id order, a case-insensitive literal prefix of the group id.
          const prefix = filter.search ? v.text("search", filter.search, 256).toLowerCase() : "";
          const all = [...groups.values()].filter((g) => g.id.toLowerCase().startsWith(prefix))
            .sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
            .map(withCount);
          return page(all, (g) => g.id, filter);
        },
        async addMember(groupId, deviceId, role, actor) {
          guard();
          v.id("group id", groupId);
          v.id("device id", deviceId);
          const wanted: GroupRole = v.groupRole(role) === "owner" ? "admin" : role;
          v.actor(actor);
          if (!groups.has(groupId)) throw new NotFound("group", groupId);
          const existing = memberOf(groupId, deviceId);
          if (existing?.role === wanted) return { ...existing };
          if (existing?.role === "owner") {
            throw new TransitionNotAllowed(`owner ${JSON.stringify(deviceId)}`, "owner", wanted);
          }
          return putRole(groupId, deviceId, wanted, actor, existing?.role ?? null);
        },
        async removeMember(groupId, deviceId, actor, opts = {}) {
          guard();
          v.id("group id", groupId);
          v.id("device id", deviceId);
          v.actor(actor);
          if (opts.by !== undefined) v.id("acting device id", opts.by);
          if (opts.successor !== undefined) {
            v.id("successor device id", opts.successor);
            if (opts.successor === deviceId) {
              throw new InvalidValue(
                "successor",
                opts.successor,
                "a device other than the one leaving",
              );
            }
          }
          const g = groups.get(groupId);
          const current = g ? memberOf(groupId, deviceId)?.role ?? null : null;
          if (!g || current === null) return false;
          enforce(
            decideRemoval({
              by: actingAs(groupId, opts.by),
              current,
              owners: ownerCount(groupId),
              self: opts.by === deviceId,
              successor: opts.successor,
            }),
            groupId,
            deviceId,
          );
          if (current === "owner" && opts.successor !== undefined) {
            setRoleRuled(
              groupId,
              opts.successor,
              "owner",
              actor,
              opts.by === undefined ? undefined : deviceId,
            );
          }
          members.splice(members.indexOf(memberOf(groupId, deviceId)!), 1);
          membershipEvent(groupId, deviceId, "removed", current, actor, null);
          if (current === "owner") settlePrimaryOwner(g);
          noteAudit(opts.audit, `group:${groupId}`, { deviceId, role: current }, null);
          return true;
        },
        async setRole(groupId, deviceId, role, actor, opts = {}) {
          guard();
          v.id("group id", groupId);
          v.id("device id", deviceId);
          v.groupRole(role);
          v.actor(actor);
          if (opts.by !== undefined) v.id("acting device id", opts.by);
          const g = groups.get(groupId);
          if (!g) throw new NotFound("group", groupId);
          const result = setRoleRuled(groupId, deviceId, role, actor, opts.by);
          if (result.previous === "owner") settlePrimaryOwner(g);
          if (result.previous !== result.member.role) {
            noteAudit(opts.audit, `group:${groupId}`, { deviceId, role: result.previous }, {
              deviceId,
              role: result.member.role,
            });
          }
          return result;
        },
        transferOwnership: () => Promise.reject(new Error("the fake storage transfers nothing")),
        async roster(id) {
          guard();
          v.id("group id", id);
          // Owner first, then in the order they joined.
          return members.filter((m) => m.groupId === id)
            .sort((a, b) => Number(b.role === "owner") - Number(a.role === "owner"))
            .map((m) => ({ ...m }));
        },
        async role(g, d) {
          guard();
          return memberOf(v.id("group id", g), v.id("device id", d))?.role ?? null;
        },
        async groupsOf(d) {
          guard();
          v.id("device id", d);
          const device = devices.get(d);
          const viaUser = device?.status === "active" ? `@${device.userId}` : null;
          const rank = (m: GroupMember) => m.deviceId === d ? 0 : 1;
          return members.filter((m) => m.deviceId === d || m.deviceId === viaUser)
            .sort((a, b) =>
              a.groupId < b.groupId ? -1 : a.groupId > b.groupId ? 1 : rank(a) - rank(b)
            )
            .map((m) => ({ ...m }));
        },
        async auditTrail(id, p) {
          guard();
          v.id("group id", id);
          return page(membership.filter((m) => m.groupId === id).reverse(), (m) => m.id, p);
        },
      },
      peers: {
        async upsert(input, actor) {
          guard();
          // The real repository's checks, with its validators.
          const domain = v.domain(input.domain);
          const endpoint = v.endpoint(input.endpoint);
          const publicKey = v.key32("peer public key", input.publicKey);
          const status = input.status === undefined ? undefined : v.peerStatus(input.status);
          v.actor(actor);
          if (staticDomains.has(domain)) {
            throw new Conflict(`peer ${domain} is a static [federation] peer; change it there`);
          }
          const existing = peers.get(domain);
          const before = existing ? peerAudit(existing) : null;
          const p: FederationPeer = {
            domain,
            endpoint,
            publicKey,
            status: status ?? existing?.status ?? "pending",
            source: "database",
            lastSeenAt: existing?.lastSeenAt ?? null,
            createdAt: existing?.createdAt ?? now(),
          };
          peers.set(p.domain, p);
          recordAudit(actor, existing ? "peer.update" : "peer.add", p.domain, before, p);
          return Promise.resolve(p);
        },
        async get(d) {
          guard();
          const domain = v.domain(d);
          const fixed = staticPeers.find((p) => p.domain.toLowerCase() === domain);
          return Promise.resolve(fixed ? staticView(fixed) : peers.get(domain) ?? null);
        },
        async setStatus(d, to: PeerStatus, actor) {
          guard();
          const domain = v.domain(d);
          const status = v.peerStatus(to);
          v.actor(actor);
          if (staticDomains.has(domain)) {
            throw new Conflict(`peer ${domain} is a static [federation] peer; change it there`);
          }
          const p = peers.get(domain);
          if (!p) throw new NotFound("federation peer", domain);
          if (p.status === status) {
            throw new TransitionNotAllowed(`peer ${domain}`, p.status, status);
          }
          const before = peerAudit(p);
          p.status = status;
          recordAudit(actor, "peer.set-status", domain, before, p);
          return Promise.resolve(p);
        },
        async list(extra = []) {
          guard();
          const out: FederationPeer[] = [...staticPeers, ...extra].map(staticView);
          for (const p of peers.values()) {
            if (!out.some((o) => o.domain === p.domain)) out.push(p);
          }
          return Promise.resolve(out.sort((a, b) => a.domain.localeCompare(b.domain)));
        },
        async touch(d) {
          const p = peers.get(v.domain(d));
          if (p) p.lastSeenAt = now();
          return Promise.resolve();
        },
      },
      // The federation tests' outbox fake (held to the storage contract there too), with the
      // audit notes the real repository records for operator actions.
      outbox: {
        enqueue: async (input) => (guard(), await outboxRepo.enqueue(input)),
        markFailed: async (id, error) => (guard(), await outboxRepo.markFailed(id, error)),
        markDead: async (id, error) => (guard(), await outboxRepo.markDead(id, error)),
        backlog: async () => (guard(), await outboxRepo.backlog()),
        listDead: async (filter) => (guard(), await outboxRepo.listDead(filter)),
        get: async (id) => (guard(), await outboxRepo.get(id)),
        claimDue: async (limit, at) => (guard(), await outboxRepo.claimDue(limit, at)),
        markDelivered: async (id) => (guard(), await outboxRepo.markDelivered(id)),
        release: async (ids) => (guard(), await outboxRepo.release(ids)),
        async retryNow(domain, actor) {
          guard();
          const n = await outboxRepo.retryNow(domain);
          noteAudit({ actor, action: "peer.retry-now" }, `peer:${domain}`, null, { due_now: n });
          return n;
        },
        async replay(id, actor) {
          guard();
          const e = await outboxRepo.replay(id);
          noteAudit({ actor, action: "outbox.replay" }, `peer:${e.peerDomain}`, null, {
            id,
            state: "pending",
          });
          return e;
        },
      },
      audit: {
        async append(entry) {
          guard();
          v.actor(entry.actor);
          v.text("action", entry.action, 128, 1);
          v.text("target", entry.target, 512);
          const a: AuditEntry = {
            id: nextId("aud"),
            actor: entry.actor,
            action: entry.action,
            target: entry.target,
            before: entry.before ?? null,
            after: entry.after ?? null,
            recordedAt: now(),
          };
          audit.push(a);
          return Promise.resolve(a);
        },
        async list(filter) {
          guard();
          const all = audit.filter((a) =>
            (!filter.actor || a.actor === filter.actor) &&
            (!filter.action || a.action === filter.action) &&
            (filter.target === undefined || a.target === filter.target)
          ).slice().reverse();
          return Promise.resolve(page(all, (a) => a.id, filter));
        },
      },
      ephemeral: streams,
      readiness: () =>
        Promise.resolve({
          ok: true,
          postgres: { ok: true, kind: "pglite" },
          redis: { ok: true, kind: "memory" },
        }),
      close: () => Promise.resolve(),
    } satisfies Partial<FakeStorage>,
  );
  return fs;
}

/** A storage failure like the real module throws when Postgres is down. */
export const storageDown = () => new StorageFailure("connection refused (127.0.0.1:5432)");
