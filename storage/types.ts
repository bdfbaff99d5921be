/**
 * The contract of CommuCat's shared storage module. The relay server, the admin console and the
 * operator CLI all use exactly this surface; nothing else touches the databases.
 *
 * Identifiers are strings chosen by clients or generated here (UUID v4 for users, events,
 * sessions). Binary keys are 32-byte Uint8Arrays. Times are Date objects.
 */

import type { GroupRole } from "../protocol/control.ts";

/** Roles a group member may hold (the protocol's, protocol/control.ts). */
export type { GroupRole };

export type DeviceStatus = "pending" | "active" | "revoked";
export type PeerStatus = "active" | "pending" | "blocked";

/** One page of a keyset-paginated listing; pass `nextCursor` back to read the next page. */
export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

export interface PageRequest {
  /** Opaque cursor from a previous page, or undefined for the first page. */
  cursor?: string | null;
  /** Page size, 1..500 (default 50). */
  limit?: number;
}

export interface User {
  id: string;
  handle: string;
  displayName: string | null;
  avatarUrl: string | null;
  createdAt: Date;
  updatedAt: Date;
}

export interface Device {
  id: string;
  userId: string;
  /** The active (approved) key; for a never-approved pending device this is its requested key. */
  publicKey: Uint8Array;
  status: DeviceStatus;
  /** A new key that awaits operator approval (rotation without auto-approve), or null. */
  pendingPublicKey: Uint8Array | null;
  createdAt: Date;
  updatedAt: Date;
  lastSeenAt: Date | null;
}

/** A device row joined with its owner, as listings show it. */
export interface DeviceWithUser extends Device {
  userHandle: string;
}

export type KeyEventKind =
  | "registered"
  | "pending"
  | "approved"
  | "rejected"
  | "revoked"
  | "rotated"
  | "rotation-pending";

export interface DeviceKeyEvent {
  eventId: string;
  deviceId: string;
  publicKey: Uint8Array;
  kind: KeyEventKind;
  /** Who caused it: "handshake", "cli", "console:<session>", … */
  actor: string;
  recordedAt: Date;
}

export interface SessionRecord {
  sessionId: string;
  userId: string;
  deviceId: string;
  pattern: "XK" | "IK";
  protocolVersion: number;
  remoteAddr: string | null;
  nodeId: string;
  createdAt: Date;
  ttlSeconds: number;
}

export interface RelayEnvelope {
  /** Enqueue order; FIFO per device. Decimal string of a bigint. */
  envelopeId: string;
  deviceId: string;
  channelId: number;
  /** The encoded CCP-1 frame as it was enqueued (its sequence is replaced on replay). */
  payload: Uint8Array;
  enqueuedAt: Date;
  expiresAt: Date;
  /** How many times it has been handed to a connection. */
  attempts: number;
  /** Recipient sequence it was last sent under, or null if never sent. */
  lastSequence: number | null;
  /** The device that sent it (`device@domain` when federated); null for rows queued before
   * senders were recorded. */
  sender: string | null;
}

/** One envelope to enqueue. */
export interface EnqueueItem {
  deviceId: string;
  channelId: number;
  /** The encoded CCP-1 frame. */
  payload: Uint8Array;
  /** The authenticated sender (ccp1.md §4.2). */
  sender?: string | null;
  /** Write it as already handed to this session under this sequence (awaiting its ACK). */
  claim?: { sessionId: string; sequence: number };
  /** A frame from a peer: the origin's event id, reported back when the recipient ACKs it. */
  originEvent?: string | null;
}

/**
 * A claimed envelope as the replay needs it (`RelayRepo.claimForReplay`): what to send and who
 * sent it, nothing else read back.
 */
export interface ReplayEnvelope {
  envelopeId: string;
  /** The encoded CCP-1 frame as it was enqueued (its sequence is replaced on replay). */
  payload: Uint8Array;
  sender: string | null;
}

/** Options of `RelayRepo.claim`; without them a claim records no sequences. */
export interface ClaimOptions {
  /**
   * Record the recipient sequences in the claim itself, so no `markSent` round trip is needed:
   * the i-th claimed envelope in FIFO order (i from 0) gets `lastSequence = firstSequence + i`.
   * The caller then sends envelope i under exactly that sequence and uses none of the numbers
   * `firstSequence … firstSequence + limit - 1` for anything else. Numbers left unused (fewer
   * envelopes claimed than `limit`, an envelope the caller skips) are gaps in the connection's
   * sequences, which are allowed (ccp1.md: monotonic, not contiguous). The block must fit in
   * u32: `firstSequence + limit - 1 ≤ 4294967295`, else `InvalidValue("first sequence")`.
   */
  firstSequence?: number;
}

/** Options of `RelayRepo.ack`. */
export interface AckOptions {
  /** false: return `RelayAck`s (no payloads or timestamps), which are cheaper to read back.
   * Default true: the deleted `RelayEnvelope`s. */
  returnPayloads?: boolean;
  /**
   * The envelope each sequence was claimed as, in the same order (`envelopeIds[i]` went out
   * under `sequences[i]`), when the caller still knows them: the statement then finds the rows
   * by primary key instead of reading every claim of the session and filtering by sequence (a
   * replaying session holds up to `max_inflight` claims). A row is deleted only when it is that
   * envelope, still claimed by this session under that sequence, so a stale id deletes nothing.
   */
  envelopeIds?: string[];
}

