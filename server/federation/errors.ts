/**
 * Federation's problems: one typed error for refusals on the relay side (the server turns it
 * into a non-fatal ERROR frame for the sender); the inbound HTTP endpoint answers the same
 * titles with `problemResponse` (protocol/errors.ts).
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
  invalidOffset: "invalid offset",
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
