/**
 * Node heartbeats: every few seconds a running node publishes who it is, where it listens, its
 * version, uptime, connections and frame rate in the ephemeral store (Redis when shared), so
 * the console and the admin API list every node of the cluster. A heartbeat lives three
 * intervals; a node that stops is gone from the list within that time.
 */
import type { EphemeralStore } from "../storage/types.ts";

/** CommuCat's release, shown per node. */
export const COMMUCAT_VERSION = "0.9.0";

/** The version string a node publishes: CommuCat's and the runtime's. */
export function versionString(): string {
  return `commucat ${COMMUCAT_VERSION} (deno ${Deno.version.deno})`;
}

export interface HeartbeatSource {
  nodeId: string;
  address: string;
  /** Connections and cumulative frames (in + out) right now. */
  reading(): { connections: number; frames: number };
}

/** Publishes heartbeats until the returned function is called (which also ends the timer). */
export function startHeartbeat(
  ephemeral: EphemeralStore,
  source: HeartbeatSource,
  options: { intervalMs?: number; onError?: (err: unknown) => void } = {},
): () => void {
  const intervalMs = options.intervalMs ?? 5_000;
  const startedAt = new Date().toISOString();
  let last = { frames: source.reading().frames, at: Date.now() };
  const beat = async () => {
    const now = Date.now();
    const r = source.reading();
    const seconds = Math.max(0.001, (now - last.at) / 1000);
    const framesPerSecond = Math.max(0, Math.round((r.frames - last.frames) / seconds));
    last = { frames: r.frames, at: now };
    try {
      await ephemeral.setNodeHeartbeat({
        nodeId: source.nodeId,
        address: source.address,
        version: versionString(),
        startedAt,
        connections: r.connections,
        framesPerSecond,
        at: new Date(now).toISOString(),
      }, Math.max(1, Math.ceil((intervalMs * 3) / 1000)));
    } catch (err) {
      options.onError?.(err);
    }
  };
  beat();
  const timer = setInterval(beat, intervalMs);
  return () => clearInterval(timer);
}
