/// <reference lib="dom" />
/**
 * The CommuCat client SDK for browsers: the same core as client/mod.ts (connect, channels,
 * sealed messages, trust), over the WebSocket transport, with the device key kept in
 * IndexedDB (client/browser_keystore.ts). Served as /chat/static/commucat.js (web/bundle.ts).
 *
 * ```ts
 * import { BrowserKeystore, connect } from "/chat/static/commucat.js";
 * const me = await (await BrowserKeystore.open()).create("alice laptop");
 * const client = await connect({ transport: "ws", deviceId: me.deviceId, keypair: me.keypair, serverKey });
 * ```
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
export {
  type BrowserDevice,
  type BrowserDeviceSummary,
  BrowserKeystore,
  BrowserKeystoreError,
  keyFingerprint,
  MAX_BROWSER_DEVICES,
} from "./browser_keystore.ts";