/** One envelope deleted by `ack(…, { returnPayloads: false })`. */
export interface RelayAck {
  envelopeId: string;
  channelId: number;
  /** The recipient sequence it was sent and acknowledged under. */
  sequence: number;
  /** When it was enqueued and how often it was handed out (frame analytics). */
  enqueuedAt: Date;
  attempts: number;
  /** A frame from a peer: the origin's event id and the remote sender (`device@domain`). */
  origin?: { eventId: string; sender: string };
}

export interface Group {
  id: string;
  ownerDeviceId: string;
  relay: boolean;
  createdAt: Date;
  memberCount: number;
}

export interface GroupMember {
  groupId: string;
  deviceId: string;
  role: GroupRole;
  joinedAt: Date;
}

export interface MembershipEvent {
  id: string;
  groupId: string;
  deviceId: string;
  action: "added" | "removed" | "role-changed";
  role: GroupRole | null;
  /** The role before a role change (null for an addition, and for events before 017). */
  previousRole: GroupRole | null;
  actor: string;
  recordedAt: Date;
}

export interface FederationPeer {
  domain: string;
  endpoint: string;
  publicKey: Uint8Array;
  status: PeerStatus;
  /** "config" for static peers from [federation], "database" for federation_peer rows. */
  source: "config" | "database";
  lastSeenAt: Date | null;
  createdAt: Date | null;
}

export interface OutboxEntry {
  id: string;
  eventId: string;
  peerDomain: string;
  endpoint: string;
  /** The signed event as JSON, ready to POST. */
  body: unknown;
  attempts: number;
  nextAttemptAt: Date;
  lastError: string | null;
  deliveredAt: Date | null;
  /** When it was given up (`markDead`): never retried again, kept with its last error. */
  deadAt: Date | null;
  createdAt: Date;
}

/** Undelivered outbox entries of one peer. */
export interface OutboxBacklog {
  peerDomain: string;
  /** Entries still being retried (dead ones excluded). */
  pending: number;
  /** Creation time of the oldest pending entry, or null when none is pending. */
  oldest: Date | null;
  /** The most recent error among the peer's undelivered entries, dead ones included. */
  lastError: string | null;
  /** Entries given up with `markDead`. */
  dead: number;
  /** The soonest next attempt among pending entries (the backoff's next retry), or null. */
  nextAttemptAt: Date | null;
  /** The most attempts any pending entry has made (0 when none failed yet). */
  attempts: number;
}

export interface AuditEntry {
  id: string;
  /** Operator identity: "console:<session id>", "cli:<os user>". */
  actor: string;
  action: string;
  target: string;
  before: unknown;
  after: unknown;
  recordedAt: Date;
}

/** What a device's handshake may do to its registration (ccp1.md §3). */
export type HandshakeRegistration =
  | { outcome: "accepted"; device: Device; user: User }
  | { outcome: "registered"; device: Device; user: User; event: DeviceKeyEvent }
  | { outcome: "rotated"; device: Device; user: User; event: DeviceKeyEvent }
  | { outcome: "pending"; device: Device; user: User; event: DeviceKeyEvent | null }
  | { outcome: "revoked"; device: Device; user: User };

/** Why a pairing was refused (docs/PROTOCOL.md §11; storage/errors.ts PairingRefused). */
export type PairingRefusal =
  /** No open code of the user matches. */
  | "wrong-code"
  /** The code matched but its lifetime is over. */
  | "expired"
  /** The code matched but a device used it already. */
  | "used"
  /** The code matched but too many wrong attempts burned it. */
  | "burned"
  /** The user already has its limit of devices. */
  | "device-limit"
  /** The user does not exist, or the device id exists already. */
  | "not-pairable";

/** One pairing code as storage keeps it (the code itself never is: only its digest). */
export interface PairingCode {
  codeId: string;
  userId: string;
  /** The device that asked for the code. */
  issuedBy: string;
  createdAt: Date;
  expiresAt: Date;
  /** Wrong attempts counted against it while it was open. */
  attempts: number;
  usedAt: Date | null;
  /** The device that paired with it. */
  usedBy: string | null;
  burnedAt: Date | null;
  state: "open" | "used" | "expired" | "burned";
}

/** A device of a user's own list: who paired it, if a device did. */
export interface UserDevice extends Device {
  pairedBy: string | null;
}

/** Pairing codes, who paired whom, and the per-user device limit. */
export interface PairingRepo {
  /**
   * A new code for `userId`, asked for by its active device `deviceId`, open `ttlSeconds`.
   * At most `maxOpen` codes stay open per user: the oldest open ones are burned past it.
   */
  issue(input: {
    userId: string;
    deviceId: string;
    ttlSeconds: number;
    maxOpen: number;
  }): Promise<{ code: string; entry: PairingCode }>;
  /** Codes newest first, by user, issuing device or using device. */
  list(
    filter: { userId?: string; issuedBy?: string; usedBy?: string; limit?: number },
  ): Promise<PairingCode[]>;
  /** Every device of the user (any status), oldest first, with who paired it. */
  devicesOf(userId: string): Promise<UserDevice[]>;
  /** The device that paired `deviceId`, or null. */
  pairedBy(deviceId: string): Promise<string | null>;
  /** How many devices (pending or active) the user holds. */
  countDevices(userId: string): Promise<number>;
  /** The operator's device limit of the user, or null for [limits] max_devices_per_user. */
  deviceLimit(userId: string): Promise<number | null>;
  setDeviceLimit(
    userId: string,
    limit: number | null,
    actor: string,
    audit?: AuditNote,
  ): Promise<void>;
}

