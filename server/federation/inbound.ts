/**
 * The inbound endpoint: `POST /federation/events` with one signed event as JSON.
 *
 * Checks, in order (each refusal is an RFC 9457 problem):
 * 1. POST (405), `application/json` (415), body ≤ MAX_EVENT_BODY (413, `hono/body-limit`);
 * 2. JSON with exactly the event's fields, every one type-checked (400 "invalid event", `field`);
 * 3. origin is a known, active peer (403 "federation peer not allowed");
 * 4. scope is our domain (421 "misdirected event");
 * 5. digest and Ed25519 signature under the peer's key (401 "invalid signature");
 * 6. created_at within ±5 minutes of our clock (400 "clock skew");
 * 7. the sender belongs to the origin domain (403 "invalid federation sender"), the target is
 *    one of our devices (400 "invalid federation target"), the payload is exactly one CCP-1
 *    frame of a federated type (400 "invalid frame");
 * 8. event id not seen before from this origin (409 "replayed event");
 * then the frame goes to `deliverLocal` and the answer is 202 `{"accepted": event_id}`.
 *
 * @module
 */
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import type { Logger } from "../log.ts";
import { eventDigest, rfc3339ToNanos, verifyEvent } from "../../protocol/federation.ts";
import { bytesToHex, hexToBytes } from "../../protocol/hex.ts";
import type { PeerRepo, RemoteAckResult } from "../../storage/types.ts";
import { FrameType } from "../../protocol/frame.ts";
import { parseOffsetReport } from "./offsets.ts";
import { ProblemError, problemResponse } from "../../protocol/errors.ts";
import { FederationRefused, FederationTitles as T } from "./errors.ts";
import {
  decodeFederatedFrame,
  EventShapeError,
  MAX_EVENT_BODY,
  parseSignedEventBody,
  type SignedEventBody,
} from "./event.ts";
import { parseMember, type PeerDirectory } from "./peers.ts";
import { CLOCK_SKEW_MS, type ReplayGuard, ReplayGuardFull } from "./replay.ts";

/** Hands a federated frame to a local device (live connection or relay queue). */
export type DeliverLocal = (
  targetDeviceId: string,
  frame: Uint8Array,
  meta: { origin: string; sender: string; channel: number; eventId?: string },
) => Promise<void>;

/** An offset report from a peer, checked and recorded (server/federation/offsets.ts). */
export type AcceptOffsets = (report: {
  origin: string;
  /** The peer's device that acknowledged: `device@origin`. */
  sender: string;
  /** Our device that sent the frames (bare id). */
  target: string;
  channel: number;
  eventIds: string[];
  ackedAt: Date;
}) => Promise<RemoteAckResult>;

/** What the inbound handler needs. */
export interface InboundOptions {
  domain: string;
  peers: PeerDirectory;
  peerRepo: PeerRepo;
  replay: ReplayGuard;
  deliverLocal: DeliverLocal;
  /** Offset reports (ACK frames); without it they are refused as invalid frames. */
  acceptOffsets?: AcceptOffsets;
  log: Logger;
  now: () => Date;
  maxBodyBytes?: number;
}

type InboundEnv = {
  Bindings: { remoteAddr?: string };
  /** True while the body is being read (a failure then is the sender's). */
  Variables: { reading: boolean };
};

