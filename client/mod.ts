/**
 * The CommuCat client SDK: connect a device to a relay server (TCP, TLS or HTTP `/connect`;
 * Noise XK or IK; protocol v1 or v2), join channels, send and receive frames.
 * See docs/CLIENT.md.
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
  type InboundKind,
  type InboundMessage,
  type JoinOptions,
  parseServerKey,
  type ReconnectPolicy,
} from "./sdk.ts";
export { CommuCatError, type ErrorSource } from "./errors.ts";
export { directChannelId, groupChannelId } from "./channels.ts";
export {
  defaultKeyFile,
  type DeviceIdentity,
  KeystoreError,
  loadOrCreateIdentity,
  newDeviceId,
} from "./keystore.ts";
export { isLoopbackHost, type TransportKind } from "./transport.ts";