/**
 * An operator audit entry a repository writes in the same transaction as the change it
 * records (so the change and its audit row commit or roll back together). The repository
 * fills in the target and the before/after state; `actor` is the operator.
 */
export interface AuditNote {
  actor: string;
  action: string;
}

export interface UserRepo {
  /** Create a user; with `audit`, the audit entry is written in the same transaction. */
  create(
    input: { handle: string; displayName?: string | null; avatarUrl?: string | null; id?: string },
    audit?: AuditNote,
  ): Promise<User>;
  get(id: string): Promise<User | null>;
  getByHandle(handle: string): Promise<User | null>;
  update(
    id: string,
    changes: { displayName?: string | null; avatarUrl?: string | null },
  ): Promise<User>;
  list(filter: { search?: string } & PageRequest): Promise<Page<User>>;
}

export interface DeviceRepo {
  /** Register a device; writes its key event in the same transaction. */
  register(
    input: { id: string; userId: string; publicKey: Uint8Array; status: "active" | "pending" },
    actor: string,
    audit?: AuditNote,
  ): Promise<{ device: Device; event: DeviceKeyEvent }>;
  get(id: string): Promise<Device | null>;
  /**
   * Approve a pending device or its pending key; writes a key event. With `audit` (here and
   * below), an operator audit entry (target `device:<id>`, before/after status and keys) is
   * written in the same transaction.
   */
  approve(
    id: string,
    actor: string,
    audit?: AuditNote,
  ): Promise<{ device: Device; event: DeviceKeyEvent }>;
  /** Reject a pending device (status becomes revoked) or drop its pending key. */
  reject(
    id: string,
    actor: string,
    audit?: AuditNote,
  ): Promise<{ device: Device; event: DeviceKeyEvent }>;
  revoke(
    id: string,
    actor: string,
    audit?: AuditNote,
  ): Promise<{ device: Device; event: DeviceKeyEvent }>;
  /** Replace an active device's key (auto-approved rotation or operator rotation). */
  rotateKey(
    id: string,
    publicKey: Uint8Array,
    actor: string,
    audit?: AuditNote,
  ): Promise<{ device: Device; event: DeviceKeyEvent }>;
  /**
   * Resolve a device for a handshake, per ccp1.md §3, atomically. Throws PairingRefused when a
   * pairing code is refused or the user is at its device limit (nothing registered; a wrong
   * attempt stays counted).
   */
  resolveForHandshake(input: {
    deviceId: string;
    publicKey: Uint8Array;
    user: { id?: string; handle?: string; displayName?: string; avatarUrl?: string };
    autoApprove: boolean;
    /**
     * HELLO's pairing code: a new device id joins the named user, active at once, when the code
     * is one of the user's open codes (docs/PROTOCOL.md "Pairing a new device").
     */
    pairingCode?: string;
    /** The default device limit per user ([limits] max_devices_per_user; default unlimited). */
    maxDevicesPerUser?: number;
    /**
     * Called (and awaited; it may throw to refuse) only when the device is not a known active
     * device presenting its registered key, before anything is written: where per-address
     * registration limits are checked without costing the common reconnect anything.
     */
    beforeChange?: () => Promise<void>;
  }): Promise<HandshakeRegistration>;
  touch(id: string): Promise<void>;
  /** Which of these devices are revoked (reconciliation: cut sessions a lost event missed). */
  revokedAmong(ids: string[]): Promise<string[]>;
  /** Newest first, keyset-paginated; every given filter applies (they are ANDed). */
  list(filter: DeviceListFilter & PageRequest): Promise<Page<DeviceWithUser>>;
  countByStatus(): Promise<Record<DeviceStatus, number>>;
  /**
   * How many devices wait for an operator: pending ones plus active ones with a pending new
   * key — exactly what `list({ awaitingApproval: true })` lists.
   */
  countAwaitingApproval(): Promise<number>;
}

/** Filters of `DeviceRepo.list`. */
export interface DeviceListFilter {
  status?: DeviceStatus;
  userId?: string;
  /** Case-insensitive prefix of the device id or the owner's handle. */
  search?: string;
  /**
   * true: only devices that wait for an operator's decision — status `pending`, or active with
   * a new key awaiting approval (`pendingPublicKey` set). false or absent: no such filter.
   */
  awaitingApproval?: boolean;
}

export interface KeyEventRepo {
  list(
    filter: { deviceId?: string; from?: Date; to?: Date } & PageRequest,
  ): Promise<Page<DeviceKeyEvent>>;
  /** Every event of a device in time order, for export. */
  export(deviceId: string | null, from?: Date, to?: Date): Promise<DeviceKeyEvent[]>;
}

/**
 * One key event as an archive line (JSON Lines): the row's columns with the public key in hex
 * and the time in UTC with microseconds, so a restore puts back exactly what was archived.
 */
export interface ArchivedKeyEvent {
  event_id: string;
  device_id: string;
  kind: KeyEventKind;
  public_key: string;
  actor: string;
  recorded_at: string;
}

