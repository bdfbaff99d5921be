/** The operator audit log (`operator_audit`): append-only, listed newest first. */
import type { Db, Queryable } from "../db.ts";
import { InvalidValue } from "../errors.ts";
import { decodeCursor, pageLimit, toPage } from "../pagination.ts";
import type { AuditEntry, AuditRepo, Page, PageRequest } from "../types.ts";
import * as v from "./validate.ts";

/** An `operator_audit` row: the entry's fields, the time under its column name. */
type AuditRow = Omit<AuditEntry, "recordedAt"> & { recorded_at: Date };

function toEntry(r: AuditRow): AuditEntry {
  return {
    id: String(r.id),
    actor: r.actor,
    action: r.action,
    target: r.target,
    before: r.before,
    after: r.after,
    recordedAt: r.recorded_at,
  };
}

/** JSON text for a jsonb column; undefined and null both store SQL NULL. */
function jsonParam(field: string, value: unknown): string | null {
  if (value === undefined || value === null) return null;
  let json: string | undefined;
  try {
    json = JSON.stringify(value);
  } catch {
    throw new InvalidValue(field, typeof value, "a JSON-serialisable value");
  }
  if (json === undefined) throw new InvalidValue(field, typeof value, "a JSON value");
  // jsonb cannot hold \u0000 in strings; refuse rather than fail in SQL.
  if (json.includes("\\u0000")) throw new InvalidValue(field, "…", "JSON without NUL characters");
  return json;
}

/**
 * Appends an audit entry as part of the caller's query context (a transaction when the entry
 * must commit or roll back with the change it records).
 */
export async function insertAudit(
  q: Queryable,
  entry: { actor: string; action: string; target: string; before?: unknown; after?: unknown },
): Promise<AuditEntry> {
  const res = await q.query<AuditRow>(
    `INSERT INTO operator_audit (actor, action, target, before, after)
     VALUES ($1, $2, $3, $4::jsonb, $5::jsonb)
     RETURNING id, actor, action, target, before, after, recorded_at`,
    [
      v.actor(entry.actor),
      v.text("action", entry.action, 128, 1),
      v.text("target", entry.target, 512),
      jsonParam("before", entry.before),
      jsonParam("after", entry.after),
    ],
  );
  return toEntry(res.rows[0]);
}

export class PgAuditRepo implements AuditRepo {
  constructor(private readonly db: Db) {}

  append(
    entry: { actor: string; action: string; target: string; before?: unknown; after?: unknown },
  ): Promise<AuditEntry> {
    return insertAudit(this.db, entry);
  }

  /** Newest first; filters match exactly. */
  async list(
    filter: { actor?: string; action?: string; target?: string } & PageRequest,
  ): Promise<Page<AuditEntry>> {
    const limit = pageLimit(filter.limit);
    const after = decodeCursor(filter.cursor, ["int"]);
    const res = await this.db.query<AuditRow>(
      `SELECT id, actor, action, target, before, after, recorded_at FROM operator_audit
       WHERE ($1::text IS NULL OR actor = $1)
         AND ($2::text IS NULL OR action = $2)
         AND ($3::text IS NULL OR target = $3)
         AND ($4::int8 IS NULL OR id < $4)
       ORDER BY id DESC
       LIMIT $5`,
      [
        filter.actor === undefined ? null : v.text("actor", filter.actor, 256),
        filter.action === undefined ? null : v.text("action", filter.action, 128),
        filter.target === undefined ? null : v.text("target", filter.target, 512),
        after?.[0] ?? null,
        limit + 1,
      ],
    );
    return toPage(res.rows, limit, toEntry, (r) => [String(r.id)]);
  }
}
