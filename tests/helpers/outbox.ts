/**
 * The outbox backlog as the real repository computes it, for the in-memory fakes
 * (tests/console/fake_storage.ts, tests/server/federation_fakes.ts; held to the storage
 * contract by tests/storage/contract_fakes_test.ts).
 */
import type { OutboxBacklog, OutboxEntry } from "../../storage/types.ts";

/** Per peer with undelivered entries: pending count, oldest, last error, dead count. */
export function outboxBacklog(entries: readonly OutboxEntry[]): OutboxBacklog[] {
  const byPeer = new Map<string, OutboxBacklog>();
  for (const e of entries) {
    if (e.deliveredAt) continue;
    const b = byPeer.get(e.peerDomain) ??
      {
        peerDomain: e.peerDomain,
        pending: 0,
        oldest: null,
        lastError: null,
        dead: 0,
        nextAttemptAt: null,
        attempts: 0,
      };
    if (e.deadAt) {
      b.dead++;
    } else {
      b.pending++;
      if (!b.oldest || e.createdAt < b.oldest) b.oldest = e.createdAt;
      if (!b.nextAttemptAt || e.nextAttemptAt < b.nextAttemptAt) b.nextAttemptAt = e.nextAttemptAt;
      b.attempts = Math.max(b.attempts, e.attempts);
    }
    if (e.lastError) b.lastError = e.lastError;
    byPeer.set(e.peerDomain, b);
  }
  return [...byPeer.values()];
}
