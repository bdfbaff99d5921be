/**
 * Channel routes: which devices share a channel id, whether the channel relays through the
 * server, and the group it is bound to. Every node keeps the table in memory and shares changes
 * over the bus so a member connected to another node can use the channel too.
 *
 * @module
 */

export interface ChannelRoute {
  channel: number;
  members: Set<string>;
  relay: boolean;
  groupId: string | null;
}

/** A change to the table as it travels between nodes. */
export type RouteChange =
  | { op: "set"; channel: number; members: string[]; relay: boolean; groupId: string | null }
  | { op: "delete"; channel: number }
  | { op: "group-add"; groupId: string; deviceId: string }
  | { op: "group-remove"; groupId: string; deviceId: string };

export class ChannelTable {
  readonly #routes = new Map<number, ChannelRoute>();

  get(channel: number): ChannelRoute | undefined {
    return this.#routes.get(channel);
  }

  get size(): number {
    return this.#routes.size;
  }

  /** Channels the device is a member of. */
  *channelsOf(deviceId: string): Iterable<ChannelRoute> {
    for (const route of this.#routes.values()) if (route.members.has(deviceId)) yield route;
  }

  /** Applies a change (local or from another node). */
  apply(change: RouteChange): void {
    switch (change.op) {
      case "set":
        this.#routes.set(change.channel, {
          channel: change.channel,
          members: new Set(change.members),
          relay: change.relay,
          groupId: change.groupId,
        });
        return;
      case "delete":
        this.#routes.delete(change.channel);
        return;
      case "group-add":
        for (const route of this.#routes.values()) {
          if (route.groupId === change.groupId) route.members.add(change.deviceId);
        }
        return;
      case "group-remove":
        for (const route of this.#routes.values()) {
          if (route.groupId === change.groupId) route.members.delete(change.deviceId);
        }
        return;
    }
  }

  /** The change that recreates `route` elsewhere. */
  static describe(route: ChannelRoute): RouteChange {
    return {
      op: "set",
      channel: route.channel,
      members: [...route.members],
      relay: route.relay,
      groupId: route.groupId,
    };
  }
}

/** Parses a route change from the bus; null for anything malformed. */
export function parseRouteChange(value: unknown): RouteChange | null {
  if (typeof value !== "object" || value === null) return null;
  const v = value as Record<string, unknown>;
  const isChannel = (c: unknown) =>
    typeof c === "number" && Number.isInteger(c) && c >= 0 && c <= 0xffff_ffff;
  switch (v.op) {
    case "set":
      if (
        !isChannel(v.channel) || !Array.isArray(v.members) ||
        !v.members.every((m) => typeof m === "string") || typeof v.relay !== "boolean" ||
        (v.groupId !== null && typeof v.groupId !== "string")
      ) return null;
      return {
        op: "set",
        channel: v.channel as number,
        members: v.members as string[],
        relay: v.relay,
        groupId: v.groupId as string | null,
      };
    case "delete":
      return isChannel(v.channel) ? { op: "delete", channel: v.channel as number } : null;
    case "group-add":
    case "group-remove":
      if (typeof v.groupId !== "string" || typeof v.deviceId !== "string") return null;
      return { op: v.op, groupId: v.groupId, deviceId: v.deviceId };
  }
  return null;
}
