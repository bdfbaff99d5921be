// deno-lint-ignore-file require-await -- async so a refusal rejects, as in the real repositories
/**
 * An in-memory Storage for fast console page tests. It follows storage/types.ts closely enough
 * for the console: keyset pages (cursor = last item's position key), status transitions that
 * refuse with the typed errors, key events, audit entries and a recorded control bus.
 */
import { MemoryEphemeralStore } from "../../storage/ephemeral/mod.ts";
import { bytesToHex } from "@noble/hashes/utils.js";
import {
  Conflict,
  InvalidValue,
  NotFound,
  StorageFailure,
  TransitionNotAllowed,
} from "../../storage/errors.ts";
import * as v from "../../storage/repos/validate.ts";
import { outboxBacklog } from "../helpers/outbox.ts";
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
  EphemeralStore,
  FederationPeer,
  Group,
  GroupMember,
  GroupRole,
  KeyEventKind,
  MembershipEvent,
  NodeHeartbeat,
  OutboxEntry,
  Page,
  PageRequest,
  PeerStatus,
  Presence,
  RateRule,
  RelayEnvelope,
  Route,
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

const contains = (hay: string | null | undefined, needle: string | undefined) =>
  !needle || (hay ?? "").toLowerCase().includes(needle.toLowerCase());

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
  /** An active device asks for a new key, as a handshake without auto-approve would. */
  requestKey(deviceId: string, publicKey: Uint8Array): void;
  routes: Map<string, Route>;
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
  const outbox: OutboxEntry[] = [];
  const audit: AuditEntry[] = [];
  const heartbeats = new Map<string, NodeHeartbeat>();
  const streams = new MemoryEphemeralStore(); // event streams as the real store keeps them
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
  const routes = new Map<string, Route>();
  const presence = new Map<string, Presence>();

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

  Object.assign(
    fs,
    {
      dbKind: "pglite" as const,
      control,
      interrupts,
      routes,
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
        d.pendingPublicKey = publicKey;
        d.updatedAt = now();
        keyEvent(d, "rotation-pending", "handshake", publicKey);
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
        register(input, actor) {
          guard();
          if (devices.has(input.id)) throw new Conflict(`device ${input.id} exists`);
          const d: Device = {
            id: input.id,
            userId: input.userId,
            publicKey: input.publicKey,
            status: input.status,
            pendingPublicKey: null,
            createdAt: now(),
            updatedAt: now(),
            lastSeenAt: null,
          };
          devices.set(d.id, d);
          const event = keyEvent(d, input.status === "active" ? "registered" : "pending", actor);
          return Promise.resolve({ device: d, event });
        },
        get: (id) => (guard(), Promise.resolve(devices.get(id) ?? null)),
        approve(id, actor, note) {
          guard();
          const d = mustDevice(id);
          const before = deviceView(d);
          if (d.status === "pending") {
            d.status = "active";
          } else if (d.status === "active" && d.pendingPublicKey) {
            d.publicKey = d.pendingPublicKey;
            d.pendingPublicKey = null;
          } else throw new TransitionNotAllowed(`device ${id}`, d.status, "active");
          d.updatedAt = now();
          noteAudit(note, `device:${id}`, before, deviceView(d));
          return Promise.resolve({ device: d, event: keyEvent(d, "approved", actor) });
        },
        reject(id, actor, note) {
          guard();
          const d = mustDevice(id);
          const before = deviceView(d);
          if (d.status === "pending") d.status = "revoked";
          else if (d.status === "active" && d.pendingPublicKey) d.pendingPublicKey = null;
          else throw new TransitionNotAllowed(`device ${id}`, d.status, "rejected");
          d.updatedAt = now();
          noteAudit(note, `device:${id}`, before, deviceView(d));
          return Promise.resolve({ device: d, event: keyEvent(d, "rejected", actor) });
        },
        revoke(id, actor, note) {
          guard();
          const d = mustDevice(id);
          const before = deviceView(d);
          if (d.status === "revoked") {
            throw new TransitionNotAllowed(
              `device ${id}`,
              "revoked",
              "revoked",
            );
          }
          d.status = "revoked";
          d.pendingPublicKey = null;
          d.updatedAt = now();
          noteAudit(note, `device:${id}`, before, deviceView(d));
          return Promise.resolve({ device: d, event: keyEvent(d, "revoked", actor) });
        },
        rotateKey(id, publicKey, actor, note) {
          guard();
          const d = mustDevice(id);
          const before = deviceView(d);
          d.publicKey = publicKey;
          noteAudit(note, `device:${id}`, before, deviceView(d));
          return Promise.resolve({ device: d, event: keyEvent(d, "rotated", actor) });
        },
        resolveForHandshake() {
          throw new Error("not in the fake");
        },
        touch(id) {
          mustDevice(id).lastSeenAt = now();
          return Promise.resolve();
        },
        revokedAmong(ids) {
          guard();
          return Promise.resolve(ids.filter((id) => devices.get(id)?.status === "revoked"));
        },
        list(filter) {
          guard();
          const all = [...devices.values()]
            .filter((d) => !filter.status || d.status === filter.status)
            .filter((d) => !filter.awaitingApproval || awaiting(d))
            .filter((d) => !filter.userId || d.userId === filter.userId)
            .filter((d) => contains(d.id, filter.search))
            .sort((a, b) =>
              b.createdAt.getTime() - a.createdAt.getTime() || a.id.localeCompare(b.id)
            )
            .map(withUser);
          return Promise.resolve(page(all, (d) => d.id, filter));
        },
        countByStatus() {
          guard();
          const counts: Record<DeviceStatus, number> = { pending: 0, active: 0, revoked: 0 };
          for (const d of devices.values()) counts[d.status]++;
          return Promise.resolve(counts);
        },
        countAwaitingApproval() {
          guard();
          return Promise.resolve([...devices.values()].filter(awaiting).length);
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
        markSent: notInFake,
        ack: notInFake,
        requeue: notInFake,
        purgeExpired: notInFake,
        expire: notInFake,
      },
      offsets: { store: notInFake, read: notInFake, list: notInFake },
      groups: {
        create(input, actor) {
          const g = {
            id: input.id ?? nextId("grp"),
            ownerDeviceId: input.ownerDeviceId,
            relay: input.relay,
            createdAt: now(),
          };
          groups.set(g.id, g);
          members.push({
            groupId: g.id,
            deviceId: g.ownerDeviceId,
            role: "owner",
            joinedAt: now(),
          });
          membership.push({
            id: nextId("mem"),
            groupId: g.id,
            deviceId: g.ownerDeviceId,
            action: "added",
            role: "owner",
            previousRole: null,
            actor,
            recordedAt: now(),
          });
          return Promise.resolve({ ...g, memberCount: 1 });
        },
        get(id) {
          guard();
          const g = groups.get(id);
          return Promise.resolve(
            g ? { ...g, memberCount: members.filter((m) => m.groupId === id).length } : null,
          );
        },
        list(filter) {
          guard();
          const all = [...groups.values()].filter((g) => contains(g.id, filter.search))
            .sort((a, b) => a.id.localeCompare(b.id))
            .map((g) => ({ ...g, memberCount: members.filter((m) => m.groupId === g.id).length }));
          return Promise.resolve(page(all, (g) => g.id, filter));
        },
        addMember(groupId, deviceId, role: GroupRole, actor) {
          const r: GroupRole = role === "owner" ? "admin" : role;
          const m = { groupId, deviceId, role: r, joinedAt: now() };
          members.push(m);
          membership.push({
            id: nextId("mem"),
            groupId,
            deviceId,
            action: "added",
            role: r,
            previousRole: null,
            actor,
            recordedAt: now(),
          });
          return Promise.resolve(m);
        },
        removeMember(groupId, deviceId, actor, opts) {
          guard();
          const i = members.findIndex((m) => m.groupId === groupId && m.deviceId === deviceId);
          if (i < 0) return Promise.resolve(false);
          noteAudit(opts?.audit, `group:${groupId}`, { deviceId, role: members[i].role }, null);
          members.splice(i, 1);
          membership.push({
            id: nextId("mem"),
            groupId,
            deviceId,
            action: "removed",
            role: null,
            previousRole: null,
            actor,
            recordedAt: now(),
          });
          return Promise.resolve(true);
        },
        setRole(groupId, deviceId, role: GroupRole, actor) {
          guard();
          const m = members.find((x) => x.groupId === groupId && x.deviceId === deviceId);
          const previous = m?.role ?? null;
          const member = m ?? { groupId, deviceId, role, joinedAt: now() };
          if (!m) members.push(member);
          member.role = role;
          membership.push({
            id: nextId("mem"),
            groupId,
            deviceId,
            action: m ? "role-changed" : "added",
            role,
            previousRole: previous,
            actor,
            recordedAt: now(),
          });
          return Promise.resolve({ member: { ...member }, previous });
        },
        transferOwnership: () => Promise.reject(new Error("the fake storage transfers nothing")),
        roster: (id) => (guard(), Promise.resolve(members.filter((m) => m.groupId === id))),
        role: (g, d) => (guard(),
          Promise.resolve(
            members.find((m) => m.groupId === g && m.deviceId === d)?.role ?? null,
          )),
        groupsOf: (d) => (guard(), Promise.resolve(members.filter((m) => m.deviceId === d))),
        auditTrail: (
          id,
          p,
        ) => (guard(),
          Promise.resolve(
            page(membership.filter((m) => m.groupId === id).reverse(), (m) => m.id, p),
          )),
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
      outbox: {
        enqueue(input) {
          const e: OutboxEntry = {
            id: nextId("out"),
            ...input,
            attempts: 0,
            nextAttemptAt: now(),
            lastError: null,
            deliveredAt: null,
            deadAt: null,
            createdAt: now(),
          };
          outbox.push(e);
          return Promise.resolve(e);
        },
        markFailed(id, error) {
          const e = outbox.find((o) => o.id === id)!;
          e.attempts++;
          e.lastError = error;
          // Like the real repository: the next attempt after 2^attempts seconds.
          e.nextAttemptAt = new Date(now().getTime() + Math.min(2 ** e.attempts, 3600) * 1000);
          return Promise.resolve(e);
        },
        backlog() {
          guard();
          return Promise.resolve(outboxBacklog(outbox));
        },
        retryNow(domain, actor) {
          guard();
          let n = 0;
          for (const e of outbox) {
            if (e.peerDomain !== domain || e.deliveredAt || e.deadAt) continue;
            if (e.nextAttemptAt > now()) {
              e.nextAttemptAt = now();
              n++;
            }
          }
          noteAudit({ actor, action: "peer.retry-now" }, `peer:${domain}`, null, { due_now: n });
          return Promise.resolve(n);
        },
        listDead(filter) {
          guard();
          return Promise.resolve(
            outbox.filter((e) =>
              e.deadAt && !e.deliveredAt &&
              (filter.peerDomain === undefined || e.peerDomain === filter.peerDomain)
            ).reverse().slice(0, filter.limit ?? 100),
          );
        },
        get: (id) => (guard(), Promise.resolve(outbox.find((o) => o.id === id) ?? null)),
        replay(id, actor) {
          guard();
          const e = outbox.find((o) => o.id === id);
          if (!e) throw new NotFound("outbox entry", id);
          if (!e.deadAt || e.deliveredAt) throw new Conflict(`outbox entry ${id} is not dead`);
          e.deadAt = null;
          e.attempts = 0;
          e.nextAttemptAt = now();
          noteAudit({ actor, action: "outbox.replay" }, `peer:${e.peerDomain}`, null, {
            id,
            state: "pending",
          });
          return Promise.resolve(e);
        },
        markDead(id, error) {
          guard();
          const e = outbox.find((o) => o.id === id);
          if (!e) throw new NotFound("outbox entry", id);
          e.attempts++;
          e.lastError = error;
          e.deadAt ??= now();
          return Promise.resolve(e);
        },
        claimDue: notInFake,
        markDelivered: notInFake,
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
      ephemeral: {
        kind: "memory",
        getPresence: (d: string) => Promise.resolve(presence.get(d) ?? null),
        getRoute: (d: string) => Promise.resolve(routes.get(d) ?? null),
        setInterrupt(d: string, reason: string) {
          interrupts.set(d, reason);
          return Promise.resolve();
        },
        getInterrupt: (d: string) => Promise.resolve(interrupts.get(d) ?? null),
        publishControl(event: ControlEvent) {
          control.push(event);
          return Promise.resolve();
        },
        setNodeHeartbeat(h: NodeHeartbeat) {
          heartbeats.set(h.nodeId, h);
          return Promise.resolve();
        },
        listNodeHeartbeats: () => Promise.resolve([...heartbeats.values()]),
        appendEvent: (s: string, m: Uint8Array, n: number) => streams.appendEvent(s, m, n),
        consumeRate: (k: string, r: RateRule, n: number) => streams.consumeRate(k, r, n),
        readEvents: (s: string, after: string, n: number) => streams.readEvents(s, after, n),
        ping: () => Promise.resolve(),
        close: () => Promise.resolve(),
      } as unknown as EphemeralStore,
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
