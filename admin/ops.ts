/**
 * The operator actions and listings every operator tool offers, as one interface. `LocalAdmin`
 * (admin/local.ts) does them against storage; `RemoteAdmin` (admin/remote.ts) asks a running
 * server's admin API, which answers with `LocalAdmin`. The console, the CLI and the API all go
 * through it, so an action is checked, audited and announced the same way whoever asks.
 */
import type { DeviceStatus, Page, PeerStatus } from "../storage/types.ts";
import type {
  AuditView,
  DeviceView,
  GroupView,
  KeyEventView,
  MembershipView,
  MemberView,
  OutboxView,
  PeerView,
  UserView,
} from "./views.ts";

export interface PageQuery {
  cursor?: string | null;
  limit?: number;
}

/** Notes an action leaves for the operator (e.g. "running servers were not told"). */
export interface Noted {
  notes: string[];
}

export interface DeviceChange extends Noted {
  device: DeviceView;
  event: KeyEventView;
}

export interface RotatedKey extends Noted {
  userId: string;
  deviceId: string;
  /** True when a new device was registered, false when an existing one was re-keyed. */
  registered: boolean;
  publicKey: string;
  /** Shown once; stored nowhere. */
  privateKey: string;
  event: KeyEventView;
}

export interface DeliveryView {
  deviceId: string;
  /** Envelopes waiting in the relay queue. */
  depth: number;
  oldestAt: string | null;
  /** Handed to a connection, not yet acknowledged. */
  inFlight: number;
  /** Envelopes handed out more than once. */
  redelivered: number;
  online: boolean;
  nodeId: string | null;
}

export interface NodeView {
  nodeId: string;
  address: string;
  version: string;
  startedAt: string;
  uptimeSeconds: number;
  connections: number;
  framesPerSecond: number;
  lastHeartbeatAt: string;
}

export interface GroupDetail {
  group: GroupView;
  roster: MemberView[];
  history: MembershipView[];
  /** True when older history exists beyond what is shown. */
  moreHistory: boolean;
}

export interface DeviceFilter extends PageQuery {
  status?: DeviceStatus;
  awaitingApproval?: boolean;
  userId?: string;
  search?: string;
}

/** A user's device limit (docs/PROTOCOL.md §11). */
export interface DeviceLimitView {
  userId: string;
  handle: string;
  /** The operator's limit of this user, or null: `[limits] max_devices_per_user` applies. */
  maxDevices: number | null;
  /** Devices the user holds that count against a limit (pending and active). */
  devices: number;
}

export interface AdminOps {
  users(filter: { search?: string } & PageQuery): Promise<Page<UserView>>;
  registerUser(
    input: { handle: string; displayName?: string | null; avatarUrl?: string | null },
  ): Promise<UserView>;
  devices(filter: DeviceFilter): Promise<Page<DeviceView>>;
  /** The device limit of a user (by id or handle). */
  deviceLimit(user: string): Promise<DeviceLimitView>;
  /** Sets a user's own device limit (1..10 000), or null for the server's default; audited. */
  setDeviceLimit(user: string, limit: number | null): Promise<DeviceLimitView>;
  device(id: string): Promise<DeviceView>;
  approveDevice(id: string): Promise<DeviceChange>;
  rejectDevice(id: string): Promise<DeviceChange>;
  revokeDevice(id: string): Promise<DeviceChange>;
  rotateKey(input: { userId?: string; handle?: string; deviceId?: string }): Promise<RotatedKey>;
  keyEvents(deviceId: string | null, range?: { from?: Date; to?: Date }): Promise<KeyEventView[]>;
  delivery(deviceId: string): Promise<DeliveryView>;
  peers(): Promise<PeerView[]>;
  addPeer(
    input: { domain: string; endpoint: string; publicKey: string; status?: PeerStatus },
  ): Promise<{ peer: PeerView } & Noted>;
  setPeerStatus(domain: string, status: PeerStatus): Promise<{ peer: PeerView } & Noted>;
  retryPeer(domain: string): Promise<{ domain: string; dueNow: number } & Noted>;
  deadLetters(filter: { peerDomain?: string; limit?: number }): Promise<OutboxView[]>;
  replayDeadLetter(id: string): Promise<{ entry: OutboxView } & Noted>;
  groups(filter: { search?: string } & PageQuery): Promise<Page<GroupView>>;
  group(id: string): Promise<GroupDetail>;
  removeGroupMember(groupId: string, deviceId: string): Promise<Noted>;
  audit(
    filter: { actor?: string; action?: string; target?: string } & PageQuery,
  ): Promise<Page<AuditView>>;
  nodes(): Promise<NodeView[]>;
}