/** One archived chunk as the database indexes it (the manifest holds the same fields). */
export interface ArchiveChunkRecord {
  /** The target's identity (directory path or s3://bucket/prefix at endpoint), no secrets. */
  target: string;
  seq: number;
  /** Object name inside the target, e.g. key-events/0000000001.jsonl. */
  object: string;
  /** recorded_at of the first and last event in the chunk. */
  firstAt: string;
  lastAt: string;
  events: number;
  /** SHA-256 of the chunk's bytes, hex. */
  sha256: string;
  /** SHA-256(previous chain ‖ sha256), hex: the hash chain's value after this chunk. */
  chain: string;
  archivedAt: Date;
}

/** The archive's bookkeeping in the database (storage/archive/ does the moving). */
export interface KeyEventArchiveRepo {
  /**
   * Runs `fn` holding the retention job's advisory lock on its own connection, or returns
   * `{ locked: false }` at once when another process holds it.
   */
  withJobLock<T>(fn: () => Promise<T>): Promise<{ locked: true; value: T } | { locked: false }>;
  /** Up to `limit` events recorded before `cutoff` (never restored ones), oldest first. */
  due(cutoff: Date, limit: number): Promise<ArchivedKeyEvent[]>;
  /**
   * Records an archived chunk and deletes exactly its events, in one transaction. Returns how
   * many rows were deleted.
   */
  commitChunk(
    chunk: Omit<ArchiveChunkRecord, "archivedAt">,
    eventIds: string[],
    devices: Map<string, number>,
  ): Promise<number>;
  /** Deletes restored events whose restore is older than `cutoff` (they are archived already). */
  purgeRestored(cutoff: Date): Promise<number>;
  /** Indexed chunks, newest first, optionally of one target only. */
  chunks(filter?: { target?: string; limit?: number }): Promise<ArchiveChunkRecord[]>;
  /** The chunks holding events of one device, oldest first. */
  chunksForDevice(deviceId: string, limit?: number): Promise<ArchiveChunkRecord[]>;
  /**
   * Puts archived events back (marked restored). Events already present, or of devices that no
   * longer exist, are skipped and counted.
   */
  restore(
    events: ArchivedKeyEvent[],
  ): Promise<{ restored: number; present: number; unknownDevice: number }>;
}

/** Counts of one hour (or day) for one frame type, conversation kind and peer domain. */
export interface FrameRollup {
  bucket: Date;
  /** Frame type name, or "*" (all types). */
  frameType: string;
  /** "direct", "group" or "*". */
  conversation: string;
  /** "" for this domain, a remote domain, or "*" when not grouped by peer. */
  peerDomain: string;
  sent: number;
  delivered: number;
  queued: number;
  expired: number;
  redelivered: number;
}

/** What one node adds to an hour's rollup. */
export type FrameRollupDelta = FrameRollup;

/** What one node adds to an hour's latency histogram slot. */
export interface LatencyDelta {
  bucket: Date;
  slot: number;
  count: number;
  sumMs: number;
}

/** Frame analytics rollups (server/analytics.ts feeds them). */
export interface AnalyticsRepo {
  /** Adds counts to the hourly rows (creating them), in one transaction. */
  add(rows: FrameRollupDelta[], latency: LatencyDelta[]): Promise<void>;
  /** Hours or days in [from, to), summed over the dimensions not in `by` (those read "*"). */
  rollups(filter: {
    granularity: "hour" | "day";
    from: Date;
    to: Date;
    by?: ("type" | "conversation" | "peer")[];
  }): Promise<FrameRollup[]>;
  /** Latency histogram slots per hour or day in [from, to). */
  latency(filter: { granularity: "hour" | "day"; from: Date; to: Date }): Promise<
    { bucket: Date; slots: Map<number, number>; sumMs: number }[]
  >;
  /** Deletes rollups of hours before `before`. */
  purge(before: Date): Promise<number>;
}

/** Options of {@link SessionRepo.record}. */
export interface SessionRecordOptions {
  /**
   * A handshake just completed: in the same statement also set the device's last_seen_at,
   * release the claims earlier sessions of the device left on its relay envelopes, and tell
   * (`queued` in the result) whether the device has any envelope in the relay queue.
   */
  opening?: boolean;
}

/** What {@link SessionRepo.open} tells about an admitted session. */
export interface SessionOpened {
  /** The device has at least one envelope in the relay queue. */
  queued: boolean;
  /** The device's user as stored when the row was written. */
  user: Pick<User, "id" | "handle" | "displayName" | "avatarUrl">;
}

export interface SessionRepo {
  record(
    s: Omit<SessionRecord, "createdAt">,
    options?: SessionRecordOptions,
  ): Promise<SessionRecord & { queued?: boolean }>;
  /**
   * Admits a completed handshake in one statement: only while the device is active with
   * `publicKey` (checked under the device row's lock, so a revocation or key change committed
   * before it is always seen) it writes the session row (for the device's stored user, not
   * `s.userId`), sets the device's last_seen_at, releases the claims earlier sessions of the
   * device left on its relay envelopes, and tells whether anything is queued. Null, with
   * nothing written, when the device is not active with that key.
   */
  open(
    s: Omit<SessionRecord, "createdAt" | "userId">,
    publicKey: Uint8Array,
  ): Promise<SessionOpened | null>;
  listRecent(page: PageRequest): Promise<Page<SessionRecord>>;
  byDevice(deviceId: string, page: PageRequest): Promise<Page<SessionRecord>>;
}

