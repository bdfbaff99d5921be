/** Users (`app_user`): create, look up by id or handle, update profile, list. */
import type { Db, Queryable } from "../db.ts";
import { Conflict, NotFound } from "../errors.ts";
import { decodeCursor, pageLimit, toPage } from "../pagination.ts";
import type { AuditNote, Page, PageRequest, User, UserRepo } from "../types.ts";
import { toUser, USER_COLUMNS, type UserRow } from "./rows.ts";
import * as v from "./validate.ts";
import { insertAudit } from "./audit.ts";

export const DISPLAY_NAME_MAX = 256;
export const AVATAR_URL_MAX = 2048;

export interface NewUser {
  handle: string;
  displayName?: string | null;
  avatarUrl?: string | null;
  id?: string;
}

/** Validate a new user's fields; returns them normalised (absent → null, id generated). */
export function validateNewUser(input: NewUser): Required<NewUser> {
  return {
    id: input.id === undefined ? crypto.randomUUID() : v.newId("user id", input.id),
    handle: v.handle(input.handle),
    displayName: v.optionalText("display name", input.displayName, DISPLAY_NAME_MAX) ?? null,
    avatarUrl: v.optionalText("avatar url", input.avatarUrl, AVATAR_URL_MAX) ?? null,
  };
}

/**
 * Insert a user unless its id or handle exists; returns the row, or null when either was taken
 * (concurrent creators then read the winner's row instead of failing on a unique violation).
 */
export async function insertUser(q: Queryable, u: Required<NewUser>): Promise<User | null> {
  const res = await q.query<UserRow>(
    `INSERT INTO app_user (user_id, handle, display_name, avatar_url)
     VALUES ($1, $2, $3, $4)
     ON CONFLICT DO NOTHING
     RETURNING ${USER_COLUMNS}`,
    [u.id, u.handle, u.displayName, u.avatarUrl],
  );
  return res.rows[0] ? toUser(res.rows[0]) : null;
}

export async function userById(q: Queryable, id: string): Promise<User | null> {
  const res = await q.query<UserRow>(`SELECT ${USER_COLUMNS} FROM app_user WHERE user_id = $1`, [
    id,
  ]);
  return res.rows[0] ? toUser(res.rows[0]) : null;
}

export async function userByHandle(q: Queryable, handle: string): Promise<User | null> {
  const res = await q.query<UserRow>(`SELECT ${USER_COLUMNS} FROM app_user WHERE handle = $1`, [
    handle,
  ]);
  return res.rows[0] ? toUser(res.rows[0]) : null;
}

export class PgUserRepo implements UserRepo {
  constructor(private readonly db: Db) {}

  /** Create a user; a taken handle or id is a Conflict naming it. */
  async create(input: NewUser, audit?: AuditNote): Promise<User> {
    const u = validateNewUser(input);
    const created = audit
      ? await this.db.transaction(async (q) => {
        const user = await insertUser(q, u);
        if (user) {
          await insertAudit(q, {
            ...audit,
            target: `user:${user.id}`,
            before: null,
            after: {
              handle: user.handle,
              displayName: user.displayName,
              avatarUrl: user.avatarUrl,
            },
          });
        }
        return user;
      })
      : await insertUser(this.db, u);
    if (created) return created;
    if (await userByHandle(this.db, u.handle)) {
      throw new Conflict(`handle ${JSON.stringify(u.handle)} is already taken`);
    }
    throw new Conflict(`user ${JSON.stringify(u.id)} already exists`);
  }

  get(id: string): Promise<User | null> {
    return userById(this.db, v.id("user id", id));
  }

  getByHandle(handle: string): Promise<User | null> {
    return userByHandle(this.db, v.storedHandle(handle));
  }

  /** Change display name and/or avatar (undefined = unchanged, null = cleared). */
  async update(
    id: string,
    changes: { displayName?: string | null; avatarUrl?: string | null },
  ): Promise<User> {
    v.id("user id", id);
    const displayName = v.optionalText("display name", changes.displayName, DISPLAY_NAME_MAX);
    const avatarUrl = v.optionalText("avatar url", changes.avatarUrl, AVATAR_URL_MAX);
    const res = await this.db.query<UserRow>(
      `UPDATE app_user SET
         display_name = CASE WHEN $2 THEN $3 ELSE display_name END,
         avatar_url = CASE WHEN $4 THEN $5 ELSE avatar_url END,
         updated_at = now()
       WHERE user_id = $1
       RETURNING ${USER_COLUMNS}`,
      [
        id,
        displayName !== undefined,
        displayName ?? null,
        avatarUrl !== undefined,
        avatarUrl ?? null,
      ],
    );
    if (!res.rows[0]) throw new NotFound("user", id);
    return toUser(res.rows[0]);
  }

  /** Users in handle order; `search` is a case-insensitive handle prefix. */
  async list(filter: { search?: string } & PageRequest): Promise<Page<User>> {
    const limit = pageLimit(filter.limit);
    const after = decodeCursor(filter.cursor, ["text"]);
    const pattern = filter.search ? v.prefixPattern("search", filter.search) : null;
    const res = await this.db.query<UserRow>(
      `SELECT ${USER_COLUMNS} FROM app_user
       WHERE ($1::text IS NULL OR lower(handle) LIKE $1)
         AND ($2::text IS NULL OR handle > $2)
       ORDER BY handle
       LIMIT $3`,
      [pattern, after?.[0] ?? null, limit + 1],
    );
    return toPage(res.rows, limit, toUser, (r) => [r.handle]);
  }
}
