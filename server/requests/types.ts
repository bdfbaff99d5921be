/**
 * Server requests (docs/PROTOCOL.md "Server requests"): a KEY_UPDATE frame on channel 0 whose
 * payload is a UTF-8 JSON object `{"op": "<name>", ...}` addressed to the server. A handler
 * answers with the fields of the ACK (`{"ack": <sequence>, "op": <name>, ...result}`) or throws
 * a non-fatal ProtocolError (`refused(...)`), which the router sends as ERROR naming the
 * request's sequence.
 *
 * @module
 */
import type { Config } from "../config/mod.ts";
import type { Limits } from "../limits.ts";
import type { Logger } from "../log.ts";
import type { Storage } from "../../storage/types.ts";

/** What a request handler knows about the authenticated device that asked. */
export interface RequestContext {
  readonly deviceId: string;
  readonly userId: string;
  readonly sessionId: string;
  readonly storage: Storage;
  readonly config: Config;
  readonly log: Logger;
  /** The client's address as the transport saw it (`host:port`). */
  readonly remoteAddr: string;
  /** The node's rate limits (server/limits.ts). */
  readonly limits: Limits;
  /** The active devices of a user of a peer domain (federation's user directory). */
  readonly remoteUsers?: (
    domain: string,
    name: string,
  ) => Promise<{ id: string; publicKey: string }[]>;
}

/** A server request handler: the request object in, the ACK's result fields out. */
export type RequestHandler = (
  ctx: RequestContext,
  request: Record<string, unknown>,
) => Promise<Record<string, unknown>>;