/** Builds the `handleInbound(request, remoteAddr?)` function. */
export function inboundHandler(
  o: InboundOptions,
): (request: Request, remoteAddr?: string) => Promise<Response> {
  const limit = o.maxBodyBytes ?? MAX_EVENT_BODY;
  const ownDomain = o.domain.toLowerCase();

  // Method, media type and body size come first, in that order; the body is read under
  // hono/body-limit (a declared length over the limit is refused unread, a streamed body as
  // soon as it passes the limit).
  const app = new Hono<InboundEnv>();
  app.post(
    "*",
    async (c, next) => {
      const type = (c.req.header("content-type") ?? "").split(";")[0].trim().toLowerCase();
      if (type !== "application/json") {
        await c.req.raw.body?.cancel().catch(() => {});
        return refusal(c.env.remoteAddr)(
          415,
          T.unsupportedMediaType,
          "expected content-type application/json",
        );
      }
      c.set("reading", true);
      await next();
    },
    bodyLimit({
      maxSize: limit,
      onError: (c) =>
        refusal(c.env.remoteAddr)(413, T.eventTooLarge, `the body exceeds ${limit} bytes`),
    }),
    async (c) => {
      const raw = new Uint8Array(await c.req.raw.arrayBuffer());
      c.set("reading", false);
      return await handle(raw, c.env.remoteAddr);
    },
  );
  app.all("*", async (c) => {
    await c.req.raw.body?.cancel().catch(() => {});
    return problemResponse(405, T.methodNotAllowed, "federation events are POSTed", {}, {
      allow: "POST",
    });
  });
  app.onError((err, c) => {
    // A body that broke off while being read is the sender's problem; anything else is ours.
    if (c.get("reading")) {
      return refusal(c.env.remoteAddr)(400, T.invalidEvent, "the body could not be read");
    }
    throw err;
  });

  return async function handleInbound(request, remoteAddr) {
    try {
      return await app.fetch(request, { remoteAddr });
    } catch (err) {
      // Storage down, or a bug: the sender retries; nothing was delivered.
      o.log.error("federation inbound failed", { remote_addr: remoteAddr, error: err });
      return problemResponse(
        503,
        T.deliveryFailed,
        "the event could not be processed; retry later",
        {},
        { "retry-after": "5" },
      );
    }
  };

  /** A refusal as a problem, logged with the sender's address. */
  function refusal(remoteAddr: string | undefined) {
    return (
      status: number,
      title: string,
      detail: string,
      extra: { field?: string; headers?: Record<string, string>; event_id?: string } = {},
    ): Response => {
      o.log.warn(title === T.peerNotAllowed ? T.peerNotAllowed : "federation event refused", {
        status,
        title,
        detail,
        remote_addr: remoteAddr,
        event_id: extra.event_id,
      });
      const body = extra.field === undefined ? {} : { field: extra.field };
      return problemResponse(status, title, detail, body, extra.headers);
    };
  }

  /** Checks and delivers one event, its body read. */
  async function handle(raw: Uint8Array, remoteAddr?: string): Promise<Response> {
    const refuse = refusal(remoteAddr);

    let body: SignedEventBody;
    try {
      body = parseSignedEventBody(
        JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(raw)),
      );
    } catch (err) {
      if (err instanceof EventShapeError) {
        return refuse(400, T.invalidEvent, err.message, { field: err.field });
      }
      return refuse(400, T.invalidEvent, "the body is not valid UTF-8 JSON");
    }
    const { event } = body;
    const eventId = event.event_id;

    let peer;
    try {
      peer = await o.peers.requireActive(event.origin);
    } catch (err) {
      if (err instanceof FederationRefused) {
        return refuse(err.status, err.title, err.detail, { event_id: eventId });
      }
      throw err;
    }
    if (event.scope !== ownDomain) {
      return refuse(
        421,
        T.misdirectedEvent,
        `event scope ${JSON.stringify(event.scope)} is not this server's domain`,
        { field: "event.scope", event_id: eventId },
      );
    }

    let createdNs: bigint;
    try {
      createdNs = rfc3339ToNanos(event.created_at);
    } catch (err) {
      return refuse(400, T.invalidEvent, (err as Error).message, {
        field: "event.created_at",
        event_id: eventId,
      });
    }
    if (body.digest !== undefined && body.digest.toLowerCase() !== bytesToHex(eventDigest(event))) {
      return refuse(401, T.invalidSignature, "digest does not match the event", {
        field: "digest",
        event_id: eventId,
      });
    }
    if (!verifyEvent(event, hexToBytes(body.signature), peer.publicKey)) {
      return refuse(
        401,
        T.invalidSignature,
        `signature does not verify under the key of ${event.origin}`,
        { field: "signature", event_id: eventId },
      );
    }

    const skewMs = Number(createdNs / 1_000_000n) - o.now().getTime();
    if (Math.abs(skewMs) > CLOCK_SKEW_MS) {
      return refuse(
        400,
        T.clockSkew,
        `created_at is ${Math.round(skewMs / 1000)} s from this server's clock ` +
          `(allowed ±${CLOCK_SKEW_MS / 1000} s)`,
        { field: "event.created_at", event_id: eventId },
      );
    }

    const { sender, target } = event.payload;
    const from = parseMember(sender);
    if (!from || from.domain !== event.origin) {
      return refuse(
        403,
        T.invalidSender,
        `sender ${JSON.stringify(sender)} is not a device of ${event.origin}`,
        { field: "event.payload.sender", event_id: eventId },
      );
    }
    const to = parseMember(target);
    if (!to || (to.domain !== null && to.domain !== ownDomain)) {
      return refuse(
        400,
        T.invalidTarget,
        `target ${JSON.stringify(target)} is not a device of ${ownDomain}`,
        { field: "event.payload.target", event_id: eventId },
      );
    }
    const frame = hexToBytes(event.payload.payload);
    const decoded = decodeFederatedFrame(frame, { offsets: o.acceptOffsets !== undefined });
    if (!("type" in decoded)) {
      return refuse(400, T.invalidFrame, decoded.detail, {
        field: "event.payload.payload",
        event_id: eventId,
      });
    }
    let report: { eventIds: string[]; ackedAt: Date } | null = null;
    if (decoded.type === FrameType.Ack) {
      const parsed = parseOffsetReport(decoded.json);
      if ("detail" in parsed) {
        return refuse(400, T.invalidOffset, parsed.detail, {
          field: "event.payload.payload",
          event_id: eventId,
        });
      }
      report = parsed;
    }

    try {
      if (!(await o.replay.claim(event.origin, eventId, o.now()))) {
        return refuse(409, T.replayedEvent, `event ${eventId} was already accepted`, {
          event_id: eventId,
        });
      }
    } catch (err) {
      if (err instanceof ReplayGuardFull) {
        return refuse(503, T.busy, "too many recent events; retry shortly", {
          headers: { "retry-after": "5" },
          event_id: eventId,
        });
      }
      throw err;
    }

    if (report !== null) {
      let result: RemoteAckResult;
      try {
        result = await o.acceptOffsets!({
          origin: event.origin,
          sender,
          target: to.device,
          channel: event.payload.channel,
          eventIds: report.eventIds,
          ackedAt: report.ackedAt,
        });
      } catch (err) {
        await o.replay.release(event.origin, eventId).catch(() => {});
        throw err;
      }
      if (!result.ok) {
        // Nothing was recorded: forget the id, the report is refused as a whole.
        await o.replay.release(event.origin, eventId).catch(() => {});
        return refuse(400, T.invalidOffset, result.reason, {
          field: "event.payload.payload",
          event_id: eventId,
        });
      }
      await o.peerRepo.touch(event.origin).catch(() => {});
      o.log.info("federation offsets accepted", {
        event_id: eventId,
        origin: event.origin,
        sender,
        target,
        channel: event.payload.channel,
        acknowledged: result.fresh.length,
        already: result.already,
      });
      return new Response(JSON.stringify({ accepted: eventId }), {
        status: 202,
        headers: { "content-type": "application/json" },
      });
    }

    try {
      await o.deliverLocal(to.device, frame, {
        origin: event.origin,
        sender,
        channel: event.payload.channel,
        eventId,
      });
    } catch (err) {
      // Not delivered: forget the id so the sender's retry is accepted.
      await o.replay.release(event.origin, eventId).catch(() => {});
      // A refusal (an unknown device, a revoked one) passes through with its own problem.
      if (err instanceof ProblemError && err.status >= 400 && err.status < 500) {
        return refuse(err.status, err.title, err.detail, { event_id: eventId });
      }
      o.log.error("federation delivery to local device failed", {
        event_id: eventId,
        origin: event.origin,
        error: err,
      });
      return problemResponse(
        503,
        T.deliveryFailed,
        "the event could not be delivered; retry later",
        {},
        { "retry-after": "5" },
      );
    }

    await o.peerRepo.touch(event.origin).catch((err) => {
      o.log.warn("federation peer touch failed", { peer: event.origin, error: err });
    });
    o.log.info("federation event accepted", {
      event_id: eventId,
      origin: event.origin,
      sender,
      target,
      channel: event.payload.channel,
      bytes: frame.length,
    });
    return new Response(JSON.stringify({ accepted: eventId }), {
      status: 202,
      headers: { "content-type": "application/json" },
    });
  }
}
