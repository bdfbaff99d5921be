/** Typed storage errors; each maps to an RFC 9457 problem (title + status). */
export class StorageError extends Error {
  constructor(
    readonly title: string,
    readonly status: number,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Postgres (or the embedded database) failed: check the DSN, role rights and migrations. */
export class StorageFailure extends StorageError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("storage failure", 503, message, options);
  }
}

/** Redis failed: check reachability, ACL and the DB index. */
export class RedisFailure extends StorageError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("redis failure", 503, message, options);
  }
}

export class NotFound extends StorageError {
  constructor(what: string, id: string) {
    super("not found", 404, `${what} ${JSON.stringify(id)} not found`);
  }
}

/** A value that is not acceptable; the message names the field and the value. */
export class InvalidValue extends StorageError {
  constructor(readonly field: string, readonly value: unknown, expected: string) {
    super("invalid value", 400, `invalid ${field} ${JSON.stringify(value)}: expected ${expected}`);
  }
}

export class TransitionNotAllowed extends StorageError {
  constructor(what: string, from: string, to: string) {
    super("transition not allowed", 409, `${what} cannot go from ${from} to ${to}`);
  }
}

export class Conflict extends StorageError {
  constructor(message: string) {
    super("conflict", 409, message);
  }
}

/** The troubleshooting hint the guide gives for a failure, or null. */
export function troubleshootingHint(err: unknown): string | null {
  if (err instanceof StorageFailure) {
    return "storage failure: check the DSN, the role's rights and migrations (deno task cli migrate)";
  }
  if (err instanceof RedisFailure) {
    return "redis failure: check that Redis is reachable, the ACL and the DB index";
  }
  return null;
}
