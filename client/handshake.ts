/**
 * The client (initiator) side of the CCP-1 handshake, ccp1.md §3:
 *
 * ```
 * XK: → HELLO{msg1: e, es}   ← AUTH{msg2: e, ee}   → AUTH{msg3: s, se}   ← ACK{handshake:"ok"}
 * IK: → HELLO{msg1: e, es, s, ss}   ← AUTH{msg2: e, ee, se}              ← ACK{handshake:"ok"}
 * ```
 *
 * Under v2 the completion ACK is the first frame inside the secure stream. Any ERROR frame
 * on the way becomes a rejected {@link CommuCatError} with the server's title and status.
 *
 * @module
 */

import { bytesEqual, type Keypair } from "../protocol/crypto.ts";
import {
  type HandshakePattern,
  type HelloUser,
  parseAck,
  parseServerAuth,
  type UserInfo,
} from "../protocol/control.ts";
import { encodeControl, type Frame, FRAME_TYPE_NAMES, FrameType } from "../protocol/frame.ts";
import { bytesToHex, hexToBytes } from "../protocol/hex.ts";
import { type CipherState, HandshakeState } from "../protocol/noise.ts";
import { CommuCatError } from "./errors.ts";
import type { FrameReader } from "./framing.ts";
import type { Transport } from "./transport.ts";

/** What the client proves and offers in the handshake. */
export interface HandshakeParams {
  pattern: HandshakePattern;
  deviceId: string;
  /** The device's static X25519 keypair. */
  keypair: Keypair;
  /** The server's static X25519 public key, known in advance (XK and IK both need it). */
  serverStatic: Uint8Array;
  prologue: string;
  /** Protocol versions offered; the server picks the highest common one. */
  versions: number[];
  user?: HelloUser;
  capabilities: string[];
  /** A pairing code from another device of `user` (docs/PROTOCOL.md §11). */
  pairingCode?: string;
}

