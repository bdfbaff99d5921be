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
export * from "./surface.ts";
export {
  type BrowserDevice,
  type BrowserDeviceSummary,
  BrowserKeystore,
  BrowserKeystoreError,
  keyFingerprint,
  MAX_BROWSER_DEVICES,
} from "./browser_keystore.ts";
