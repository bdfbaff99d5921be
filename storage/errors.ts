/**
 * Typed storage errors: each is a {@link ProblemError} (Title Case `title`, `status`, and a
 * `detail` that is also its `message`), so the relay, the console and the CLI report them the
 * same way (server/errors.ts `refusalFor` turns one into a protocol refusal).
 */
import { ProblemError } from "../protocol/errors.ts";

/** The base of every storage error. Not fatal by itself: the caller decides. */
export class StorageError extends ProblemError {
  constructor(title: string, status: number, detail: string, options?: { cause?: unknown }) {
    super(title, status, detail, { cause: options?.cause });
  }
}

/** Postgres (or the embedded database) failed: check the DSN, role rights and migrations. */
export class StorageFailure extends StorageError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("Storage Failure", 503, message, options);
  }
}

/** Redis failed: check reachability, ACL and the DB index. */
export class RedisFailure extends StorageError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("Redis Failure", 503, message, options);
  }
}

export class NotFound extends StorageError {
  constructor(what: string, id: string) {
    super("Not Found", 404, `${what} ${JSON.stringify(id)} not found`);
  }
}

/** A value that is not acceptable; the message names the field and the value. */
export class InvalidValue extends StorageError {
  constructor(readonly field: string, readonly value: unknown, expected: string) {
    super("Invalid Value", 400, `invalid ${field} ${JSON.stringify(value)}: expected ${expected}`);
  }
}

export class TransitionNotAllowed extends StorageError {
  constructor(what: string, from: string, to: string) {
    super("Transition Not Allowed", 409, `${what} cannot go from ${from} to ${to}`);
  }
}

/** The acting device's role does not allow the change (group role rules). */
export class NotPermitted extends StorageError {
  constructor(message: string) {
    super("Not Permitted", 403, message);
  }
}

/**
 * A handshake's pairing code or registration was refused (docs/PROTOCOL.md §11): nothing was
 * registered; the wrong attempt, if any, is counted. `refusal` says why.
 */
export class PairingRefused extends StorageError {
  constructor(
    readonly refusal:
      | "wrong-code"
      | "expired"
      | "used"
      | "burned"
      | "device-limit"
      | "not-pairable",
    message: string,
    readonly userId: string | null = null,
  ) {
    super("Pairing Refused", 403, message);
  }
}

export class Conflict extends StorageError {
  constructor(message: string) {
    super("Conflict", 409, message);
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
