/**
 * Server request `keys`: the key directory. An authenticated device asks for the current
 * public keys of devices it names, or of every member of a group it belongs to, so it can seal
 * envelopes for them (docs/CLIENT.md "Sealed envelopes").
 *
 * Request: `{"op": "keys", "devices": ["bob-phone", …], "group": "team", "users": ["@bob"]}`
 * (any of the three). `users` (`@handle` or `@<user id>`) adds every active device of each user
 * and lists them under `users: [{user, handle, devices: [id, …]}]` (docs/PROTOCOL.md §11).
 * Answer (the ACK's fields):
 *
 * ```json
 * {"op": "keys",
 *  "devices": [{"device": "bob-phone", "user": "u-…", "status": "active",
 *               "public_key": "<64 hex>", "key_change_pending": false,
 *               "events": [{"kind": "registered", "at": "2026-…Z", "public_key": "<64 hex>"},
 *                          {"kind": "rotated", "at": "…", "public_key": "…"}],
 *               "events_truncated": false}],
 *  "not_found": ["nobody"],
 *  "remote": ["carol@other.example"]}
 * ```
 *
 * `public_key` is the device's current key: the approved one for an active or revoked device,
 * the requested one for a pending device (status says which; clients seal only to `active`).
 * `events` is the device's key-event history, oldest first, the last {@link MAX_KEY_EVENTS}.
 * Only public keys leave the server: the directory never had a private key.
 *
 * Who may ask: any authenticated device, for any device id of this server it names (a phone
 * book: keys are public, and a sender must be able to find a recipient's key before they
 * share a conversation); a `group` lookup only for a member of that group. A device of another
 * domain (`device@domain`) is listed under `remote`; a user of a peer domain
 * (`@alice@b.example` in `users`) is answered with the devices and keys its peer lists
 * (docs/FEDERATION.md "Remote users").
 *
 * Limits: at most {@link MAX_KEYS_DEVICES} named devices and {@link MAX_KEYS_GROUP_MEMBERS}
 * group members per request; more is refused (413), never truncated silently.
 *
 * @module
 */
import { isStoredId } from "../../protocol/ids.ts";
import { bytesToHex } from "../../protocol/hex.ts";
import type { DeviceKeyEvent } from "../../storage/types.ts";
import { refused, Titles } from "../errors.ts";
import { localDeviceId, remoteDomainOf } from "../federation.ts";
import { remoteUserOf, resolveUser } from "../routing/conversations.ts";
import type { RequestContext } from "./types.ts";

/** Most device ids one `keys` request may name. */
export const MAX_KEYS_DEVICES = 64;
/** Most group members one `keys` request answers for. */
export const MAX_KEYS_GROUP_MEMBERS = 1024;
/** Most users one `keys` request may name. */
export const MAX_KEYS_USERS = 64;
/** Most devices of named users one `keys` request answers for. */
export const MAX_KEYS_USER_DEVICES = 1024;
/** How many of a device's key events (the newest) an answer carries. */
export const MAX_KEY_EVENTS = 32;

const INVALID = "Invalid Control Payload";

/** A request past one of the limits above: refused (413), never truncated silently. */
const tooLarge = (detail: string) => refused("Payload Too Large", 413, detail);

/** One device of the answer. */
export interface KeyEntry {
  device: string;
  user: string;
  /** The device of the same user that paired it, or null. */
  paired_by: string | null;
  status: string;
  public_key: string;
  key_change_pending: boolean;
  events: { kind: string; at: string; public_key: string }[];
  events_truncated: boolean;
}