/** An envelope deleted because it expired unread (`RelayRepo.expire`). */
export interface ExpiredEnvelope {
  envelopeId: string;
  /** The recipient that never acknowledged it. */
  deviceId: string;
  channelId: number;
  enqueuedAt: Date;
  expiresAt: Date;
  /** The device that sent it (relay_queue.sender), or null (unknown, or a server notice). */
  sender: string | null;
}

export interface RelayRepo {
  /** One row per recipient; returns the envelope ids in order. */
  enqueue(items: EnqueueItem[], ttlSeconds: number): Promise<string[]>;
  /** Mark up to `limit` (≤128) unclaimed, unexpired envelopes of a device as claimed by a
   * session, oldest first, incrementing their attempt count. With `firstSequence` it also
   * records the sequence each is sent under (see ClaimOptions; then markSent is not needed). */
  claim(
    deviceId: string,
    sessionId: string,
    limit?: number,
    options?: ClaimOptions,
  ): Promise<RelayEnvelope[]>;
  /**
   * `claim` with `firstSequence` (envelope i of the FIFO is recorded as sent under
   * `firstSequence + i`), reading back only ids, payloads and senders: the replay's claim.
   */
  claimForReplay(
    deviceId: string,
    sessionId: string,
    limit: number,
    firstSequence: number,
  ): Promise<ReplayEnvelope[]>;
  /** Record the recipient sequence each claimed envelope was sent under. */
  markSent(
    sessionId: string,
    sent: { envelopeId: string; sequence: number }[],
  ): Promise<void>;
  /** Delete the envelopes a session sent under these sequences and advance the device's
   * `inbox_offset` per channel; returns what was deleted (in envelope order). */
  ack(
    deviceId: string,
    sessionId: string,
    sequences: number[],
    options?: AckOptions & { returnPayloads?: true },
  ): Promise<RelayEnvelope[]>;
  /** The same, returning only ids, channels and sequences (the fast path). */
  ack(
    deviceId: string,
    sessionId: string,
    sequences: number[],
    options: AckOptions & { returnPayloads: false },
  ): Promise<RelayAck[]>;
  ack(
    deviceId: string,
    sessionId: string,
    sequences: number[],
    options: AckOptions,
  ): Promise<RelayEnvelope[] | RelayAck[]>;
  /** Release claims so the envelopes are replayed again: by session, or all of a device. */
  requeue(by: { sessionId?: string; deviceId?: string }): Promise<number>;
  /** Delete expired envelopes; returns how many. */
  purgeExpired(now?: Date): Promise<number>;
  depth(deviceId: string): Promise<RelayDepth>;
  totalDepth(): Promise<number>;
  /** Which of these devices have unclaimed, unexpired envelopes waiting (reconciliation). */
  waiting(deviceIds: string[]): Promise<string[]>;
  /**
   * Deletes up to `limit` expired envelopes, oldest expiry first, and returns what each was
   * (never the payload). `notices` may turn them into envelopes to queue (for their senders,
   * server/expiry_notices.ts), written in the same transaction as the deletion.
   */
  expire(
    now?: Date,
    limit?: number,
    notices?: (expired: ExpiredEnvelope[]) => {
      items: { deviceId: string; channelId: number; payload: Uint8Array }[];
      ttlSeconds: number;
    },
  ): Promise<{ expired: ExpiredEnvelope[]; queued: number }>;
}

/** A device's relay queue (unexpired envelopes); the breakdown is optional for fakes. */
export interface RelayDepth {
  depth: number;
  oldest: Date | null;
  /** Handed to a connection (claimed), not yet acknowledged. */
  inFlight?: number;
  /** Handed out more than once (attempts > 1). */
  redelivered?: number;
}

export interface OffsetRepo {
  store(entityId: string, channelId: number, envelopeId: string): Promise<void>;
  read(entityId: string, channelId: number): Promise<string | null>;
  list(entityId: string): Promise<{ channelId: number; envelopeId: string; updatedAt: Date }[]>;
}

