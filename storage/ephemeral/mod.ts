/**
 * The ephemeral store: presence, routes, interrupt keys and the bus between nodes
 * (ccp1.md §6). Redis when a URL is configured, in-memory otherwise.
 */
import type { EphemeralStore } from "../types.ts";
import { MemoryEphemeralStore, MemoryHub } from "./memory.ts";
import { RedisEphemeralStore } from "./redis.ts";
import type { EphemeralOptions } from "./shared.ts";

export {
  CONTROL_CHANNEL,
  CONTROL_STREAM_LENGTH,
  decodeControl,
  type EphemeralOptions,
  LIMITED_STREAM,
  LIMITED_STREAM_LENGTH,
  type LimitedNote,
} from "./shared.ts";
export { MemoryEphemeralStore, MemoryHub } from "./memory.ts";
export { COMMAND_TIMEOUT_MS, CONNECT_TIMEOUT_MS, RedisEphemeralStore } from "./redis.ts";

/**
 * Open the ephemeral store: Redis at `redisUrl`, or a private in-memory store when it is null
 * or empty. Waits at most CONNECT_TIMEOUT_MS for Redis; an unreachable Redis does not throw
 * here (its calls fail with RedisFailure until it is reachable, and `ping()` reports it). A
 * malformed URL throws RedisFailure.
 */
export async function openEphemeral(
  redisUrl: string | null,
  options: EphemeralOptions & { connectionName?: string; hub?: MemoryHub } = {},
): Promise<EphemeralStore> {
  if (redisUrl === null || redisUrl.trim() === "") return new MemoryEphemeralStore(options);
  return await RedisEphemeralStore.open(redisUrl.trim(), options);
}
