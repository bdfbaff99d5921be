/**
 * The CommuCat client SDK for Deno: connect a device to a relay server (TCP, TLS, HTTP
 * `/connect` or WebSocket; Noise XK or IK; protocol v1 or v2), join channels, send and receive
 * frames. See docs/CLIENT.md; the browser entry is client/browser.ts.
 *
 * @module
 */
import "./transport_deno.ts";

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
export { type Conversation, EnvelopeError, type EnvelopeErrorCode } from "../protocol/envelope.ts";
export { directChannelId, groupChannelId } from "./channels.ts";
export {
  defaultKeyFile,
  type DeviceIdentity,
  KeystoreError,
  loadOrCreateIdentity,
  newDeviceId,
  openTrustStore,
  trustFileFor,
} from "./keystore.ts";
export {
  isLoopbackHost,
  type Transport,
  type TransportKind,
  type TransportOptions,
  websocketUrl,
} from "./transport.ts";