export interface GroupRepo {
  create(
    input: { id?: string; ownerDeviceId: string; relay: boolean },
    actor: string,
  ): Promise<Group>;
  get(id: string): Promise<Group | null>;
  list(filter: { search?: string } & PageRequest): Promise<Page<Group>>;
  /** Add or update a member; a request for "owner" becomes "admin". */
  addMember(
    groupId: string,
    deviceId: string,
    role: GroupRole,
    actor: string,
  ): Promise<GroupMember>;
  /**
   * Remove a member; false when it was not one. With `by` (the acting device) the role rules
   * apply (storage/group_roles.ts); without, an operator acts. The last owner is removed only
   * when `successor` is named, who becomes an owner in the same transaction (Conflict else).
   * With `audit`, the operator audit entry is written in the same transaction.
   */
  removeMember(
    groupId: string,
    deviceId: string,
    actor: string,
    opts?: { by?: string; successor?: string; audit?: AuditNote },
  ): Promise<boolean>;
  /**
   * Set a device's role under the role rules (adding it when it is not a member): owners may
   * grant "owner" (co-owners), an admin's "owner" becomes "admin", the last owner cannot be
   * demoted. `by` is the acting device; absent, an operator acts. Audited with the old role
   * in the membership trail; with `audit`, an operator audit entry is written in the same
   * transaction when the role changed.
   */
  setRole(
    groupId: string,
    deviceId: string,
    role: GroupRole,
    actor: string,
    opts?: { by?: string; audit?: AuditNote },
  ): Promise<{ member: GroupMember; previous: GroupRole | null }>;
  /**
   * Make `to` an owner and `from` (an owner) an admin — or remove `from` with `leave` — in one
   * transaction, under the role rules when `by` is given; with `audit`, the operator audit
   * entry is written in that transaction too.
   */
  transferOwnership(
    groupId: string,
    from: string,
    to: string,
    actor: string,
    opts?: { by?: string; leave?: boolean; audit?: AuditNote },
  ): Promise<void>;
  /** Members: device ids, and `@<user id>` for users on the roster. */
  roster(groupId: string): Promise<GroupMember[]>;
  /**
   * The role of a device: its own row's or, for an active device, its user's (`@<user id>`),
   * the higher; for `@<user id>`, that row's. Null when neither is on the roster.
   */
  role(groupId: string, deviceId: string): Promise<GroupRole | null>;
  /**
   * Every group a device belongs to, by group id: its own roster rows and, for an active
   * device, its user's (`deviceId` is then `@<user id>`, as on the roster) — a group holding
   * both appears twice, the device's own row first.
   */
  groupsOf(deviceId: string): Promise<GroupMember[]>;
  auditTrail(groupId: string, page: PageRequest): Promise<Page<MembershipEvent>>;
}

export interface PeerRepo {
  upsert(
    input: { domain: string; endpoint: string; publicKey: Uint8Array; status?: PeerStatus },
    actor: string,
  ): Promise<FederationPeer>;
  get(domain: string): Promise<FederationPeer | null>;
  /** Change status; refuses transitions that are not allowed with a typed error. */
  setStatus(domain: string, status: PeerStatus, actor: string): Promise<FederationPeer>;
  /** Database peers merged with the static peers from config (static ones win). */
  list(staticPeers?: { domain: string; endpoint: string; publicKey: Uint8Array }[]): Promise<
    FederationPeer[]
  >;
  touch(domain: string): Promise<void>;
}

export interface OutboxRepo {
  enqueue(
    input: { eventId: string; peerDomain: string; endpoint: string; body: unknown },
  ): Promise<OutboxEntry>;
  /**
   * Claims (leases) up to `limit` due entries, in each peer's queue order: an entry only with
   * every live entry queued before it for the same peer (one waiting for its retry or leased
   * elsewhere holds back the entries after it; a dead one does not).
   */
  claimDue(limit: number, now?: Date): Promise<OutboxEntry[]>;
  /** Hands claimed entries back unattempted: due again at once, behind their peer's earlier ones. */
  release(ids: string[]): Promise<void>;
  markDelivered(id: string): Promise<void>;
  /** Record a failure and schedule the next attempt with exponential backoff. */
  markFailed(id: string, error: string): Promise<OutboxEntry>;
  /**
   * Record a final failure: the entry will never be delivered (e.g. the peer keeps rejecting
   * it). It counts the attempt like markFailed, keeps `error` as its last error, and is never
   * claimed again. Marking a dead entry again keeps its first `deadAt`. NotFound for an unknown
   * id, Conflict for an entry already delivered.
   */
  markDead(id: string, error: string): Promise<OutboxEntry>;
  /** Per peer with undelivered entries: pending (live) count, oldest, last error, dead count. */
  backlog(): Promise<OutboxBacklog[]>;
  /**
   * "Retry now": every pending (not delivered, not dead) entry of the peer becomes due at once;
   * returns how many. The audit entry (`peer.retry-now`) is written in the same transaction.
   */
  retryNow(peerDomain: string, actor: string): Promise<number>;
  /** Dead entries (given up), newest first, of one peer or of all; at most `limit` (1..500). */
  listDead(filter: { peerDomain?: string; limit?: number }): Promise<OutboxEntry[]>;
  /** One entry by id, or null. */
  get(id: string): Promise<OutboxEntry | null>;
  /**
   * Replays a dead entry: it is pending again, due now, with its attempts reset. NotFound for
   * an unknown id, Conflict when it is not dead. Audited (`outbox.replay`) in the same
   * transaction.
   */
  replay(id: string, actor: string): Promise<OutboxEntry>;
}

/** A peer's report that one of its devices acknowledged frames this server sent it. */
export interface RemoteAckInput {
  /** The peer that reported (the event's origin). */
  peerDomain: string;
  /** The peer's device that acknowledged: `device@peer`. */
  recipient: string;
  /** The local device that sent the frames, qualified: `device@ourdomain`. */
  sender: string;
  channel: number;
  /** Our outbox event ids (1..256, distinct). */
  eventIds: string[];
  /** When the peer says its device acknowledged them. */
  ackedAt: Date;
}

/** What `RemoteOffsetRepo.record` did: all recorded, or nothing and why. */
export type RemoteAckResult =
  | { ok: true; fresh: string[]; already: number; queued: number }
  | { ok: false; eventId: string | null; reason: string };

/** The last event a peer's device acknowledged on a channel, and how many it acknowledged. */
export interface RemoteOffset {
  peerDomain: string;
  entityId: string;
  channelId: number;
  lastEventId: string;
  ackedFrames: number;
  ackedAt: Date;
  updatedAt: Date;
}

