/**
 * Errors of the protocol layer and their RFC 9457 problem form (ccp1.md §1–§2).
 *
 * `ProtocolError` is the one error type of this layer: it knows its problem `title`,
 * HTTP-style `status`, whether it is `fatal` (closes the connection) and a `detail` that
 * names what was wrong. `CodecError` is the subclass thrown by the frame codec; codec
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
 * through {@link ProtocolError.toProblem}.
 */
export class ProtocolError extends Error {
  /** Problem title, e.g. "Invalid Control Payload". */
  readonly title: string;
  /** HTTP-style status, e.g. 400, 403, 413, 426, 429. */
  readonly status: number;
  /** Whether the connection closes once the ERROR frame is flushed. */
  readonly fatal: boolean;
  /** Human-readable explanation naming what was wrong. */
  readonly detail: string;
  /** Seconds to wait before trying again, when the refusal says so. */
  readonly retryAfter: number | undefined;

  /** Creates an error; `fatal` defaults to true. */
  constructor(title: string, status: number, detail: string, options: ProtocolErrorOptions = {}) {
    super(
      `${title}: ${detail}`,
      options.cause === undefined ? undefined : { cause: options.cause },
    );
    this.name = "ProtocolError";
    this.title = title;
    this.status = status;
    this.detail = detail;
    this.fatal = options.fatal ?? true;
    this.retryAfter = options.retryAfter;
  }

  /**
   * The ERROR payload for this error. `sequence` is the offending inbound frame's sequence;
   * it is included only when given.
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
