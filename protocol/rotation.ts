/**
 * Proof of a new device key for the `rotate_key` server request (ccp1.md §4.4): one
 * `Noise_X_25519_ChaChaPoly_BLAKE2s` message written with the NEW static key to the server's
 * static key, prologue `commucat-rotate-key`, payload the session id (UTF-8). Only the holder of
 * the new private key can write it; the session id binds it to one authenticated session of the
 * old key, so it cannot be replayed elsewhere.
 *
 * @module
 */
import { type LocalKey, readOneWayX, writeOneWayX } from "./noise.ts";
import type { Keypair } from "./crypto.ts";

/** The prologue a rotation proof is bound to. */
export const ROTATE_KEY_PROLOGUE = "commucat-rotate-key";

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** The proof that the holder of `newKey` asks to replace the key of session `sessionId`. */
export function writeRotationProof(
  newKey: Keypair,
  serverStatic: Uint8Array,
  sessionId: string,
): Uint8Array {
  return writeOneWayX({
    sender: newKey,
    recipient: serverStatic,
    prologue: encoder.encode(ROTATE_KEY_PROLOGUE),
    payload: encoder.encode(sessionId),
  });
}

/**
 * Reads a proof addressed to `server`: the new key it proves and the session it names (null
 * when the payload is not UTF-8). Throws NoiseError when it does not verify.
 */
export function readRotationProof(
  server: LocalKey,
  proof: Uint8Array,
): { newKey: Uint8Array; sessionId: string | null } {
  const { senderStatic, payload } = readOneWayX({
    recipient: server,
    prologue: encoder.encode(ROTATE_KEY_PROLOGUE),
    message: proof,
  });
  let sessionId: string | null = null;
  try {
    sessionId = decoder.decode(payload);
  } catch { /* refused by the caller */ }
  return { newKey: senderStatic, sessionId };
}
