/**
 * The server side of the CCP-1 handshake (ccp1.md §3): HELLO → AUTH (→ AUTH for XK), Noise XK or
 * IK as responder, version negotiation, proof of the client's static key, and device
 * registration through storage.
 *
 * @module
 */
import { type KeyStatus, respondToFirstMessage } from "../noise_keys.ts";
import { type Frame, FrameType, frameTypeText } from "../../protocol/frame.ts";
import {
  type Hello,
  negotiateVersion,
  parseClientAuth,
  parseHello,
  SUPPORTED_PROTOCOL_VERSIONS,
  type UserInfo,
} from "../../protocol/control.ts";
import { bytesToHex, hexToBytes } from "../../protocol/hex.ts";
import { bytesEqual } from "../../protocol/crypto.ts";
import { type CipherState, HandshakeState } from "../../protocol/noise.ts";
import { SENDER_CAPABILITY } from "../../protocol/sender.ts";
import type { HandshakeRegistration, PairingRefusal, User } from "../../storage/types.ts";
import { PairingRefused } from "../../storage/errors.ts";
import type { NodeContext } from "../context.ts";
import { fatal, refusalFor, Titles } from "../errors.ts";
import { hostOf } from "../admission.ts";
import { rateLimited } from "../limits.ts";
import type { DeviceCache } from "./device_cache.ts";

/** What the transport tells the handshake about the connection. */
export interface PeerInfo {
  remoteAddr: string;
  isTls: boolean;
  isLoopback: boolean;
}

/** The outcome of a completed handshake. */
export interface HandshakeResult {
  sessionId: string;
  deviceId: string;
  user: UserInfo;
  pattern: "XK" | "IK";
  version: number;
  /** The client's static key, proven by the Noise handshake. */
  publicKey: Uint8Array;
  /**
   * The device was taken as active with `publicKey` from this node's cache, not looked up
   * (the session row's statement checks it: server/session/device_cache.ts).
   */
  cached: boolean;
  /** Capabilities the server granted (ccp1.md §4.2), as listed in AUTH. */
  capabilities: string[];
  /** Which of the server's accepted static keys the client's handshake was made for. */
  serverKey: KeyStatus;
  /** Cipher states from the server's point of view. */
  send: CipherState;
  recv: CipherState;
}

/** What to do after a handshake frame: send `auth` (if any); `result` once complete. */
export interface HandshakeStep {
  auth: Record<string, unknown> | null;
  result: HandshakeResult | null;
}

const encoder = new TextEncoder();

/** Capabilities this server grants when a client asks for them in HELLO. */
export const SERVER_CAPABILITIES: readonly string[] = [SENDER_CAPABILITY];

/** The title and status of each refused pairing or registration. */
const REFUSALS: Record<PairingRefusal, [string, number]> = {
  "wrong-code": [Titles.pairingCodeInvalid, 403],
  expired: [Titles.pairingCodeExpired, 403],
  used: [Titles.pairingCodeUsed, 403],
  burned: [Titles.pairingCodeBurned, 403],
  "device-limit": [Titles.deviceLimit, 403],
  "not-pairable": [Titles.pairingRefused, 403],
};

/** Describes a user the way AUTH and the completion ACK carry it. */
export function userInfo(user: User): UserInfo {
  return {
    id: user.id,
    handle: user.handle,
    display_name: user.displayName,
    avatar_url: user.avatarUrl,
  };
}

/** Turns a storage failure during the handshake into a fatal ERROR that names it. */
function storageProblem(err: unknown): never {
  throw refusalFor(err, { fatal: true }) ?? err;
}

/** One connection's handshake, driven frame by frame. */
export class ServerHandshake {
  readonly sessionId = crypto.randomUUID();
  #state: "hello" | "auth" | "done" = "hello";
  #hello: Hello | null = null;
  #noise: HandshakeState | null = null;
  #version = 1;
  #preliminaryUser: UserInfo | null = null;
  /** Transport cipher states once Noise completed (even if the handshake is then refused). */
  ciphers: { send: CipherState; recv: CipherState } | null = null;

