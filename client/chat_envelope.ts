/**
 * What the chat client puts inside MSG payloads: a small UTF-8 JSON envelope.
 *
 * ```json
 * {"v":1,"kind":"text","id":"9f2c…","from":"alice-laptop","sent_at":"2026-…Z","text":"hi"}
 * {"v":1,"kind":"receipt","id":"9f2c…","from":"bob-phone"}
 * ```
 *
 * A `receipt` goes back when a text message arrives, which is how the sender learns the
 * message reached the other device (the server's ACK only says it was relayed or queued).
 * The envelope is not encrypted end to end: the server could read it (see docs/CLIENT.md).
 *
 * @module
 */
import { bytesToHex } from "../protocol/hex.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** A chat text message. */
export interface TextEnvelope {
  v: 1;
  kind: "text";
  id: string;
  from: string;
  sent_at: string;
  text: string;
}

/** A delivery receipt for the text message `id`. */
export interface ReceiptEnvelope {
  v: 1;
  kind: "receipt";
  id: string;
  from: string;
}

/** Any chat envelope. */
export type Envelope = TextEnvelope | ReceiptEnvelope;

/** A fresh message id (16 hex characters). */
export function messageId(): string {
  return bytesToHex(crypto.getRandomValues(new Uint8Array(8)));
}

/** Encodes an envelope as MSG payload bytes. */
export function encodeEnvelope(envelope: Envelope): Uint8Array {
  return encoder.encode(JSON.stringify(envelope));
}

/**
 * Decodes MSG payload bytes. Payloads from other clients that are not chat envelopes come
 * back as `{ raw }` (their text when UTF-8, else a hex preview).
 */
export function decodeEnvelope(payload: Uint8Array): Envelope | { raw: string } {
  let text: string;
  try {
    text = decoder.decode(payload);
  } catch {
    const hex = bytesToHex(payload.subarray(0, 32));
    return { raw: `<${payload.length} bytes: ${hex}${payload.length > 32 ? "…" : ""}>` };
  }
  try {
    const v = JSON.parse(text);
    if (v && v.v === 1 && typeof v.id === "string" && typeof v.from === "string") {
      if (v.kind === "text" && typeof v.text === "string") {
        return {
          v: 1,
          kind: "text",
          id: v.id,
          from: v.from,
          sent_at: typeof v.sent_at === "string" ? v.sent_at : "",
          text: v.text,
        };
      }
      if (v.kind === "receipt") return { v: 1, kind: "receipt", id: v.id, from: v.from };
    }
  } catch {
    // Plain text from another client.
  }
  return { raw: text };
}
