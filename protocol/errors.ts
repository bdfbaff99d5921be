/**
 * Errors of the protocol layer and their RFC 9457 problem form (ccp1.md §1–§2).
 *
 * `ProblemError` is the error base of every layer (title, status, detail, fatal, cause);
 * `ProtocolError` is this layer's: it maps to one ERROR frame, and `fatal` (default true)
 * closes the connection. `CodecError` is the subclass thrown by the frame codec; codec
 * failures are always fatal and always carry one of the nine titles of ccp1.md §1.
 *
 * @module
 */

/** The nine codec error titles of ccp1.md §1, in the order the spec lists them. */
export const CODEC_ERROR_TITLES = [
  "Invalid Frame Type",
  "Protocol Version Mismatch",
  "Invalid Control Payload",
  "Frame Too Large",
  "Payload Too Large",
  "Control Payload Too Large",
  "Identifier Out Of Range",
  "Varint Overflow",
  "Truncated Frame",
] as const;

/** One of the nine codec error titles. */
export type CodecErrorTitle = typeof CODEC_ERROR_TITLES[number];

/**
 * The status each codec title carries in its ERROR frame.
 *
 * - 400: malformed bytes (`Invalid Frame Type`, `Invalid Control Payload`,
 *   `Identifier Out Of Range`, `Varint Overflow`, `Truncated Frame`).
 * - 413: a declared or supplied size over a limit (`Frame Too Large`,
 *   `Payload Too Large`, `Control Payload Too Large`).
 * - 426: `Protocol Version Mismatch` (the peer must upgrade).
 */
export const CODEC_ERROR_STATUS: Readonly<Record<CodecErrorTitle, number>> = Object.freeze({
  "Invalid Frame Type": 400,
  "Protocol Version Mismatch": 426,
  "Invalid Control Payload": 400,
  "Frame Too Large": 413,
  "Payload Too Large": 413,
  "Control Payload Too Large": 413,
  "Identifier Out Of Range": 400,
  "Varint Overflow": 400,
  "Truncated Frame": 400,
});

/**
 * The ERROR payload of ccp1.md §2: an RFC 9457 problem plus `fatal` and, when one inbound
 * frame caused it, that frame's `sequence`.
 */
export interface Problem {
  type: "about:blank";
  title: string;
  status: number;
  detail: string;
  fatal: boolean;
  sequence?: number;
  /** With status 429 (rate limited) or 503: whole seconds to wait before trying again. */
  retry_after?: number;
}

/** Options for {@link ProblemError}. */
export interface ProblemErrorOptions {
  /** Whether the failure ends what it happened in (the connection, the process); default false. */
  fatal?: boolean;
  /** The underlying cause, kept for logs (never sent to a peer). */
  cause?: unknown;
  /** `Error.message`, when it should differ from `detail` (default: `detail`). */
  message?: string;
  /** Seconds the peer should wait before trying again (sent as `retry_after`). */
  retryAfter?: number;
}

/**
 * The one error base of CommuCat: every layer's error is an RFC 9457 problem with a Title Case
 * `title`, an HTTP-style `status`, a `detail` that names what was wrong, whether it is `fatal`,
 * and an optional `cause`. Storage, console, config, crypto, federation, ledger and CLI errors
 * extend it; {@link toProblem} turns any error into a problem, and {@link problemResponse}
 * answers one over HTTP.
 */
export class ProblemError extends Error {
  /** Problem title, e.g. "Invalid Control Payload", "Not Found". */
  readonly title: string;
  /** HTTP-style status, e.g. 400, 403, 404, 409, 413, 426, 429, 503. */
  readonly status: number;
  /** Human-readable explanation naming what was wrong. */
  readonly detail: string;
  /** Whether the failure ends the connection (or the process) it happened in. */
  readonly fatal: boolean;
  /** Seconds to wait before trying again, when the refusal says so. */
  readonly retryAfter: number | undefined;

