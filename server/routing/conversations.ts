/**
 * Conversations and channel bindings (ccp1.md §4.1) — the sole owner of routes.
 *
 * A conversation is what frames are routed within: for a JOIN without `group_id`, its exact
 * member set (the joiner included; sorted, de-duplicated device ids, `device@domain` for remote
 * members), identified by a digest of that set; for a JOIN with `group_id`, the group and its
 * roster in `group_member`. A channel id is one device's handle for one conversation: every
 * device binds each channel id to at most one conversation at a time.
 *
 * Where the state lives: bindings, conversation records and joined sets are in the ephemeral
 * store (Redis, or memory when embedded), shared by every node and expiring `route_idle_ttl`
 * after their last use; group rosters are in Postgres. This node keeps the bindings of the
 * devices it holds (loaded when a session attaches: O(that device's conversations)) and a cache
 * of conversations bounded by member count. A direct conversation's entries never change (its
 * identity is its member set); what is invalidated is a group's roster (on GROUP_INVITE and member
 * removal, over the bus) and the expansion of users (`@<user id>`, in a direct conversation or on
 * a roster) to their active devices (on a device added or revoked, and after
 * USER_EXPANSION_TTL_MS).
 *
 * @module
 */
import { sha256 } from "@noble/hashes/sha2.js";
import { bytesToHex } from "@noble/hashes/utils.js";
import type { Join } from "../../protocol/control.ts";
import type { NodeContext } from "../context.ts";
import { refused, Titles } from "../errors.ts";
import { localDeviceId } from "../federation.ts";
import { isDomain, isHandle, isId } from "../../protocol/ids.ts";

/** A conversation frames are routed within. */
export interface Conversation {
  /** `d:<digest of the member set>` or `g:<group id>`. */
  readonly id: string;
  /** Member device ids: local ones bare, remote ones as `device@domain`. */
  readonly members: ReadonlySet<string>;
  /** False: members exchange peer candidates on PRESENCE (ccp1.md §4.3). */
  readonly relay: boolean;
  readonly groupId: string | null;
  /**
   * Users addressed as members (`@handle` in JOIN; docs/PROTOCOL.md §11): every active device of
   * each is in `members`, expanded from storage when the conversation was loaded. Empty for a
   * conversation of devices only.
   */
  readonly users: ReadonlySet<string>;
  /** The record's member entries: device ids and `@<user id>` (what the id digests). */
  readonly entries: readonly string[];
  /** When `users` were expanded (ms since the epoch); re-expanded after USER_EXPANSION_TTL_MS. */
  readonly expandedAt: number;
}

/** A device's binding of one channel id. */
export interface Binding {
  channel: number;
  conversation: Conversation;
}

/**
 * How long a conversation's expansion of its users to devices is trusted (ms). A device added
 * or revoked invalidates it at once on every node (control events); this bounds a missed one.
 */
export const USER_EXPANSION_TTL_MS = 30_000;

/** Members the node's conversation cache may hold in all (its memory bound). */
export const CACHED_MEMBERS_BUDGET = 262_144;

const encoder = new TextEncoder();
const GROUP_PREFIX = "g:";
const NO_USERS: ReadonlySet<string> = new Set();

/** The id of the direct conversation with exactly these (sorted, unique) members. */
export function directConversationId(sortedMembers: readonly string[]): string {
  return "d:" + bytesToHex(sha256(encoder.encode(sortedMembers.join("\n")))).slice(0, 32);
}

/** The id of a group's conversation. */
export function groupConversationId(groupId: string): string {
  return GROUP_PREFIX + groupId;
}

interface Limits {
  maxConversations: number;
  maxMembers: number;
  ttl: number;
}

export class Conversations {
  /** Bindings of the devices this node holds: device → channel → conversation id. */
  readonly #bound = new Map<string, Map<number, string>>();
  /** Conversation cache in least-recently-used order (a Map keeps insertion order). */
  readonly #cache = new Map<string, Conversation>();
  /**
   * Conversations moved to the back of #cache since it last evicted for room: a hit on one of
   * them leaves the order as it is (one lookup instead of a delete and an insert per frame), so
   * the order is by first use since the last eviction — least recently used, near enough.
   */
  readonly #fresh = new Set<string>();
  #cachedMembers = 0;
  readonly #loading = new Map<string, Promise<Conversation | null>>();