  /** The device was resolved from the node's cache (`HandshakeResult.cached`). */
  #cached = false;
  #proven: Uint8Array | null = null;

  constructor(
    private readonly ctx: NodeContext,
    private readonly peer: PeerInfo,
    private readonly devices: DeviceCache | null = null,
  ) {}

  /**
   * Resolves the device again from storage, without the cache (the session row's statement
   * found it not active with the proven key): throws the refusal that names why, or returns
   * the user when the device is active with the key after all.
   */
  async recheck(): Promise<UserInfo> {
    this.devices?.forget(this.#hello!.device_id);
    return await this.#register(this.#proven!, false);
  }

  /** The pattern named by HELLO, once it arrived. */
  get pattern(): "XK" | "IK" | null {
    return this.#hello?.pattern ?? null;
  }

  /** The negotiated protocol version (1 until HELLO was accepted). */
  get version(): number {
    return this.#version;
  }

  get complete(): boolean {
    return this.#state === "done";
  }

  /** Handles a frame received before the handshake completed. */
  async onFrame(frame: Frame): Promise<HandshakeStep> {
    if (frame.type === FrameType.Hello) {
      if (this.#state !== "hello") {
        throw fatal(Titles.unexpectedHandshake, 400, "HELLO repeated during the handshake");
      }
      return await this.#onHello(frame);
    }
    if (frame.type === FrameType.Auth) {
      if (this.#state !== "auth") {
        throw fatal(
          Titles.unexpectedHandshake,
          400,
          this.#state === "hello" ? "AUTH before HELLO" : "AUTH not expected for this pattern",
        );
      }
      return await this.#onClientAuth(frame);
    }
    throw fatal(
      Titles.handshakeRequired,
      400,
      `frame type ${frameTypeText(frame.type)} before the handshake completed`,
    );
  }

  async #onHello(frame: Frame): Promise<HandshakeStep> {
    const hello = parseHello(frame.json);
    // Handshakes per client address (server/limits.ts): refused before any key work is done.
    const host = hostOf(this.peer.remoteAddr);
    const allowed = await this.ctx.limits.consume("handshake", host);
    if (!allowed.ok) throw rateLimited("handshake", allowed, `too many handshakes from ${host}`);
    this.#hello = hello;
    const version = negotiateVersion(hello.supported_versions, this.#allowedVersions());
    if (version === null) {
      const plaintextOnly = hello.supported_versions.every((v) => v === 1);
      throw fatal(
        Titles.versionMismatch,
        426,
        plaintextOnly && SUPPORTED_PROTOCOL_VERSIONS.includes(1)
          ? "protocol v1 carries frames unencrypted and is accepted only over TLS or loopback; offer version 2"
          : `no common protocol version: client offers [${hello.supported_versions}], server supports [${SUPPORTED_PROTOCOL_VERSIONS}]`,
      );
    }
    this.#version = version;
    const { config } = this.ctx;
    // Any key the server accepts now (current, next, previous in its grace: server/noise_keys.ts).
    let noise: HandshakeState;
    let serverStatic: Uint8Array;
    try {
      const matched = respondToFirstMessage(config, hello.pattern, hexToBytes(hello.handshake));
      noise = matched.noise;
      serverStatic = matched.key.publicKey;
      this.#serverKey = matched.key.status;
    } catch (err) {
      throw fatal(Titles.handshakeFailed, 400, `HELLO.handshake: ${(err as Error).message}`);
    }
    this.#noise = noise;
    const claimed = hexToBytes(hello.client_static, 32);
    let user: UserInfo;
    if (hello.pattern === "IK") {
      // IK proves the static key in message 1: authenticate and register before answering.
      const proven = noise.remoteStatic;
      this.#checkProven(proven, claimed);
      user = await this.#register(proven!);
    } else {
      user = this.#preliminaryUserFor(hello);
    }
    const msg2 = noise.writeMessage(
      encoder.encode(
        JSON.stringify({
          session: this.sessionId,
          domain: config.server.domain,
          protocol_version: version,
        }),
      ),
    );
    const auth = {
      session: this.sessionId,
      handshake: bytesToHex(msg2),
      server_static: bytesToHex(serverStatic),
      protocol_version: version,
      supported_versions: [...SUPPORTED_PROTOCOL_VERSIONS],
      user,
      capabilities: this.#granted(),
    };
    if (hello.pattern === "IK") {
      return { auth, result: this.#finish(user) };
    }
    this.#state = "auth";
    return { auth, result: null };
  }

  async #onClientAuth(frame: Frame): Promise<HandshakeStep> {
    const payload = parseClientAuth(frame.json);
    const noise = this.#noise!;
    try {
      noise.readMessage(hexToBytes(payload.handshake));
    } catch (err) {
      throw fatal(Titles.handshakeFailed, 400, `AUTH.handshake: ${(err as Error).message}`);
    }
    // Noise is complete after message 3: from here on (v2) even a refusal travels inside the
    // secure stream, which the client has switched to after sending message 3.
    this.#split();
    const proven = noise.remoteStatic;
    this.#checkProven(proven, hexToBytes(this.#hello!.client_static, 32));
    const user = await this.#register(proven!);
    return { auth: null, result: this.#finish(user) };
  }

  /** Splits the completed Noise state into the transport cipher states (once). */
  #split(): { send: CipherState; recv: CipherState } {
    if (this.ciphers) return this.ciphers;
    const noise = this.#noise!;
    if (!noise.isComplete()) {
      throw fatal(Titles.handshakeFailed, 400, "Noise handshake did not complete");
    }
    this.ciphers = noise.split();
    return this.ciphers;
  }

  #serverKey: KeyStatus = "current";

  #finish(user: UserInfo): HandshakeResult {
    const { send, recv } = this.#split();
    this.#state = "done";
    return {
      sessionId: this.sessionId,
      deviceId: this.#hello!.device_id,
      user,
      publicKey: this.#proven!,
      cached: this.#cached,
      pattern: this.#hello!.pattern,
      version: this.#version,
      capabilities: this.#granted(),
      serverKey: this.#serverKey,
      send,
      recv,
    };
  }

