/**
 * What every part of one relay node shares: configuration, storage, metrics, the logger, the
 * ledger and the node id.
 *
 * @module
 */
import type { Config } from "./config/mod.ts";
import type { Logger } from "./log.ts";
import type { RelayMetrics } from "./metrics.ts";
import type { Storage } from "../storage/types.ts";
import type { Ledger } from "../storage/ledger.ts";
import type { Limits } from "./limits.ts";
import type { Admission } from "./admission.ts";
import type { FrameAnalytics } from "./analytics.ts";

export interface NodeContext {
  readonly config: Config;
  readonly storage: Storage;
  readonly metrics: RelayMetrics;
  readonly log: Logger;
  readonly ledger: Ledger;
  readonly nodeId: string;
  /** Rate limits (server/limits.ts). */
  readonly limits: Limits;
  /** Caps on connections in their handshake and the memory budget (server/admission.ts). */
  readonly admission: Admission;
  /** Frame analytics counters (server/analytics.ts); absent in some unit tests. */
  readonly analytics?: FrameAnalytics;
}

/** Bus channel on which a node receives frames for the devices it holds. */
export function nodeChannel(nodeId: string): string {
  return `commucat:node:${nodeId}`;
}

/** Bus channel on which nodes share channel routes (JOIN/LEAVE/GROUP_CREATE). */
export const ROUTES_CHANNEL = "commucat:routes";
