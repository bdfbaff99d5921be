/**
 * The CommuCat client SDK for Deno: connect a device to a relay server (TCP, TLS, HTTP
 * `/connect` or WebSocket; Noise XK or IK; protocol v1 or v2), join channels, send and receive
 * frames. See docs/CLIENT.md; the browser entry is client/browser.ts.
 *
 * @module
 */
import "./transport_deno.ts";

export * from "./surface.ts";
export { type Conversation, EnvelopeError, type EnvelopeErrorCode } from "../protocol/envelope.ts";
export {
  defaultKeyFile,
  type DeviceIdentity,
  KeystoreError,
  loadOrCreateIdentity,
  newDeviceId,
  openTrustStore,
  readServerPin,
  type ServerPin,
  serverPinFileFor,
  trustFileFor,
  writeServerPin,
} from "./keystore.ts";
export type { TransportOptions } from "./transport.ts";
