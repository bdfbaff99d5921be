/**
 * The relay's own ERROR problems (ccp1.md §2), one constructor per situation so every place
 * that refuses something uses the same title and status.
 *
 * @module
 */
import { ProblemError, ProtocolError } from "../protocol/errors.ts";

/** A fatal error: the ERROR frame is flushed, then the connection closes. */
export function fatal(title: string, status: number, detail: string): ProtocolError {
  return new ProtocolError(title, status, detail, { fatal: true });
}

/** A non-fatal error: the connection stays open. */
export function refused(title: string, status: number, detail: string): ProtocolError {
  return new ProtocolError(title, status, detail, { fatal: false });
}

/**
 * The protocol refusal a storage error (or any other layer's {@link ProblemError}) becomes:
 * its title, status and detail (after `context: ` when given), fatal as the caller says. Null
 * for anything else — a ProtocolError already is a refusal, and an unknown error is the
 * caller's to report (usually as 503 "Service Unavailable").
 */
export function refusalFor(
  err: unknown,
  options: { fatal: boolean; context?: string },
): ProtocolError | null {
  if (!(err instanceof ProblemError) || err instanceof ProtocolError) return null;
  const detail = options.context ? `${options.context}: ${err.detail}` : err.detail;
  return new ProtocolError(err.title, err.status, detail, { fatal: options.fatal, cause: err });
}

/** Titles used by the relay beyond the codec's nine. */
export const Titles = {
  handshakeRequired: "Handshake Required",
  handshakeTimeout: "Handshake Timeout",
  handshakeFailed: "Handshake Failed",
  unexpectedHandshake: "Unexpected Handshake Frame",
  versionMismatch: "Protocol Version Mismatch",
  staticKeyMismatch: "Static Key Mismatch",
  devicePending: "Device Pending Approval",
  deviceRevoked: "Device Revoked",
  keepaliveTimeout: "Keepalive Timeout",
  decryptFailed: "Secure Stream Failure",
  joinRejected: "Join Rejected",
  notMember: "Not A Member",
  unknownChannel: "Unknown Channel",
  notPermitted: "Not Permitted",
  unknownGroup: "Unknown Group",
  sessionReplaced: "Session Replaced",
  serverShutdown: "Server Shutting Down",
  unavailable: "Service Unavailable",
  unsupportedFrame: "Unsupported Frame",
  tooManyMembers: "Too Many Members",
  tooManyConversations: "Too Many Conversations",
  groupExists: "Group Exists",
  pairingRefused: "Pairing Refused",
  pairingCodeInvalid: "Pairing Code Invalid",
  pairingCodeExpired: "Pairing Code Expired",
  pairingCodeUsed: "Pairing Code Used",
  pairingCodeBurned: "Pairing Code Burned",
  deviceLimit: "Device Limit Reached",
  unknownUser: "Unknown User",
  remoteUser: "Remote User Not Addressable",
} as const;
