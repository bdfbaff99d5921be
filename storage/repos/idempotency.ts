/**
 * Idempotency keys (`idempotency`): a `(scope, key)` is claimed once until its claim expires.
 * Every process on the database shares them, which is what federation replay protection needs
 * when several nodes stand behind one endpoint. Expiry uses the database's clock, so nodes
 * whose clocks differ still agree on when a key is free again.
 */
import type { Db } from "../db.ts";
import type { IdempotencyRepo } from "../types.ts";
import * as v from "./validate.ts";

/** The longest claim: ten years. */
const MAX_TTL_SECONDS = 10 * 365 * 86400;
/** claim() also deletes expired keys, at most this often per repository, so the table stays
 * bounded even when nobody calls purgeExpired. */
export const SWEEP_INTERVAL_MS = 60_000;

export class PgIdempotencyRepo implements IdempotencyRepo {
  #lastSweep = Date.now();

  constructor(private readonly db: Db) {}

  /**
   * One statement, atomic under concurrency: the INSERT wins when the key is absent; on a
   * conflict the row is updated only if its claim has expired. A concurrent claimer of the same
   * key waits for the winner's row lock, re-checks the condition on the new row, and gets no
   * row back. RETURNING a row therefore means "claimed by this call".
   */
  async claim(scope: string, key: string, ttlSeconds: number): Promise<boolean> {
    const s = v.text("idempotency scope", scope, 256, 1);
    const k = v.text("idempotency key", key, 512, 1);
    const ttl = v.int("idempotency ttl seconds", ttlSeconds, 1, MAX_TTL_SECONDS);
    await this.#maybeSweep();
    const res = await this.db.query(
      `INSERT INTO idempotency AS i (scope, key, created_at, expires_at)
       VALUES ($1, $2, now(), now() + make_interval(secs => $3))
       ON CONFLICT (scope, key) DO UPDATE
         SET created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
         WHERE i.expires_at <= now()
       RETURNING 1 AS claimed`,
      [s, k, ttl],
    );
    return res.rows.length === 1;
  }

  async release(scope: string, key: string): Promise<void> {
    await this.db.query(`DELETE FROM idempotency WHERE scope = $1 AND key = $2`, [
      v.text("idempotency scope", scope, 256, 1),
      v.text("idempotency key", key, 512, 1),
    ]);
  }

  async purgeExpired(now?: Date): Promise<number> {
    const at = now === undefined ? null : v.date("now", now).toISOString();
    const res = await this.db.query(
      `DELETE FROM idempotency WHERE expires_at <= COALESCE($1::timestamptz, now())`,
      [at],
    );
    return res.rowCount;
  }

  /** Delete expired keys if the last sweep was long enough ago (one caller at a time). */
  async #maybeSweep(): Promise<void> {
    const t = Date.now();
    if (t - this.#lastSweep < SWEEP_INTERVAL_MS) return;
    this.#lastSweep = t;
    await this.purgeExpired();
  }
}
