/**
 * The key-event retention job: every `[retention] interval` seconds one node (whichever takes
 * the advisory lock) archives key events older than `key_events_days` to the configured target
 * and deletes them (storage/archive/key_events.ts). The CLI runs the same pass on demand.
 */
import { federationKeypair } from "../protocol/federation.ts";
import type { Config } from "./config/mod.ts";
import type { Storage } from "../storage/types.ts";
import {
  archiveKeyEvents,
  type ArchiveResult,
  type ArchiveSigner,
} from "../storage/archive/key_events.ts";
import { type ArchiveTarget, openArchiveTarget } from "../storage/archive/targets.ts";

const DAY_MS = 86_400_000;

/** The federation Ed25519 key pair (secret = BLAKE3(seed)) that signs archive manifests. */
export function archiveSigner(config: Config): ArchiveSigner {
  return federationKeypair(config.crypto.federationSeed);
}

/** The configured archive target. */
export function archiveTarget(config: Config): ArchiveTarget {
  return openArchiveTarget(config.retention.archive);
}

/** The oldest recorded_at kept in the database now (null: retention is off). */
export function retentionCutoff(config: Config, now = new Date()): Date | null {
  const days = config.retention.keyEventsDays;
  return days === 0 ? null : new Date(now.getTime() - days * DAY_MS);
}

/** One retention pass with the configured target and key; `cutoff` overrides the config. */
export async function runRetentionPass(
  config: Config,
  storage: Storage,
  options: { cutoff?: Date; dryRun?: boolean; maxChunks?: number } = {},
): Promise<ArchiveResult | { disabled: true }> {
  const cutoff = options.cutoff ?? retentionCutoff(config);
  if (cutoff === null) return { disabled: true };
  return await archiveKeyEvents({
    repo: storage.keyEventArchive,
    target: archiveTarget(config),
    signer: archiveSigner(config),
    domain: config.server.domain,
    cutoff,
    chunkEvents: config.retention.chunkEvents,
    maxChunks: options.maxChunks,
    dryRun: options.dryRun,
  });
}

interface RetentionLogger {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
}

/**
 * Starts the periodic job (nothing when `key_events_days` is 0). The first pass runs one
 * interval after start. Returns a stop function that waits for a running pass.
 */
export function startRetentionJob(
  config: Config,
  storage: Storage,
  log: RetentionLogger,
): () => Promise<void> {
  if (config.retention.keyEventsDays === 0) return () => Promise.resolve();
  let running: Promise<void> | null = null;
  const pass = async () => {
    try {
      const result = await runRetentionPass(config, storage);
      if ("locked" in result && result.locked && (result.archived > 0 || result.reconciled > 0)) {
        log.info("key events archived", {
          chunks: result.chunks,
          archived: result.archived,
          deleted: result.deleted,
          reconciled: result.reconciled,
          target: archiveTarget(config).id,
        });
      }
    } catch (err) {
      // Nothing was deleted that was not archived; the next pass retries.
      log.warn("key-event retention pass failed; nothing unarchived was deleted", { error: err });
    }
  };
  const id = setInterval(() => {
    if (running) return;
    running = pass().finally(() => (running = null));
  }, config.retention.interval * 1000);
  return async () => {
    clearInterval(id);
    await running;
  };
}