/** inbox_offset across domains, on the origin's side (storage/repos/remote_offsets.ts). */
export interface RemoteOffsetRepo {
  /**
   * Checks every event id against the outbox (sent to `peerDomain`, from `sender`, for
   * `recipient`, on `channel`, a frame and not an offset report) and, only when all pass, marks
   * the new ones acknowledged, raises `remote_inbox_offset` and queues the receipts `receipts`
   * builds, in one transaction.
   */
  record(
    input: RemoteAckInput,
    receipts: (fresh: { eventId: string; createdAt: Date }[]) => {
      items: { deviceId: string; channelId: number; payload: Uint8Array }[];
      ttlSeconds: number;
    },
  ): Promise<RemoteAckResult>;
  /** Remote offsets, most recently changed first (at most `limit`, 1..500, default 100). */
  list(
    filter?: { peerDomain?: string; entityId?: string; limit?: number },
  ): Promise<RemoteOffset[]>;
}

/**
 * Keys that may be used once within a time window (`idempotency` table), shared by every process
 * on the database: federation replay protection across nodes, and any "do this once" guard.
 * Time is the database's clock, so nodes with skewed clocks still agree on expiry.
 */
export interface IdempotencyRepo {
  /**
   * Claim `(scope, key)` for `ttlSeconds` (integer, 1 s .. 10 years). Resolves true when this
   * call claimed it (absent, or its previous claim has expired), false when an unexpired claim
   * exists. Atomic: of concurrent claims of one key, across processes, exactly one gets true.
   * Scope is 1..256 and key 1..512 characters without NUL.
   */
  claim(scope: string, key: string, ttlSeconds: number): Promise<boolean>;
  /** Forget a claim (e.g. the work it guarded failed and may be retried); absent is fine. */
  release(scope: string, key: string): Promise<void>;
  /** Delete claims that expired at or before `now` (default: the database's now); returns how
   * many. */
  purgeExpired(now?: Date): Promise<number>;
}

export interface AuditRepo {
  append(
    entry: { actor: string; action: string; target: string; before?: unknown; after?: unknown },
  ): Promise<AuditEntry>;
  list(
    filter: { actor?: string; action?: string; target?: string } & PageRequest,
  ): Promise<Page<AuditEntry>>;
}

/** Frames and control events between nodes. */
export type ControlEvent =
  | { kind: "device-approved"; deviceId: string }
  | { kind: "device-revoked"; deviceId: string }
  /** The device's key changed (its owner rotated it): what nodes know of its key is stale. */
  | { kind: "device-key-changed"; deviceId: string }
  | { kind: "member-removed"; groupId: string; deviceId: string }
  | { kind: "peer-status"; domain: string; status: PeerStatus };

export interface Presence {
  entity: string;
  state: "online" | "offline";
  expires_at: string;
  user: { id: string; handle: string; display_name: string | null; avatar_url: string | null };
}

export interface Route {
  nodeId: string;
  sessionId: string;
}

/**
 * A leaky bucket (GCRA): up to `burst` units at once, one unit drains every `intervalMs`
 * (so a steady `1000 / intervalMs` units per second).
 */
export interface RateRule {
  burst: number;
  intervalMs: number;
}

/** What a rate check answered: allowed, or how long until the units would be. */
export interface RateVerdict {
  allowed: boolean;
  /** Milliseconds until the same request would be allowed (0 when allowed). */
  retryAfterMs: number;
}

/** One entry of an event stream (the bus's second chance). */
export interface StreamEvent {
  /** Stream position, increasing within a stream (`<ms>-<n>`). */
  id: string;
  message: Uint8Array;
}

/**
 * What a running node publishes about itself every few seconds (`setNodeHeartbeat`); it
 * expires when the node stops publishing, so the list shows the nodes that are up.
 */
export interface NodeHeartbeat {
  nodeId: string;
  /** Where it listens (its CCP-1 and HTTP addresses). */
  address: string;
  version: string;
  /** RFC 3339 start time. */
  startedAt: string;
  connections: number;
  framesPerSecond: number;
  /** RFC 3339 time of this heartbeat. */
  at: string;
}

/** The outcome of binding a channel id to a conversation (ccp1.md §4.1). */
export type BindOutcome =
  | { outcome: "bound" }
  | { outcome: "already" }
  | { outcome: "taken"; conversationId: string }
  | { outcome: "full"; count: number };

/**
 * Conversation routes shared by every node (ccp1.md §4.1): each device's channel bindings
 * (channel id → conversation id), the conversation records (member sets) and, per conversation,
 * the devices that joined it. Every key lives `ttlSeconds` after its last use.
 */
export interface RouteStore {
  /** The device's bindings: channel id → conversation id. */
  bindings(deviceId: string): Promise<Map<number, string>>;
  /**
   * Binds `channel` to `conversationId` for the device (and adds the device to the
   * conversation's joined set) unless the channel is bound to another conversation or the
   * device already holds `maxBindings` bindings. Atomic.
   */
  bind(
    deviceId: string,
    channel: number,
    conversationId: string,
    maxBindings: number,
    ttlSeconds: number,
  ): Promise<BindOutcome>;
  /** Removes the binding (and the device from the joined set); the conversation id it had. */
  unbind(deviceId: string, channel: number): Promise<string | null>;
  /** Extends the lifetime of the device's bindings. */
  touchBindings(deviceId: string, ttlSeconds: number): Promise<void>;
  /** Stores a conversation record (opaque text), or extends its lifetime. */
  putConversation(conversationId: string, record: string, ttlSeconds: number): Promise<void>;
  /** The records of these conversations, null where missing or expired. */
  getConversations(conversationIds: string[]): Promise<(string | null)[]>;
  /** The devices that joined each of these conversations. */
  joinedOf(conversationIds: string[]): Promise<string[][]>;
}

