/**
 * Operator actions. Each one changes storage, tells every node over the ephemeral bus where
 * live state must follow, and writes the operator audit log (actor, action, target, before,
 * after). Pages call these; they never write storage themselves.
 */
import { InvalidValue, NotFound } from "../storage/errors.ts";
import type { Device, FederationPeer, PeerStatus, Storage } from "../storage/types.ts";
import { hex } from "./components/format.ts";

/** The audit identity of a console session: its public label, never its cookie value. */
export const actorOf = (label: string) => `console:${label}`;

/** How long the interrupt key lives: long enough for every node to notice it. */
export const INTERRUPT_TTL_SECONDS = 120;

const deviceState = (d: Device) => ({
  status: d.status,
  publicKey: hex(d.publicKey),
  pendingPublicKey: d.pendingPublicKey ? hex(d.pendingPublicKey) : null,
});

async function mustGetDevice(storage: Storage, id: string): Promise<Device> {
  const device = await storage.devices.get(id);
  if (!device) throw new NotFound("device", id);
  return device;
}

/** Approves a pending device (or its pending key); its next handshake succeeds. */
export async function approveDevice(storage: Storage, actor: string, id: string): Promise<Device> {
  // Snapshot now: a repository may hand back a live object that the change then mutates.
  const before = deviceState(await mustGetDevice(storage, id));
  const { device } = await storage.devices.approve(id, actor);
  await storage.ephemeral.publishControl({ kind: "device-approved", deviceId: id });
  await storage.audit.append({
    actor,
    action: "device.approve",
    target: `device:${id}`,
    before,
    after: deviceState(device),
  });
  return device;
}

/** Rejects a pending device (it becomes revoked) or drops its pending key. */
export async function rejectDevice(storage: Storage, actor: string, id: string): Promise<Device> {
  // Snapshot now: a repository may hand back a live object that the change then mutates.
  const before = deviceState(await mustGetDevice(storage, id));
  const { device } = await storage.devices.reject(id, actor);
  await storage.audit.append({
    actor,
    action: "device.reject",
    target: `device:${id}`,
    before,
    after: deviceState(device),
  });
  return device;
}

/** Revokes a device and ends its live connections on every node. */
export async function revokeDevice(storage: Storage, actor: string, id: string): Promise<Device> {
  // Snapshot now: a repository may hand back a live object that the change then mutates.
  const before = deviceState(await mustGetDevice(storage, id));
  const { device } = await storage.devices.revoke(id, actor);
  await storage.ephemeral.setInterrupt(id, "device revoked by operator", INTERRUPT_TTL_SECONDS);
  await storage.ephemeral.publishControl({ kind: "device-revoked", deviceId: id });
  await storage.audit.append({
    actor,
    action: "device.revoke",
    target: `device:${id}`,
    before,
    after: deviceState(device),
  });
  return device;
}

/** Removes a device from a group; every node drops its live route for the group. */
export async function removeGroupMember(
  storage: Storage,
  actor: string,
  groupId: string,
  deviceId: string,
): Promise<void> {
  const role = await storage.groups.role(groupId, deviceId);
  if (role === null) throw new NotFound(`member of group ${groupId}`, deviceId);
  await storage.groups.removeMember(groupId, deviceId, actor);
  await storage.ephemeral.publishControl({ kind: "member-removed", groupId, deviceId });
  await storage.audit.append({
    actor,
    action: "group.remove-member",
    target: `group:${groupId}`,
    before: { deviceId, role },
    after: null,
  });
}

/** Changes a database peer's status; static peers from the config are read-only. */
export async function setPeerStatus(
  storage: Storage,
  actor: string,
  domain: string,
  status: PeerStatus,
  staticDomains: Set<string>,
): Promise<FederationPeer> {
  if (staticDomains.has(domain)) {
    throw new InvalidValue("peer", domain, "a database peer (peers from the config are read-only)");
  }
  // The peer repository writes the audit entry in the same transaction as the change.
  const peer = await storage.peers.setStatus(domain, status, actor);
  await storage.ephemeral.publishControl({ kind: "peer-status", domain, status });
  return peer;
}

/** Adds a dynamic federation peer (input already validated by `parsePeerForm`). */
export async function addPeer(
  storage: Storage,
  actor: string,
  input: { domain: string; endpoint: string; publicKey: Uint8Array; status: PeerStatus },
): Promise<FederationPeer> {
  const found = await storage.peers.get(input.domain);
  // The peer repository writes the audit entry in the same transaction as the change.
  const peer = await storage.peers.upsert(input, actor);
  if (found?.status !== peer.status) {
    await storage.ephemeral.publishControl({
      kind: "peer-status",
      domain: peer.domain,
      status: peer.status,
    });
  }
  return peer;
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
