/**
 * The SDK's one error type: a server ERROR frame (ccp1.md §2) or a failure the client found
 * itself (timeout, closed connection, a server that broke the protocol), with the same
 * problem fields either way.
 *
 * @module
 */

import { ProtocolError } from "../protocol/errors.ts";

/** Where a {@link CommuCatError} came from. */
export type ErrorSource = "server" | "client";

/**
 * A problem with `title`, `status`, `fatal` and `detail`, plus the outbound `sequence` it
 * answers when the server named one, and whether the server sent it or the client raised it.
 */
export class CommuCatError extends ProtocolError {
  /** The client's outbound sequence the server's ERROR refers to, when it named one. */
  readonly sequence: number | undefined;
  /** "server" for an ERROR frame received, "client" for a failure found locally. */
  readonly source: ErrorSource;

  /** Creates an error; see {@link fromProblem} for server ERROR payloads. */
  constructor(
    title: string,
    status: number,
    detail: string,
    options: {
      fatal?: boolean;
      sequence?: number;
      source?: ErrorSource;
      cause?: unknown;
      retryAfter?: number;
    } = {},
  ) {
    super(title, status, detail, {
      fatal: options.fatal ?? true,
      cause: options.cause,
      retryAfter: options.retryAfter,
    });
    this.name = "CommuCatError";
    this.sequence = options.sequence;
    this.source = options.source ?? "client";
  }

  /**
   * True when sending the same thing again later may succeed: 429 (rate limited; wait
   * `retryAfter` seconds) and 503 (a server part such as Postgres or Redis failed, or the
   * connection closed).
   */
  get retryable(): boolean {
    return this.status === 429 || this.status === 503;
  }

  /**
   * Builds the error an ERROR frame's JSON describes. A payload that is not a problem
   * object still becomes a (fatal) error naming what was wrong with it.
   */
  static fromProblem(value: unknown): CommuCatError {
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      return new CommuCatError(
        "Invalid Control Payload",
        400,
        "server sent an ERROR frame whose payload is not a JSON object",
        { source: "server" },
      );
    }
    const v = value as Record<string, unknown>;
    const title = typeof v.title === "string" ? v.title : "Unknown Error";
    const status = typeof v.status === "number" ? v.status : 500;
    const detail = typeof v.detail === "string" ? v.detail : "";
    // A problem that does not say otherwise is treated as fatal: the safe reading.
    const fatal = typeof v.fatal === "boolean" ? v.fatal : true;
    const sequence = typeof v.sequence === "number" ? v.sequence : undefined;
    const retryAfter = typeof v.retry_after === "number" && v.retry_after >= 0
      ? v.retry_after
      : undefined;
    return new CommuCatError(title, status, detail, {
      fatal,
      sequence,
      source: "server",
      retryAfter,
    });
  }
}

/** The connection closed (or was never open) while a request waited. */
export function connectionClosed(detail: string, cause?: unknown): CommuCatError {
  return new CommuCatError("Connection Closed", 503, detail, { cause });
}

/** Any failure as a CommuCatError (protocol errors keep their title, status and fatality). */
export function toCommuCatError(error: unknown, fallbackTitle = "Client Error"): CommuCatError {
  if (error instanceof CommuCatError) return error;
  if (error instanceof ProtocolError) {
    return new CommuCatError(error.title, error.status, error.detail, {
      fatal: error.fatal,
      cause: error,
    });
  }
  const message = error instanceof Error ? error.message : String(error);
  return new CommuCatError(fallbackTitle, 503, message, { cause: error });
}