/** The outcome of a completed handshake. */
export interface HandshakeResult {
  session: string;
  /** The server's domain, from the authenticated Noise payload of message 2. */
  domain: string;
  protocolVersion: number;
  user: UserInfo;
  /** The Noise handshake hash (channel binding). */
  handshakeHash: Uint8Array;
  /** Split CipherStates: used for the v2 secure stream, unused under v1. */
  send: CipherState;
  recv: CipherState;
  /** The next outbound sequence after the handshake frames. */
  nextSequence: number;
  /** The capabilities the server granted in AUTH (e.g. "sender", ccp1.md §4.2). */
  capabilities: string[];
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * Runs the handshake over `transport`, reading through `reader` (left at the start of the
 * post-handshake stream, already switched to the secure stream under v2). Rejects with a
 * CommuCatError on an ERROR frame, a protocol violation by the server or end of stream.
 */
export async function runHandshake(
  transport: Transport,
  reader: FrameReader,
  params: HandshakeParams,
): Promise<HandshakeResult> {
  const noise = new HandshakeState({
    pattern: params.pattern,
    initiator: true,
    prologue: encoder.encode(params.prologue),
    s: params.keypair,
    rs: params.serverStatic,
  });
  let sequence = 1;

  const hello: Record<string, unknown> = {
    pattern: params.pattern,
    device_id: params.deviceId,
    client_static: bytesToHex(params.keypair.publicKey),
    handshake: bytesToHex(noise.writeMessage(new Uint8Array(0))),
    supported_versions: params.versions,
    capabilities: params.capabilities,
  };
  // A server provisioning a new user needs an id or a handle: default the handle to the
  // device id rather than have the first handshake of a fresh device refused.
  const user = { ...params.user };
  if (user.id === undefined && user.handle === undefined) user.handle = params.deviceId;
  hello.user = user;
  if (params.pairingCode !== undefined) hello.pairing_code = params.pairingCode;
  await transport.write(encodeControl(FrameType.Hello, 0, sequence++, hello));

  const authFrame = expectFrame(await reader.nextHandshakeFrame(), FrameType.Auth, "AUTH");
  const auth = parseServerAuth(authFrame.json);
  const serverStatic = hexToBytes(auth.server_static);
  if (!bytesEqual(serverStatic, params.serverStatic)) {
    // Noise would fail anyway (es/ss use the key we expect); say why in plain words.
    throw violation(
      `server_static ${auth.server_static} is not the server key this client trusts ` +
        `(${bytesToHex(params.serverStatic)})`,
    );
  }
  let payload: Uint8Array;
  try {
    payload = noise.readMessage(hexToBytes(auth.handshake));
  } catch (cause) {
    throw violation("handshake message 2 failed to verify (wrong server key?)", cause);
  }
  const inner = parseAuthPayload(payload);
  if (inner.protocol_version !== auth.protocol_version) {
    throw violation(
      `AUTH.protocol_version ${auth.protocol_version} differs from the authenticated ` +
        `handshake payload's ${inner.protocol_version}`,
    );
  }
  if (!params.versions.includes(inner.protocol_version)) {
    throw new CommuCatError(
      "Protocol Version Mismatch",
      426,
      `server chose protocol version ${inner.protocol_version}, the client offered ` +
        `${JSON.stringify(params.versions)}`,
    );
  }
  if (inner.session !== auth.session) {
    throw violation(`AUTH.session differs from the authenticated handshake payload's session`);
  }

  if (params.pattern === "XK") {
    const msg3 = noise.writeMessage(new Uint8Array(0));
    await transport.write(
      encodeControl(FrameType.Auth, 0, sequence++, { handshake: bytesToHex(msg3) }),
    );
  }
  if (!noise.isComplete()) throw violation("Noise handshake incomplete after AUTH");
  const handshakeHash = noise.getHandshakeHash();
  const { send, recv } = noise.split();
  const version = inner.protocol_version;
  reader.startStream(version >= 2 ? recv : null);

  const ackFrame = expectFrame(await reader.next(), FrameType.Ack, "completion ACK");
  const ack = parseAck(ackFrame.json);
  if (!("handshake" in ack)) throw violation("expected the handshake completion ACK");
  if (ack.session !== auth.session) {
    throw violation(`completion ACK names session ${ack.session}, AUTH named ${auth.session}`);
  }
  return {
    session: ack.session,
    domain: inner.domain,
    protocolVersion: version,
    user: ack.user ?? auth.user,
    handshakeHash,
    send,
    recv,
    nextSequence: sequence,
    capabilities: grantedCapabilities(authFrame.json, params.capabilities),
  };
}

/** What AUTH says the server granted, limited to what this client asked for. */
function grantedCapabilities(auth: unknown, asked: string[]): string[] {
  const listed = (auth as { capabilities?: unknown } | null)?.capabilities;
  if (!Array.isArray(listed)) return [];
  return listed.filter((c): c is string => typeof c === "string" && asked.includes(c));
}

/** The Noise payload of message 2: `{session, domain, protocol_version}`. */
function parseAuthPayload(
  payload: Uint8Array,
): { session: string; domain: string; protocol_version: number } {
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(payload));
  } catch (cause) {
    throw violation("the Noise payload of handshake message 2 is not UTF-8 JSON", cause);
  }
  const v = value as Record<string, unknown> | null;
  if (
    typeof v !== "object" || v === null || typeof v.session !== "string" ||
    typeof v.domain !== "string" || typeof v.protocol_version !== "number"
  ) {
    throw violation(
      "the Noise payload of handshake message 2 must be {session, domain, protocol_version}",
    );
  }
  return { session: v.session, domain: v.domain, protocol_version: v.protocol_version };
}

/** Returns `frame` when it has the wanted type; turns ERROR and end of stream into errors. */
function expectFrame(frame: Frame | null, type: FrameType, what: string): Frame {
  if (frame === null) {
    throw new CommuCatError(
      "Connection Closed",
      503,
      `the server closed the connection while the client waited for ${what}`,
    );
  }
  if (frame.type === FrameType.Error) {
    throw CommuCatError.fromProblem(frame.json);
  }
  if (frame.type !== type) {
    throw violation(`expected ${what}, got ${FRAME_TYPE_NAMES[frame.type]}`);
  }
  return frame;
}

function violation(detail: string, cause?: unknown): CommuCatError {
  return new CommuCatError("Handshake Failed", 502, detail, { cause });
}