  /** The capabilities HELLO asked for that this server grants. */
  #granted(): string[] {
    return this.#hello!.capabilities.filter((c) => SERVER_CAPABILITIES.includes(c));
  }

  /** Versions this connection may use: v1 only inside TLS, on loopback, or when allowed. */
  #allowedVersions(): number[] {
    const plaintextOk = this.peer.isTls || this.peer.isLoopback ||
      this.ctx.config.server.allowPlaintextV1;
    return SUPPORTED_PROTOCOL_VERSIONS.filter((v) => v !== 1 || plaintextOk);
  }

  #checkProven(proven: Uint8Array | null | undefined, claimed: Uint8Array): void {
    if (!proven || !bytesEqual(proven, claimed)) {
      throw fatal(
        Titles.staticKeyMismatch,
        403,
        "the static key proven by the Noise handshake differs from HELLO.client_static",
      );
    }
  }

  /**
   * AUTH for XK goes out before the client proved its key, so it describes the user only as the
   * HELLO claims it: the server looks nothing up for an unauthenticated peer (no storage round
   * trip, and no stored name or avatar disclosed to whoever claims a device id). The completion
   * ACK, sent once the key is proven, carries the stored user.
   */
  #preliminaryUserFor(hello: Hello): UserInfo {
    this.#preliminaryUser = {
      id: hello.user?.id ?? "pending",
      handle: hello.user?.handle ?? hello.device_id,
      display_name: hello.user?.display_name ?? null,
      avatar_url: hello.user?.avatar_url ?? null,
    };
    return this.#preliminaryUser;
  }

  /** Registers or resolves the device whose key was just proven (ccp1.md §3). */
  async #register(proven: Uint8Array, useCache = true): Promise<UserInfo> {
    const hello = this.#hello!;
    this.#proven = proven;
    this.#cached = false;
    // The common reconnect: a device this node recently found active with this key.
    if (useCache && this.devices !== null && hello.pairing_code === undefined) {
      const known = this.devices.get(hello.device_id, proven);
      if (known !== null) {
        this.#cached = true;
        return known;
      }
    }
    const { storage, config, ledger } = this.ctx;
    const log = this.ctx.log;
    let reg: HandshakeRegistration;
    // New users and devices per client address: checked before, counted after a registration
    // (only a device that does not exist yet is refused while the address is over its limit).
    // A known active device presenting its key (the common reconnect) skips the check: it
    // registers nothing.
    const host = hostOf(this.peer.remoteAddr);
    if (hello.pairing_code !== undefined) {
      // Every handshake presenting a code counts, right or wrong: guessing is bounded per
      // address here and per code by the wrong attempts storage counts.
      const attempts = await this.ctx.limits.consume("pairing_attempt", host);
      if (!attempts.ok) {
        throw rateLimited("pairing_attempt", attempts, `too many pairing attempts from ${host}`, {
          fatal: true,
        });
      }
    }
    const beforeChange = async () => {
      const room = await this.ctx.limits.check("registration", host);
      if (room.ok) return;
      let known;
      try {
        known = await storage.devices.get(hello.device_id);
      } catch (err) {
        storageProblem(err);
      }
      if (known === null) {
        throw rateLimited("registration", room, `too many new devices from ${host}`, {
          fatal: true,
        });
      }
    };
    try {
      reg = await storage.devices.resolveForHandshake({
        beforeChange,
        deviceId: hello.device_id,
        publicKey: proven,
        user: {
          id: hello.user?.id,
          handle: hello.user?.handle,
          displayName: hello.user?.display_name,
          avatarUrl: hello.user?.avatar_url,
        },
        autoApprove: config.server.autoApproveDevices,
        pairingCode: hello.pairing_code,
        maxDevicesPerUser: config.limits.maxDevicesPerUser,
      });
    } catch (err) {
      if (err instanceof PairingRefused) {
        log.warn("pairing or registration refused", {
          device_id: hello.device_id,
          user_id: err.userId,
          refusal: err.refusal,
          pairing: hello.pairing_code !== undefined,
        });
        this.ctx.metrics.pairing(err.refusal);
        const [title, status] = REFUSALS[err.refusal];
        throw fatal(title, status, err.detail);
      }
      storageProblem(err);
    }
    const event = "event" in reg ? reg.event : null;
    if (event?.kind === "registered") await this.ctx.limits.consume("registration", host);
    if (hello.pairing_code !== undefined && reg.outcome === "registered") {
      this.ctx.metrics.pairing("paired");
      // Every node re-expands the conversations that address this user.
      storage.ephemeral.publishControl({ kind: "device-approved", deviceId: reg.device.id })
        .catch((err) => log.warn("paired device not announced to other nodes", { error: err }));
      log.info("device paired", {
        device_id: reg.device.id,
        user_id: reg.user.id,
        paired_by: event?.actor.replace(/^pairing:/, "") ?? null,
      });
    }
    if (event) {
      const fields = {
        device_id: event.deviceId,
        user_id: reg.user.id,
        kind: event.kind,
        event_id: event.eventId,
        public_key: event.publicKey,
        actor: event.actor,
      };
      log.info(
        event.kind === "rotated"
          ? "device key rotated"
          : event.kind === "registered"
          ? "device key registered"
          : "device key awaiting approval",
        fields,
      );
      try {
        await ledger.record("device_key_event", {
          ...fields,
          recorded_at: event.recordedAt,
        });
      } catch (err) {
        log.warn("ledger record failed", { error: err, kind: "device_key_event" });
      }
    }
    if (reg.outcome === "pending") {
      throw fatal(
        Titles.devicePending,
        403,
        `device ${hello.device_id} waits for operator approval (deno task cli approve-device ${hello.device_id})`,
      );
    }
    if (reg.outcome === "revoked") {
      throw fatal(Titles.deviceRevoked, 403, `device ${hello.device_id} is revoked`);
    }
    if (!bytesEqual(reg.device.publicKey, proven)) {
      throw fatal(
        Titles.staticKeyMismatch,
        403,
        "the proven static key differs from the device's registered key",
      );
    }
    const user = userInfo(reg.user);
    if (reg.device.status === "active") this.devices?.put(reg.device.id, proven, user);
    return user;
  }
}