/** Handles `{"op": "keys", ...}`. */
export async function keysRequest(
  ctx: RequestContext,
  request: Record<string, unknown>,
): Promise<Record<string, unknown>> {
  const named = request.devices;
  const group = request.group;
  const namedUsers = request.users;
  if (named === undefined && group === undefined && namedUsers === undefined) {
    throw refused(
      INVALID,
      400,
      'keys: give "devices" (an array of device ids), "group" or "users" (@handle, …)',
    );
  }
  const ids: string[] = [];
  if (named !== undefined) {
    if (!Array.isArray(named)) throw refused(INVALID, 400, 'keys: "devices" must be an array');
    if (named.length > MAX_KEYS_DEVICES) {
      throw tooLarge(
        `keys: ${named.length} devices named; at most ${MAX_KEYS_DEVICES} per request`,
      );
    }
    for (const d of named) {
      if (!isStoredId(d)) {
        throw refused(INVALID, 400, `keys: ${JSON.stringify(d)} is not a device id`);
      }
      ids.push(d);
    }
  }
  if (group !== undefined) {
    if (!isStoredId(group)) throw refused(INVALID, 400, 'keys: "group" must be a group id');
    const role = await ctx.storage.groups.role(group, ctx.deviceId);
    if (role === null) {
      // The same answer whether the group exists or not: membership is not disclosed.
      throw refused(Titles.notMember, 403, `keys: not a member of group ${group}`);
    }
    const roster = await ctx.storage.groups.roster(group);
    if (roster.length > MAX_KEYS_GROUP_MEMBERS) {
      throw tooLarge(
        `keys: group ${group} has ${roster.length} members; at most ${MAX_KEYS_GROUP_MEMBERS}`,
      );
    }
    for (const m of roster) {
      if (!m.deviceId.startsWith("@")) {
        ids.push(m.deviceId);
        continue;
      }
      // A user on the roster: every active device of it.
      for (const d of await ctx.storage.pairing.devicesOf(m.deviceId.slice(1))) {
        if (d.status === "active") ids.push(d.id);
      }
      if (ids.length > MAX_KEYS_GROUP_MEMBERS + MAX_KEYS_DEVICES) {
        throw tooLarge(
          `keys: group ${group} has more than ${MAX_KEYS_GROUP_MEMBERS} member devices`,
        );
      }
    }
  }
  const users: { user: string; handle: string; devices: string[] }[] = [];
  const domain = ctx.config.server.domain;
  /** `device@peer.domain` of a named remote user → its user and key, as its peer listed them. */
  const peerKeys = new Map<string, { user: string; publicKey: string }>();
  if (namedUsers !== undefined) {
    if (!Array.isArray(namedUsers)) throw refused(INVALID, 400, 'keys: "users" must be an array');
    if (namedUsers.length > MAX_KEYS_USERS) {
      throw tooLarge(
        `keys: ${namedUsers.length} users named; at most ${MAX_KEYS_USERS} per request`,
      );
    }
    let total = 0;
    for (const u of new Set(namedUsers)) {
      if (typeof u !== "string" || u.length < 2 || u.length > 300) {
        throw refused(INVALID, 400, `keys: ${JSON.stringify(u)} is not a user (@handle)`);
      }
      const address = u.startsWith("@") ? u : "@" + u;
      const peerUser = ctx.remoteUsers ? remoteUserOf(address, domain) : null;
      if (peerUser !== null) {
        // A user of a peer domain: its active devices and keys from the peer's signed answer.
        const user = `${peerUser.name}@${peerUser.domain}`;
        if (users.some((x) => x.user === user)) continue;
        const listed = await ctx.remoteUsers!(peerUser.domain, peerUser.name);
        total += listed.length;
        if (total > MAX_KEYS_USER_DEVICES) {
          throw tooLarge(
            `keys: the named users hold more than ${MAX_KEYS_USER_DEVICES} devices; ask for fewer users at once`,
          );
        }
        const remoteIds = listed.map((d) => `${d.id}@${peerUser.domain}`);
        listed.forEach((d, i) => peerKeys.set(remoteIds[i], { user, publicKey: d.publicKey }));
        users.push({ user, handle: peerUser.name, devices: remoteIds });
        ids.push(...remoteIds);
        continue;
      }
      const userId = await resolveUser(ctx, address, "keys.users", {
        unknown: Titles.unknownUser,
        remote: Titles.remoteUser,
      });
      if (users.some((x) => x.user === userId)) continue;
      const user = await ctx.storage.users.get(userId);
      const active = (await ctx.storage.pairing.devicesOf(userId))
        .filter((d) => d.status === "active").map((d) => d.id);
      total += active.length;
      if (total > MAX_KEYS_USER_DEVICES) {
        throw tooLarge(
          `keys: the named users hold more than ${MAX_KEYS_USER_DEVICES} devices; ask for fewer users at once`,
        );
      }
      users.push({ user: userId, handle: user?.handle ?? userId, devices: active });
      ids.push(...active);
    }
  }
  const devices: KeyEntry[] = [];
  const notFound: string[] = [];
  const remote: string[] = [];
  for (const requested of new Set(ids)) {
    const peerKey = peerKeys.get(requested);
    if (peerKey !== undefined) {
      // Listed by its peer as active; its key history stays on the peer.
      devices.push({
        device: requested,
        user: peerKey.user,
        paired_by: null,
        status: "active",
        public_key: peerKey.publicKey,
        key_change_pending: false,
        events: [],
        events_truncated: false,
      });
      continue;
    }
    if (remoteDomainOf(requested, domain) !== null) {
      remote.push(requested);
      continue;
    }
    const id = localDeviceId(requested, domain);
    const device = await ctx.storage.devices.get(id);
    if (!device) {
      notFound.push(requested);
      continue;
    }
    const page = await ctx.storage.keyEvents.list({ deviceId: id, limit: MAX_KEY_EVENTS + 1 });
    const newest = page.items.slice(0, MAX_KEY_EVENTS);
    devices.push({
      device: requested,
      user: device.userId,
      paired_by: await ctx.storage.pairing.pairedBy(id),
      status: device.status,
      public_key: bytesToHex(device.publicKey),
      key_change_pending: device.pendingPublicKey !== null,
      events: newest.reverse().map(eventEntry),
      events_truncated: page.items.length > MAX_KEY_EVENTS || page.nextCursor !== null,
    });
  }
  ctx.log.debug("keys lookup", {
    device: ctx.deviceId,
    asked: ids.length,
    found: devices.length,
    not_found: notFound.length,
    remote: remote.length,
  });
  const answer: Record<string, unknown> = { op: "keys", devices, not_found: notFound, remote };
  if (namedUsers !== undefined) answer.users = users;
  return answer;
}

function eventEntry(e: DeviceKeyEvent): { kind: string; at: string; public_key: string } {
  return { kind: e.kind, at: e.recordedAt.toISOString(), public_key: bytesToHex(e.publicKey) };
}