  constructor(title: string, status: number, detail: string, options: ProblemErrorOptions = {}) {
    super(
      options.message ?? detail,
      options.cause === undefined ? undefined : { cause: options.cause },
    );
    this.name = new.target.name;
    this.title = title;
    this.status = status;
    this.detail = detail;
    this.fatal = options.fatal ?? false;
    this.retryAfter = options.retryAfter;
  }

  /**
   * The problem (CCP-1 ERROR payload) for this error. `sequence` is the offending inbound
   * frame's sequence; it is included only when given.
   */
  toProblem(sequence?: number): Problem {
    const problem: Problem = {
      type: "about:blank",
      title: this.title,
      status: this.status,
      detail: this.detail,
      fatal: this.fatal,
    };
    if (sequence !== undefined) problem.sequence = sequence;
    if (this.retryAfter !== undefined) problem.retry_after = this.retryAfter;
    return problem;
  }
}

/** Options for {@link ProtocolError}. */
export interface ProtocolErrorOptions {
  /** Whether the connection must close after the ERROR frame; default true. */
  fatal?: boolean;
  /** The underlying cause, kept for logs (never sent to the peer). */
  cause?: unknown;
  /** Seconds the peer should wait before trying again (sent as `retry_after`). */
  retryAfter?: number;
}

/**
 * A protocol-level failure that maps to one ERROR frame.
 *
 * `message` is `"<title>: <detail>"` so logs read well; the peer sees `title` and `detail`
 * through {@link ProblemError.toProblem}.
 */
export class ProtocolError extends ProblemError {
  /** Creates an error; `fatal` defaults to true. */
  constructor(title: string, status: number, detail: string, options: ProtocolErrorOptions = {}) {
    super(title, status, detail, {
      fatal: options.fatal ?? true,
      cause: options.cause,
      retryAfter: options.retryAfter,
      message: `${title}: ${detail}`,
    });
    this.name = "ProtocolError";
  }
}

/** What {@link toProblem} answers for an error that is not a {@link ProblemError}. */
export const INTERNAL_PROBLEM: Readonly<Problem> = Object.freeze({
  type: "about:blank",
  title: "Internal Error",
  status: 500,
  detail: "the request could not be completed; the error was logged",
  fatal: true,
});

/**
 * The RFC 9457 problem for any error: a {@link ProblemError}'s own fields, anything else the
 * generic {@link INTERNAL_PROBLEM} (whose internals are never shown to a peer).
 */
export function toProblem(error: unknown, sequence?: number): Problem {
  if (error instanceof ProblemError) return error.toProblem(sequence);
  const problem: Problem = { ...INTERNAL_PROBLEM };
  if (sequence !== undefined) problem.sequence = sequence;
  return problem;
}

/**
 * An `application/problem+json` response (RFC 9457): `{type, title, status, detail}` plus
 * `extra` members (such as `field` or `event_id`) and extra `headers` (such as `allow`).
 */
export function problemResponse(
  status: number,
  title: string,
  detail: string,
  extra: Record<string, unknown> = {},
  headers: Record<string, string> = {},
): Response {
  return new Response(
    JSON.stringify({ type: "about:blank", title, status, detail, ...extra }),
    { status, headers: { "content-type": "application/problem+json", ...headers } },
  );
}

/**
 * A frame codec failure: always one of the nine titles, the status of
 * {@link CODEC_ERROR_STATUS}, and always fatal (a broken byte stream cannot be resynchronised).
 */
export class CodecError extends ProtocolError {
  declare readonly title: CodecErrorTitle;

  /** Creates a codec error with the status that belongs to `title`. */
  constructor(title: CodecErrorTitle, detail: string, options: { cause?: unknown } = {}) {
    super(title, CODEC_ERROR_STATUS[title], detail, { fatal: true, cause: options.cause });
    this.name = "CodecError";
  }
}
