/**
 * What operator tools show: storage records as plain JSON values (keys as lowercase hex,
 * times as RFC 3339 text). The admin API sends exactly these, and the CLI prints them, so its
 * output is the same whether it reads the database itself or asks a running server.
 */
import { bytesToHex } from "../protocol/hex.ts";
import type {
  AuditEntry,
  Device,
  DeviceKeyEvent,
  DeviceWithUser,
  FederationPeer,
  Group,
  GroupMember,
  MembershipEvent,
  OutboxBacklog,
  OutboxEntry,
  Page,
  User,
} from "../storage/types.ts";

const iso = (d: Date | null | undefined): string | null => d ? d.toISOString() : null;

/** A storage field as JSON: times as RFC 3339 text, bytes as lowercase hex. */
type ViewOf<V> = V extends Date ? string : V extends Uint8Array ? string : V;
/** A storage record as JSON (field by field, see {@link ViewOf}). */
export type Viewed<T> = { [K in keyof T]: ViewOf<T[K]> };

export type UserView = Viewed<Omit<User, "updatedAt">>;

export type DeviceView = Viewed<Omit<Device, "updatedAt">> & {
  /** The owner's handle, when the listing joined it. */
  userHandle: string | null;
};

export type KeyEventView = Viewed<DeviceKeyEvent>;

export type PeerView = Viewed<Omit<FederationPeer, "createdAt">> & {
  /** Outbox entries still being retried, and the backoff state of the soonest one. */
  pending: number;
  dead: number;
  attempts: number;
  nextRetryAt: string | null;
  oldestPendingAt: string | null;
  lastError: string | null;
};

/** An outbox entry; `body` is the signed event as queued (inspect before replaying). */
export type OutboxView = Viewed<Omit<OutboxEntry, "deliveredAt">>;

export type GroupView = Viewed<Group>;

export type MemberView = Viewed<Omit<GroupMember, "groupId">>;

export type MembershipView = Viewed<
  Pick<MembershipEvent, "recordedAt" | "action" | "deviceId" | "role" | "actor">
>;

export type AuditView = Viewed<AuditEntry>;

export const userView = (u: User): UserView => ({
  id: u.id,
  handle: u.handle,
  displayName: u.displayName,
  avatarUrl: u.avatarUrl,
  createdAt: u.createdAt.toISOString(),
});

export const deviceView = (d: Device | DeviceWithUser): DeviceView => ({
  id: d.id,
  userId: d.userId,
  userHandle: "userHandle" in d ? d.userHandle : null,
  status: d.status,
  publicKey: bytesToHex(d.publicKey),
  pendingPublicKey: d.pendingPublicKey ? bytesToHex(d.pendingPublicKey) : null,
  createdAt: d.createdAt.toISOString(),
  lastSeenAt: iso(d.lastSeenAt),
});

export const keyEventView = (e: DeviceKeyEvent): KeyEventView => ({
  eventId: e.eventId,
  deviceId: e.deviceId,
  kind: e.kind,
  publicKey: bytesToHex(e.publicKey),
  actor: e.actor,
  recordedAt: e.recordedAt.toISOString(),
});

export const peerView = (p: FederationPeer, b?: OutboxBacklog): PeerView => ({
  domain: p.domain,
  endpoint: p.endpoint,
  publicKey: bytesToHex(p.publicKey),
  status: p.status,
  source: p.source,
  lastSeenAt: iso(p.lastSeenAt),
  pending: b?.pending ?? 0,
  dead: b?.dead ?? 0,
  attempts: b?.attempts ?? 0,
  nextRetryAt: iso(b?.nextAttemptAt),
  oldestPendingAt: iso(b?.oldest),
  lastError: b?.lastError ?? null,
});

export const outboxView = (e: OutboxEntry): OutboxView => ({
  id: e.id,
  eventId: e.eventId,
  peerDomain: e.peerDomain,
  endpoint: e.endpoint,
  attempts: e.attempts,
  nextAttemptAt: e.nextAttemptAt.toISOString(),
  lastError: e.lastError,
  deadAt: iso(e.deadAt),
  createdAt: e.createdAt.toISOString(),
  body: e.body,
});

export const groupView = (g: Group): GroupView => ({
  id: g.id,
  ownerDeviceId: g.ownerDeviceId,
  relay: g.relay,
  memberCount: g.memberCount,
  createdAt: g.createdAt.toISOString(),
});

export const memberView = (m: GroupMember): MemberView => ({
  deviceId: m.deviceId,
  role: m.role,
  joinedAt: m.joinedAt.toISOString(),
});

export const membershipView = (e: MembershipEvent): MembershipView => ({
  recordedAt: e.recordedAt.toISOString(),
  action: e.action,
  deviceId: e.deviceId,
  role: e.role,
  actor: e.actor,
});

export const auditView = (a: AuditEntry): AuditView => ({
  ...a,
  recordedAt: a.recordedAt.toISOString(),
});

export function pageView<T, V>(page: Page<T>, view: (item: T) => V): Page<V> {
  return { items: page.items.map(view), nextCursor: page.nextCursor };
}
