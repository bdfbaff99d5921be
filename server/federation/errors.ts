/**
 * Federation's problems: one typed error for refusals on the relay side (the server turns it
 * into a non-fatal ERROR frame for the sender) and RFC 9457 problem responses for the inbound
 * HTTP endpoint.
 *
 * @module
 */
import { ProtocolError } from "../../protocol/errors.ts";

/** Problem titles federation uses, on the relay side and over HTTP. */
export const FederationTitles = {
  peerNotAllowed: "federation peer not allowed",
  invalidTarget: "invalid federation target",
  invalidSender: "invalid federation sender",
  frameTooLarge: "federation frame too large",
  invalidFrame: "invalid frame",
  invalidEvent: "invalid event",
  invalidSignature: "invalid signature",
  clockSkew: "clock skew",
  replayedEvent: "replayed event",
  misdirectedEvent: "misdirected event",
  eventTooLarge: "event too large",
  methodNotAllowed: "method not allowed",
  unsupportedMediaType: "unsupported media type",
  busy: "federation busy",
  deliveryFailed: "delivery failed",
} as const;

/**
 * A refusal by federation. Non-fatal: the sender's connection stays open and it receives an
 * ERROR frame with this title and status (e.g. 403 "federation peer not allowed").
 */
export class FederationRefused extends ProtocolError {
  constructor(title: string, status: number, detail: string, options: { cause?: unknown } = {}) {
    super(title, status, detail, { fatal: false, cause: options.cause });
    this.name = "FederationRefused";
  }
}

/** An RFC 9457 problem document as the inbound endpoint answers it. */
export interface HttpProblem {
  type: "about:blank";
  title: string;
  status: number;
  detail: string;
  /** The offending field of the event, when one field was wrong. */
  field?: string;
}

/** A problem response (`application/problem+json`). */
export function problemResponse(
  status: number,
  title: string,
  detail: string,
  extra: { field?: string; headers?: Record<string, string> } = {},
): Response {
  const body: HttpProblem = { type: "about:blank", title, status, detail };
  if (extra.field !== undefined) body.field = extra.field;
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/problem+json", ...extra.headers },
  });
}
