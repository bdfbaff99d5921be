/**
 * Server requests (docs/PROTOCOL.md "Server requests"): a KEY_UPDATE frame on channel 0 is never
 * relayed; its payload is a UTF-8 JSON object `{"op": "<name>", ...}` for the server. The answer
 * is ACK on channel 0 `{"ack": <request sequence>, "op": "<name>", ...result}`; a refusal is a
 * non-fatal ERROR naming the request's sequence. Each op's handler lives in server/requests/.
 *
 * @module
 */
import { FrameType } from "../../protocol/frame.ts";
import type { Frame } from "../../protocol/frame.ts";
import { MAX_CONTROL_JSON_LEN } from "../../protocol/frame.ts";
import type { NodeContext } from "../context.ts";
import { refused } from "../errors.ts";
import type { RequestContext, RequestHandler } from "../requests/types.ts";
import type { Connection } from "../session/connection.ts";

/** Title of a request the server does not know. */
export const UNKNOWN_REQUEST = "Unknown Request";

const decoder = new TextDecoder("utf-8", { fatal: true });
const OP_PATTERN = /^[a-z][a-z0-9_]{0,31}$/;

export class Requests {
  readonly #handlers = new Map<string, RequestHandler>();

  constructor(
    private readonly ctx: NodeContext,
    private readonly remoteUsers?: RequestContext["remoteUsers"],
  ) {}

  /** Adds the handler of one op. */
  register(op: string, handler: RequestHandler): this {
    this.#handlers.set(op, handler);
    return this;
  }

  /** The ops served (AUTH could list them; tests and docs check them). */
  get ops(): string[] {
    return [...this.#handlers.keys()].sort();
  }

  async handle(conn: Connection, frame: Frame): Promise<void> {
    const request = parseRequest(frame.payload);
    const handler = this.#handlers.get(request.op as string);
    if (handler === undefined) {
      throw refused(
        UNKNOWN_REQUEST,
        404,
        `server request ${JSON.stringify(request.op)} is not served; ops: ${this.ops.join(", ")}`,
      );
    }
    const { storage, config } = this.ctx;
    const result = await handler({
      deviceId: conn.deviceId,
      userId: conn.user!.id,
      sessionId: conn.sessionId,
      storage,
      config,
      log: conn.log,
      remoteAddr: conn.transport.remoteAddr,
      limits: this.ctx.limits,
      remoteUsers: this.remoteUsers,
    }, request);
    conn.sendControl(FrameType.Ack, 0, { ...result, ack: frame.sequence, op: request.op });
  }
}

function parseRequest(payload: Uint8Array): Record<string, unknown> & { op: string } {
  const invalid = (detail: string) =>
    refused("Invalid Control Payload", 400, `server request: ${detail}`);
  if (payload.length > MAX_CONTROL_JSON_LEN) {
    throw refused(
      "Control Payload Too Large",
      413,
      `server request: at most ${MAX_CONTROL_JSON_LEN} octets`,
    );
  }
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(payload));
  } catch {
    throw invalid('a KEY_UPDATE on channel 0 carries a UTF-8 JSON object {"op": …}');
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw invalid("expected a JSON object");
  }
  const op = (value as Record<string, unknown>).op;
  if (typeof op !== "string" || !OP_PATTERN.test(op)) {
    throw invalid('op: expected a lower-case name such as "rotate_key"');
  }
  return value as Record<string, unknown> & { op: string };
}
