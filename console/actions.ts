/**
 * Operator actions of the console: thin calls into the one operator-actions module
 * (admin/local.ts), which writes each change and its audit entry in one transaction and tells
 * every node. Pages call these; they never write storage themselves.
 */
import { bytesToHex } from "../protocol/hex.ts";
import type { PeerStatus, Storage } from "../storage/types.ts";
import { LocalAdmin } from "../admin/local.ts";
import type { DeviceView, PeerView } from "../admin/views.ts";

export { INTERRUPT_TTL_SECONDS } from "../admin/local.ts";

/** The audit identity of a console session: its public label, never its cookie value. */
export const actorOf = (label: string) => `console:${label}`;

/** The operator-actions module acting for a console operator. */
export function adminFor(
  storage: Storage,
  actor: string,
  staticDomains: Iterable<string> = [],
): LocalAdmin {
  // The console runs inside a server process or next to a shared Redis: its bus reaches nodes.
  return new LocalAdmin({ storage, actor, staticPeerDomains: staticDomains, reachesServers: true });
}

/** Approves a pending device (or its pending key); its next handshake succeeds. */
export async function approveDevice(
  storage: Storage,
  actor: string,
  id: string,
): Promise<DeviceView> {
  return (await adminFor(storage, actor).approveDevice(id)).device;
}

/** Rejects a pending device (it becomes revoked) or drops its pending key. */
export async function rejectDevice(
  storage: Storage,
  actor: string,
  id: string,
): Promise<DeviceView> {
  return (await adminFor(storage, actor).rejectDevice(id)).device;
}

/** Revokes a device and ends its live connections on every node. */
export async function revokeDevice(
  storage: Storage,
  actor: string,
  id: string,
): Promise<DeviceView> {
  return (await adminFor(storage, actor).revokeDevice(id)).device;
}

/** Removes a device from a group; every node drops its live route for the group. */
export async function removeGroupMember(
  storage: Storage,
  actor: string,
  groupId: string,
  deviceId: string,
): Promise<void> {
  await adminFor(storage, actor).removeGroupMember(groupId, deviceId);
}

/** Changes a database peer's status; static peers from the config are read-only. */
export async function setPeerStatus(
  storage: Storage,
  actor: string,
  domain: string,
  status: PeerStatus,
  staticDomains: Set<string>,
): Promise<PeerView> {
  return (await adminFor(storage, actor, staticDomains).setPeerStatus(domain, status)).peer;
}

/** Adds a dynamic federation peer (input already validated by `parsePeerForm`). */
export async function addPeer(
  storage: Storage,
  actor: string,
  input: { domain: string; endpoint: string; publicKey: Uint8Array; status: PeerStatus },
): Promise<PeerView> {
  return (await adminFor(storage, actor).addPeer({
    ...input,
    publicKey: bytesToHex(input.publicKey),
  })).peer;
}

/** Records sign-in and sign-out in the audit log too. */
export async function auditSession(
  storage: Storage,
  actor: string,
  action: "session.sign-in" | "session.sign-out",
  address: string,
): Promise<void> {
  await storage.audit.append({ actor, action, target: `address:${address}` });
}
