/**
 * What both SDK entries export (client/mod.ts for Deno, client/browser.ts for browsers): the
 * client core, sealed messages, trust, channel ids and the transport names. Each entry adds
 * what only it has.
 *
 * @module
 */
export {
  type AckResult,
  type Client,
  type ClientEvents,
  connect,
  type ConnectOptions,
  type CreateGroupOptions,
  type DeliveryReceipt,
  type InboundKind,
  type InboundMessage,
  type JoinOptions,
  parseServerKey,
  type ReconnectPolicy,
  type RemoteCopy,
  type ServerKeyUpdate,
} from "./sdk.ts";
export { CommuCatError, type ErrorSource } from "./errors.ts";
export {
  type DirectoryEntry,
  E2E,
  E2EError,
  type E2EErrorCode,
  type E2EEvents,
  type E2EOptions,
  type SealedAck,
  type SealedFields,
} from "./e2e.ts";
export { type PeerRecord, safetyNumber, TrustStore } from "./trust.ts";
export { directChannelId, groupChannelId } from "./channels.ts";
export { isLoopbackHost, type Transport, type TransportKind, websocketUrl } from "./transport.ts";