/** Redis or in-memory; nothing durable lives here. Failures throw RedisFailure. */
export interface EphemeralStore extends RouteStore {
  readonly kind: "redis" | "memory";
  setPresence(deviceId: string, presence: Presence, ttlSeconds: number): Promise<void>;
  getPresence(deviceId: string): Promise<Presence | null>;
  setRoute(deviceId: string, route: Route, ttlSeconds: number): Promise<void>;
  getRoute(deviceId: string): Promise<Route | null>;
  /** Delete the route only if it still names this session. */
  clearRoute(deviceId: string, sessionId: string): Promise<void>;
  /** A session attached: {@link setRoute} and {@link setPresence} in one command. */
  attachSession(
    deviceId: string,
    route: Route,
    presence: Presence,
    ttlSeconds: number,
  ): Promise<void>;
  /**
   * A session ended: {@link clearRoute} (only while it names `sessionId`) and
   * {@link setPresence} in one command.
   */
  detachSession(
    deviceId: string,
    sessionId: string,
    presence: Presence,
    ttlSeconds: number,
  ): Promise<void>;
  /**
   * Set the short-lived interrupt key `interrupt:{device}` (ccp1.md §6). Live connections end on
   * the control event published with it; every node also reads the keys of the devices it holds
   * every 2 s (server/reconcile.ts) and cuts sessions older than the key, so a lost event still
   * takes effect. The device's next handshake is refused by its stored status.
   */
  setInterrupt(deviceId: string, reason: string, ttlSeconds: number): Promise<void>;
  getInterrupt(deviceId: string): Promise<string | null>;
  /** The interrupt reasons of several devices at once (null where none is set). */
  getInterrupts(deviceIds: string[]): Promise<(string | null)[]>;
  publish(channel: string, message: Uint8Array): Promise<void>;
  /** Subscribe to a bus channel; returns an unsubscribe function. */
  subscribe(
    channel: string,
    onMessage: (message: Uint8Array) => void,
  ): Promise<() => Promise<void>>;
  /** Publishes a control event and appends it to the control stream (CONTROL_STREAM_LENGTH
   * entries kept), so a node that missed the message finds it there. */
  publishControl(event: ControlEvent): Promise<void>;
  subscribeControl(onEvent: (event: ControlEvent) => void): Promise<() => Promise<void>>;
  /**
   * Takes `cost` units from the bucket named `key` (shared by every store on the same Redis
   * or hub). Cost 0 only checks whether one unit would be allowed now and changes nothing; a
   * cost above the burst takes the whole burst.
   */
  consumeRate(key: string, rule: RateRule, cost: number): Promise<RateVerdict>;
  /** Appends to an event stream that keeps about its last `maxLength` entries; returns the id. */
  appendEvent(stream: string, message: Uint8Array, maxLength: number): Promise<string>;
  /** Up to `count` entries after position `after` ("0" for the oldest kept), oldest first. */
  readEvents(stream: string, after: string, count: number): Promise<StreamEvent[]>;
  /** The position of the newest entry ("0" when the stream is empty or gone). */
  lastEventId(stream: string): Promise<string>;
  /** Publish this node's heartbeat; it lives `ttlSeconds` unless renewed. */
  setNodeHeartbeat(heartbeat: NodeHeartbeat, ttlSeconds: number): Promise<void>;
  /** Live heartbeats of every node sharing this store, by node id. */
  listNodeHeartbeats(): Promise<NodeHeartbeat[]>;
  ping(): Promise<void>;
  close(): Promise<void>;
}

export interface Readiness {
  ok: boolean;
  postgres: { ok: boolean; kind: "postgres" | "pglite"; error?: string };
  redis: { ok: boolean; kind: "redis" | "memory"; error?: string };
}

export interface Storage {
  readonly dbKind: "postgres" | "pglite";
  users: UserRepo;
  devices: DeviceRepo;
  keyEvents: KeyEventRepo;
  keyEventArchive: KeyEventArchiveRepo;
  analytics: AnalyticsRepo;
  sessions: SessionRepo;
  relay: RelayRepo;
  offsets: OffsetRepo;
  groups: GroupRepo;
  peers: PeerRepo;
  outbox: OutboxRepo;
  remoteOffsets: RemoteOffsetRepo;
  audit: AuditRepo;
  idempotency: IdempotencyRepo;
  pairing: PairingRepo;
  ephemeral: EphemeralStore;
  readiness(): Promise<Readiness>;
  close(): Promise<void>;
}

export interface StorageOptions {
  postgresDsn: string | null;
  redisUrl: string | null;
  /** Where the embedded database lives (data_dir/pg) when postgresDsn is null. */
  dataDir: string;
  /** Apply pending migrations on open (default true). */
  migrate?: boolean;
}
