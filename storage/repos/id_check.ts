/**
 * Stored identifiers that break the rules of protocol/ids.ts. Storage once accepted ids with
 * any of `. _ : @ -` first (`.alice`) and handles starting with `.`, `_` or `-`; no client can
 * use such a device, so `commucat-cli diagnose` lists them for the operator to revoke or delete
 * (storage still finds them by id; see `isStoredId`). Nothing is renamed automatically: a
 * device id is also in the device's own key file.
 */
import { ID_PATTERN } from "../../protocol/ids.ts";
import type { Queryable } from "../db.ts";

/** One stored value that breaks its rule. */
export interface NonconformingId {
  kind: "user id" | "handle" | "device id" | "group id";
  value: string;
}

/** Up to `limit` stored ids and handles that break the rules, and how many there are. */
export async function nonconformingIds(
  q: Queryable,
  limit = 20,
): Promise<{ total: number; items: NonconformingId[] }> {
  const res = await q.query<{ kind: NonconformingId["kind"]; value: string; total: string }>(
    `WITH bad AS (
       SELECT 'user id' AS kind, user_id AS value FROM app_user WHERE user_id !~ $1
       UNION ALL SELECT 'handle', handle FROM app_user WHERE handle ~ '^[._-]'
       UNION ALL SELECT 'device id', device_id FROM user_device WHERE device_id !~ $1
       UNION ALL SELECT 'group id', group_id FROM chat_group WHERE group_id !~ $1
     )
     SELECT kind, value, count(*) OVER () AS total FROM bad ORDER BY kind, value LIMIT $2`,
    [ID_PATTERN.source, limit],
  );
  return {
    total: res.rows.length === 0 ? 0 : Number(res.rows[0].total),
    items: res.rows.map((r) => ({ kind: r.kind, value: r.value })),
  };
}