  constructor(
    private readonly ctx: NodeContext,
    private readonly membersBudget = CACHED_MEMBERS_BUDGET,
    /** The active devices of a user of a peer domain (federation's user directory). */
    private readonly remoteUsers?: (domain: string, name: string) => Promise<{ id: string }[]>,
  ) {}

  get #limits(): Limits {
    const l = this.ctx.config.limits;
    return {
      maxConversations: l.maxConversationsPerDevice,
      maxMembers: l.maxMembersPerJoin,
      ttl: l.routeIdleTtl,
    };
  }

  /** Number of conversations cached here (diagnostics and tests). */
  get cachedCount(): number {
    return this.#cache.size;
  }

  /**
   * A session of `deviceId` attached here: load its bindings (and the conversations they name)
   * and extend their lifetime. Failures are logged; lookups then load lazily.
   */
  async attach(deviceId: string): Promise<void> {
    const eph = this.ctx.storage.ephemeral;
    try {
      const bindings = await eph.bindings(deviceId);
      this.#bound.set(deviceId, bindings);
      // No bindings: nothing to extend (a JOIN sets the lifetime of what it binds).
      if (bindings.size === 0) return;
      const ttl = this.#limits.ttl;
      eph.touchBindings(deviceId, ttl).catch((err) =>
        this.ctx.log.warn("conversation routes not refreshed", { error: err, device: deviceId })
      );
      await Promise.all([...new Set(bindings.values())].map((id) => this.#conversation(id)));
    } catch (err) {
      this.ctx.log.warn("conversation routes not loaded; loading on use", {
        error: err,
        device: deviceId,
      });
    }
  }

  /**
   * Writes a held device's bindings and the conversations they name back to the shared store
   * from what this node remembers (the store lost them: Redis restarted empty).
   */
  async restore(deviceId: string): Promise<void> {
    const bindings = this.#bound.get(deviceId);
    if (bindings === undefined) return;
    const { maxConversations, ttl } = this.#limits;
    const eph = this.ctx.storage.ephemeral;
    for (const [channel, id] of bindings) {
      const c = this.#cache.get(id);
      if (c === undefined) continue; // not remembered here: the device JOINs again
      if (c.groupId === null) {
        await eph.putConversation(
          id,
          JSON.stringify({ members: [...c.entries], relay: c.relay }),
          ttl,
        );
      }
      await eph.bind(deviceId, channel, id, maxConversations, ttl);
    }
  }

  /** The device's last session here ended: returns its bindings as known here, if loaded. */
  detach(deviceId: string): Map<number, string> | undefined {
    const bound = this.#bound.get(deviceId);
    this.#bound.delete(deviceId);
    return bound;
  }

  /** Extends the lifetime of a held device's routes (the node's periodic refresh). */
  async refresh(deviceId: string): Promise<void> {
    await this.ctx.storage.ephemeral.touchBindings(deviceId, this.#limits.ttl);
  }

  /**
   * The conversation `deviceId` bound `channel` to: synchronous when the binding and the
   * conversation are known here (the hot path), a promise when they must be loaded, null when
   * the channel is not bound.
   */
  lookup(
    deviceId: string,
    channel: number,
  ): Conversation | null | Promise<Conversation | null> {
    const bindings = this.#bound.get(deviceId);
    if (bindings === undefined) return this.#lookupLoading(deviceId, channel);
    const id = bindings.get(channel);
    if (id === undefined) return null;
    const cached = this.#cached(id);
    if (cached !== undefined) return cached;
    return this.#conversation(id).then((c) => {
      // An expired record: the binding points nowhere any more.
      if (c === null) bindings.delete(channel);
      return c;
    });
  }

  async #lookupLoading(deviceId: string, channel: number): Promise<Conversation | null> {
    const bindings = await this.ctx.storage.ephemeral.bindings(deviceId);
    const id = bindings.get(channel);
    return id === undefined ? null : await this.#conversation(id);
  }

  /** Every binding of a device held here (for presence), loading what is not cached. */
  async bindingsOf(deviceId: string, known?: Map<number, string>): Promise<Binding[]> {
    let bindings = known ?? this.#bound.get(deviceId);
    bindings ??= await this.ctx.storage.ephemeral.bindings(deviceId);
    const out: Binding[] = [];
    for (const [channel, id] of bindings) {
      const conversation = this.#cached(id) ?? await this.#conversation(id);
      if (conversation !== null) out.push({ channel, conversation });
    }
    return out;
  }

  /**
   * JOIN: resolves the conversation the JOIN names and binds `channel` to it for the joiner.
   * Refusals (non-fatal, naming the rule): a channel bound to another conversation (409), too
   * many members (413) or conversations (429), a listed member twice (400), a group the joiner
   * is not in (403).
   */
  async join(
    deviceId: string,
    channel: number,
    join: Join,
    userId?: string,
  ): Promise<Conversation> {
    if (channel === 0) {
      throw refused(
        Titles.joinRejected,
        400,
        "channel 0 carries the handshake and server requests; JOIN a channel id from 1 to 4294967295",
      );
    }
    const conversation = join.group_id !== undefined
      ? await this.#groupForJoin(deviceId, join.group_id)
      : await this.#directForJoin(deviceId, join, userId);
    await this.bind(deviceId, channel, conversation);
    return conversation;
  }

  /** Binds `channel` to `conversation` for `deviceId` (JOIN, GROUP_CREATE). */
  async bind(deviceId: string, channel: number, conversation: Conversation): Promise<void> {
    const { maxConversations, ttl } = this.#limits;
    const outcome = await this.ctx.storage.ephemeral.bind(
      deviceId,
      channel,
      conversation.id,
      maxConversations,
      ttl,
    );
    if (outcome.outcome === "taken") {
      const other = this.#cached(outcome.conversationId) ??
        await this.#conversation(outcome.conversationId).catch(() => null);
      throw refused(
        Titles.joinRejected,
        409,
        `channel ${channel} is bound to another conversation of device ${deviceId} (${
          describe(other, outcome.conversationId)
        }); LEAVE it first or use another channel id`,
      );
    }
    if (outcome.outcome === "full") {
      throw refused(
        Titles.tooManyConversations,
        429,
        `device ${deviceId} has ${outcome.count} conversations bound; at most ${maxConversations} (limits.max_conversations_per_device); LEAVE one first`,
      );
    }
    this.#bound.get(deviceId)?.set(channel, conversation.id);
  }

  /** LEAVE: unbinds the channel for `deviceId` only; the conversation stays for the others. */
  async leave(deviceId: string, channel: number): Promise<Conversation | null> {
    const id = await this.ctx.storage.ephemeral.unbind(deviceId, channel);
    this.#bound.get(deviceId)?.delete(channel);
    if (id === null) {
      throw refused(
        Titles.unknownChannel,
        404,
        `channel ${channel} is not bound to a conversation of device ${deviceId}`,
      );
    }
    return this.#cached(id) ?? null;
  }

  /** The devices that joined each of these conversations (bound a channel to it). */
  async joinedOf(ids: string[]): Promise<string[][]> {
    return await this.ctx.storage.ephemeral.joinedOf(ids);
  }

  /**
   * A device of this user was added or revoked: the conversations that address the user are
   * dropped here (re-expanded on use).
   */
  invalidateUser(userId: string): void {
    for (const [id, c] of [...this.#cache]) {
      if (c.users.has(userId)) this.#evict(id);
    }
  }

  /** Loads a user conversation again (its expansion may be older than a device change). */
  reload(id: string): Promise<Conversation | null> {
    this.#evict(id);
    return this.#conversation(id);
  }

  /** The group's roster changed: its cached conversation is dropped (reloaded on use). */
  invalidateGroup(groupId: string): void {
    this.#evict(groupConversationId(groupId));
  }

  /** The conversation of a group (for GROUP_CREATE), from its roster. */
  async group(groupId: string): Promise<Conversation> {
    const conversation = await this.#conversation(groupConversationId(groupId));
    if (conversation === null) {
      throw refused(Titles.unknownGroup, 404, `group ${groupId} does not exist`);
    }
    return conversation;
  }

  async #groupForJoin(deviceId: string, groupId: string): Promise<Conversation> {
    let conversation = await this.group(groupId);
    if (!conversation.members.has(deviceId) && conversation.users.size > 0) {
      // A device its user gained after this expansion: look the users' devices up again.
      conversation = (await this.reload(conversation.id)) ?? conversation;
    }
    if (!conversation.members.has(deviceId)) {
      this.ctx.log.warn("group join rejected", { device: deviceId, group_id: groupId });
      throw refused(
        Titles.joinRejected,
        403,
        `group join rejected: device ${deviceId} is not a member of group ${groupId}`,
      );
    }
    return conversation;
  }

  async #directForJoin(
    deviceId: string,
    join: Join,
    userId: string | undefined,
  ): Promise<Conversation> {
    const { maxMembers, ttl } = this.#limits;
    const domain = this.ctx.config.server.domain;
    const devices = new Set<string>([deviceId]);
    const users = new Set<string>();
    let listedSelf = false;
    // `@name@peer.domain`: expanded here to the peer's active devices (`device@peer.domain`).
    const remote = new Set<string>();
    let remoteDevices = 0;
    for (const raw of join.members) {
      const peerUser = this.remoteUsers ? remoteUserOf(raw, domain) : null;
      if (peerUser !== null) {
        const key = `${peerUser.name}@${peerUser.domain}`.toLowerCase();
        if (remote.has(key)) throw userTwice(raw);
        remote.add(key);
        for (const d of await this.remoteUsers!(peerUser.domain, peerUser.name)) {
          const member = `${d.id}@${peerUser.domain}`;
          if (!devices.has(member)) remoteDevices++;
          devices.add(member);
        }
      } else if (raw.startsWith("@")) {
        const user = await resolveUser(this.ctx, raw, "JOIN.members");
        if (users.has(user)) throw userTwice(raw);
        users.add(user);
      } else {
        const member = localDeviceId(raw, domain);
        if (member === deviceId && !listedSelf) {
          listedSelf = true;
          continue;
        }
        if (devices.has(member)) {
          throw refused(
            Titles.joinRejected,
            400,
            `JOIN.members lists ${member} more than once; list each device once`,
          );
        }
        devices.add(member);
      }
      // A user is one entry, a remote user too (its devices are bounded by its peer's answer).
      if (devices.size - remoteDevices + users.size + remote.size > maxMembers) {
        throw refused(
          Titles.tooManyMembers,
          413,
          `JOIN.members lists ${join.members.length} members; a conversation may have at most ${maxMembers} members, the joiner included (limits.max_members_per_join)`,
        );
      }
    }
    if (users.size > 0 || remote.size > 0) {
      // Addressing users makes the joiner a member as its user: its other devices get copies.
      if (userId === undefined) {
        throw refused(Titles.joinRejected, 400, "JOIN.members: users need an authenticated user");
      }
      devices.delete(deviceId);
      users.add(userId);
    }
    const entries = [...devices, ...[...users].map((u) => "@" + u)].sort();
    const id = directConversationId(entries);
    const existing = this.#cached(id) ?? await this.#conversation(id);
    const eph = this.ctx.storage.ephemeral;
    // The first JOIN decides `relay`; a later JOIN of the same set refreshes the record only.
    const relay = existing?.relay ?? join.relay;
    await eph.putConversation(id, JSON.stringify({ members: entries, relay }), ttl);
    if (existing) return existing;
    const conversation = await this.#expand(id, entries, relay);
    this.#remember(conversation);
    return conversation;
  }

  /** A conversation from its entries (record or roster), users expanded to active devices. */
  async #expand(
    id: string,
    entries: readonly string[],
    relay: boolean,
    groupId: string | null = null,
  ): Promise<Conversation> {
    const members = new Set<string>();
    const users = new Set<string>();
    for (const e of entries) {
      if (e.startsWith("@")) users.add(e.slice(1));
      else members.add(e);
    }
    for (const user of users) {
      for (const d of await this.ctx.storage.pairing.devicesOf(user)) {
        if (d.status === "active") members.add(d.id);
      }
    }
    return {
      id,
      members,
      relay,
      groupId,
      users: users.size > 0 ? users : NO_USERS,
      entries,
      expandedAt: Date.now(),
    };
  }

  #cached(id: string): Conversation | undefined {
    const c = this.#cache.get(id);
    if (c !== undefined && c.users.size > 0 && Date.now() - c.expandedAt > USER_EXPANSION_TTL_MS) {
      this.#evict(id); // its users' devices are looked up again
      return undefined;
    }
    if (c !== undefined && !this.#fresh.has(id)) {
      // Recently used goes last.
      this.#cache.delete(id);
      this.#cache.set(id, c);
      this.#fresh.add(id);
    }
    return c;
  }

  /** Loads a conversation (once, however many ask at the same time); null when unknown. */
  #conversation(id: string): Promise<Conversation | null> {
    const cached = this.#cached(id);
    if (cached !== undefined) return Promise.resolve(cached);
    let loading = this.#loading.get(id);
    if (loading === undefined) {
      loading = this.#load(id).finally(() => this.#loading.delete(id));
      this.#loading.set(id, loading);
    }
    return loading;
  }

  async #load(id: string): Promise<Conversation | null> {
    const { storage } = this.ctx;
    let conversation: Conversation | null;
    if (id.startsWith(GROUP_PREFIX)) {
      const groupId = id.slice(GROUP_PREFIX.length);
      const group = await storage.groups.get(groupId);
      if (group === null) return null;
      // A roster may hold users (`@<user id>`): every active device of each is a member.
      const roster = await storage.groups.roster(groupId);
      conversation = await this.#expand(id, roster.map((m) => m.deviceId), group.relay, groupId);
    } else {
      const [record] = await storage.ephemeral.getConversations([id]);
      if (record === null) return null;
      const parsed = parseRecord(record);
      if (parsed === null) {
        this.ctx.log.warn("malformed conversation record ignored", { conversation: id });
        return null;
      }
      conversation = await this.#expand(id, parsed.members, parsed.relay);
    }
    this.#remember(conversation);
    return conversation;
  }

  #remember(conversation: Conversation): void {
    this.#evict(conversation.id);
    this.#cache.set(conversation.id, conversation);
    this.#cachedMembers += conversation.members.size;
    if (this.#cachedMembers <= this.membersBudget) return;
    this.#fresh.clear();
    for (const [id] of this.#cache) {
      if (this.#cachedMembers <= this.membersBudget || id === conversation.id) break;
      this.#evict(id);
    }
  }

  #evict(id: string): void {
    const c = this.#cache.get(id);
    if (c === undefined) return;
    this.#cache.delete(id);
    this.#fresh.delete(id);
    this.#cachedMembers -= c.members.size;
  }
}

function parseRecord(text: string): { members: string[]; relay: boolean } | null {
  try {
    const v = JSON.parse(text);
    if (
      !Array.isArray(v.members) || !v.members.every((m: unknown) => typeof m === "string") ||
      typeof v.relay !== "boolean"
    ) return null;
    return { members: v.members as string[], relay: v.relay };
  } catch {
    return null;
  }
}

/**
 * `@handle`, `@user-id` or `@name@<this domain>` → the user id. Refused (non-fatal, naming
 * `what`): 404 for an unknown user (`Join Rejected` by default), 400 `Remote User Not Addressable`
 * for a user of another domain (federation carries device addresses only).
 */
export async function resolveUser(
  ctx: Pick<NodeContext, "config" | "storage">,
  address: string,
  what: string,
  title: { unknown: string; remote: string } = {
    unknown: Titles.joinRejected,
    remote: Titles.remoteUser,
  },
): Promise<string> {
  const name = address.startsWith("@") ? address.slice(1) : address;
  const at = name.indexOf("@");
  if (at >= 0 && name.slice(at + 1).toLowerCase() !== ctx.config.server.domain) {
    throw refused(
      title.remote,
      400,
      `${what}: ${address} is a user of another domain; federated users are not addressable yet — list their devices as device@domain`,
    );
  }
  const local = at >= 0 ? name.slice(0, at) : name;
  const users = ctx.storage.users;
  const user = (isHandle(local) ? await users.getByHandle(local) : null) ??
    (isId(local) ? await users.get(local) : null);
  if (user === null) {
    throw refused(title.unknown, 404, `${what}: no user ${address} here`);
  }
  return user.id;
}

/** `@name@domain` of a domain other than ours → its parts; null for anything else. */
export function remoteUserOf(
  address: string,
  ownDomain: string,
): { name: string; domain: string } | null {
  if (!address.startsWith("@")) return null;
  const at = address.indexOf("@", 1);
  if (at < 0) return null;
  const domain = address.slice(at + 1).toLowerCase();
  if (domain === ownDomain.toLowerCase() || !isDomain(domain)) return null;
  return { name: address.slice(1, at), domain };
}

/** "members a, b, c" or "group g" for refusals; the id when the conversation is unknown. */
function describe(c: Conversation | null, id: string): string {
  if (c === null) return `conversation ${id}`;
  if (c.groupId !== null) return `group ${c.groupId}`;
  const members = c.users.size > 0 ? [...c.entries] : [...c.members];
  const shown = members.slice(0, 8).join(", ");
  return `members ${shown}${members.length > 8 ? `, … (${members.length})` : ""}`;
}

/** The refusal of a JOIN that lists one user twice. */
function userTwice(raw: string) {
  return refused(
    Titles.joinRejected,
    400,
    `JOIN.members names user ${raw} more than once; list each user once`,
  );
}
