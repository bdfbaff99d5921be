/**
 * Remote users (docs/FEDERATION.md "Remote users"): a JOIN naming `@alice@b.example` needs the
 * active devices of alice on b.example. The asking server sends a signed
 * `GET /federation/users/<handle>`; the peer answers with a signed document listing the user's
 * active devices and their public keys (at most `max_devices_per_user`). Both are signed like
 * events (an event envelope, `protocol/federation.ts`) with the domains' pinned Ed25519 keys, and
 * the answer echoes the request's id, so a recorded or forged answer is refused.
 *
 * The request: header `commucat-federation` = JSON `{"event": …, "signature": hex}` whose event
 * has `origin` the asker, `scope` the peer, `created_at` within ±5 minutes and
 * `payload: {"kind": "user-query", "user": <handle>}`. The answer (200):
 * `{"event": …, "signature": hex}`, event `origin` the peer, `scope` the asker and
 * `payload: {"kind": "user-devices", "request": <request event_id>, "user": <handle>,
 * "devices": [{"id": …, "public_key": hex}]}`; 404 `Unknown User` when there is no such user.
 *
 * @module
 */
import type { Logger } from "../log.ts";
import type { Storage } from "../../storage/types.ts";
import {
  type FederationEvent,
  rfc3339ToNanos,
  signEvent,
  toRfc3339,
  verifyEvent,
} from "../../protocol/federation.ts";
import { bytesToHex, hexToBytes } from "../../protocol/hex.ts";
import { isHandle, isId } from "../../protocol/ids.ts";
import { problemResponse } from "../../protocol/errors.ts";
import { FederationRefused, FederationTitles as T } from "./errors.ts";
import { MAX_ID_LENGTH } from "./event.ts";
import type { PeerDirectory } from "./peers.ts";
import { CLOCK_SKEW_MS } from "./replay.ts";

/** The path prefix of the user directory; the handle (or user id) follows. */
export const USERS_PATH = "/federation/users/";
/** The request header carrying the signed query. */
export const QUERY_HEADER = "commucat-federation";
/** How long an answer is trusted (devices added later are seen once it expires). */
export const REMOTE_USER_TTL_MS = 30_000;
/** Cached answers at most (the oldest are dropped past it). */
export const REMOTE_USER_CACHE_ENTRIES = 1024;
/** How long the peer may take to answer. */
export const REMOTE_USER_TIMEOUT_MS = 5_000;
/** The largest answer read, in bytes. */
export const MAX_USER_ANSWER = 256 * 1024;

/** Titles of remote-user refusals (server/errors.ts has the same strings for local users). */
export const RemoteUserTitles = {
  unknownUser: "Unknown User",
  notAddressable: "Remote User Not Addressable",
  unavailable: "Remote User Unavailable",
} as const;

/** One device of a remote user as its server lists it. */
export interface RemoteDevice {
  id: string;
  publicKey: string;
}

interface Signed {
  event: FederationEvent;
  signature: string;
}

function parseSigned(text: string): Signed | null {
  try {
    const v = JSON.parse(text);
    if (typeof v !== "object" || v === null || typeof v.signature !== "string") return null;
    const e = v.event;
    if (
      typeof e !== "object" || e === null || typeof e.event_id !== "string" ||
      typeof e.origin !== "string" || typeof e.scope !== "string" ||
      typeof e.created_at !== "string" || typeof e.payload !== "object" || e.payload === null
    ) return null;
    return v as Signed;
  } catch {
    return null;
  }
}

function withinSkew(createdAt: string, now: Date): boolean {
  try {
    const at = Number(rfc3339ToNanos(createdAt) / 1_000_000n);
    return Math.abs(at - now.getTime()) <= CLOCK_SKEW_MS;
  } catch {
    return false;
  }
}

function verifySigned(s: Signed, publicKey: Uint8Array): boolean {
  if (!/^[0-9a-f]{128}$/i.test(s.signature)) return false;
  return verifyEvent(s.event, hexToBytes(s.signature), publicKey);
}

/** What both sides of the user directory need. */
export interface UsersOptions {
  domain: string;
  peers: PeerDirectory;
  storage: Pick<Storage, "users" | "pairing">;
  secretKey: Uint8Array;
  log: Logger;
  now: () => Date;
  maxDevices: () => number;
  fetch?: typeof fetch;
}

/** `GET /federation/users/<handle>` from a peer: checks the signed query, answers signed. */
export async function answerUserQuery(o: UsersOptions, request: Request): Promise<Response> {
  await request.body?.cancel().catch(() => {});
  if (request.method !== "GET") {
    return problemResponse(405, T.methodNotAllowed, "the user directory is read with GET", {}, {
      allow: "GET",
    });
  }
  const name = decodeURIComponent(new URL(request.url).pathname.slice(USERS_PATH.length));
  const query = parseSigned(request.headers.get(QUERY_HEADER) ?? "");
  const asked = query?.event.payload as Record<string, unknown> | undefined;
  if (query === null || asked?.kind !== "user-query") {
    return problemResponse(400, T.invalidEvent, `expected a signed query in ${QUERY_HEADER}`);
  }
  const origin = query.event.origin.toLowerCase();
  const peer = await o.peers.lookup(origin);
  if (peer?.status !== "active") {
    return problemResponse(403, T.peerNotAllowed, `${origin} is not an active federation peer`);
  }
  if (query.event.scope.toLowerCase() !== o.domain) {
    return problemResponse(421, T.misdirectedEvent, `the query is for ${query.event.scope}`);
  }
  if (!verifySigned(query, peer.publicKey)) {
    return problemResponse(401, T.invalidSignature, "the query's signature does not verify");
  }
  if (!withinSkew(query.event.created_at, o.now())) {
    return problemResponse(400, T.clockSkew, "created_at is more than 5 minutes off");
  }
  if (asked.user !== name) {
    return problemResponse(400, T.invalidEvent, "the signed query names another user");
  }
  const user = (isHandle(name) ? await o.storage.users.getByHandle(name) : null) ??
    (isId(name) ? await o.storage.users.get(name) : null);
  if (user === null) {
    return problemResponse(404, RemoteUserTitles.unknownUser, `no user ${name} on ${o.domain}`);
  }
  const devices = (await o.storage.pairing.devicesOf(user.id))
    .filter((d) => d.status === "active")
    .slice(0, o.maxDevices())
    .map((d) => ({ id: d.id, public_key: bytesToHex(d.publicKey) }));
  const event: FederationEvent = {
    event_id: crypto.randomUUID(),
    origin: o.domain,
    scope: origin,
    created_at: toRfc3339(o.now()),
    // deno-lint-ignore no-explicit-any
    payload: { kind: "user-devices", request: query.event.event_id, user: name, devices } as any,
  };
  o.log.info("federation user answered", { peer: origin, user: user.id, devices: devices.length });
  return new Response(
    JSON.stringify({ event, signature: bytesToHex(signEvent(event, o.secretKey)) }),
    { status: 200, headers: { "content-type": "application/json" } },
  );
}

/**
 * The asking side: a user of a peer domain → its active devices, from a cache of at most
 * {@link REMOTE_USER_CACHE_ENTRIES} answers each trusted {@link REMOTE_USER_TTL_MS}.
 */
export class RemoteUsers {
  readonly #cache = new Map<string, { devices: RemoteDevice[]; expires: number }>();

  constructor(private readonly o: UsersOptions) {}

  /**
   * The active devices of `name` (a handle or user id) on `domain`. Throws a non-fatal
   * refusal: `Remote User Not Addressable` 400 when `domain` is not a peer, `federation peer
   * not allowed` 403 when it is pending or blocked, `Unknown User` 404 when the peer has no such
   * user, `Remote User Unavailable` 502 when it cannot be reached or its answer is not valid.
   */
  async devices(domain: string, name: string): Promise<RemoteDevice[]> {
    domain = domain.toLowerCase();
    const key = `${domain}\n${name}`;
    const hit = this.#cache.get(key);
    const now = this.o.now().getTime();
    if (hit && hit.expires > now) return hit.devices;
    this.#cache.delete(key);
    const devices = await this.#ask(domain, name);
    this.#cache.set(key, { devices, expires: now + REMOTE_USER_TTL_MS });
    while (this.#cache.size > REMOTE_USER_CACHE_ENTRIES) {
      this.#cache.delete(this.#cache.keys().next().value!);
    }
    return devices;
  }

  async #ask(domain: string, name: string): Promise<RemoteDevice[]> {
    const who = `@${name}@${domain}`;
    const peer = await this.o.peers.lookup(domain);
    if (peer === null) {
      throw new FederationRefused(
        RemoteUserTitles.notAddressable,
        400,
        `${who}: ${domain} is not a federation peer of ${this.o.domain}`,
      );
    }
    if (peer.status !== "active") {
      throw new FederationRefused(
        T.peerNotAllowed,
        403,
        `${who}: federation peer ${domain} is ${peer.status}`,
      );
    }
    const unavailable = (why: string) =>
      new FederationRefused(RemoteUserTitles.unavailable, 502, `${who}: ${why}`);
    const query: FederationEvent = {
      event_id: crypto.randomUUID(),
      origin: this.o.domain,
      scope: domain,
      created_at: toRfc3339(this.o.now()),
      // deno-lint-ignore no-explicit-any
      payload: { kind: "user-query", user: name } as any,
    };
    const url = new URL(peer.endpoint);
    url.pathname = USERS_PATH + encodeURIComponent(name);
    url.search = "";
    let status: number;
    let text: string;
    try {
      const res = await (this.o.fetch ?? fetch)(url, {
        headers: {
          [QUERY_HEADER]: JSON.stringify({
            event: query,
            signature: bytesToHex(signEvent(query, this.o.secretKey)),
          }),
        },
        signal: AbortSignal.timeout(REMOTE_USER_TIMEOUT_MS),
      });
      status = res.status;
      const bytes = new Uint8Array(await res.arrayBuffer());
      if (bytes.length > MAX_USER_ANSWER) throw new Error(`answer over ${MAX_USER_ANSWER} bytes`);
      text = new TextDecoder().decode(bytes);
    } catch (err) {
      this.o.log.warn("federation user query failed", { peer: domain, error: err });
      throw unavailable(`${domain} could not be reached (${(err as Error).message})`);
    }
    if (status === 404) {
      throw new FederationRefused(RemoteUserTitles.unknownUser, 404, `${who}: no such user`);
    }
    if (status !== 200) throw unavailable(`${domain} answered ${status}`);
    const answer = parseSigned(text);
    const p = answer?.event.payload as Record<string, unknown> | undefined;
    if (
      answer === null || p === undefined || !verifySigned(answer, peer.publicKey) ||
      answer.event.origin.toLowerCase() !== domain ||
      answer.event.scope.toLowerCase() !== this.o.domain ||
      !withinSkew(answer.event.created_at, this.o.now()) ||
      p.kind !== "user-devices" || p.request !== query.event_id || p.user !== name ||
      !Array.isArray(p.devices)
    ) {
      this.o.log.warn("federation user answer refused", { peer: domain });
      throw unavailable(`the answer of ${domain} is not validly signed for this query`);
    }
    const max = this.o.maxDevices();
    if (p.devices.length > max) {
      throw unavailable(`${domain} lists ${p.devices.length} devices, over ${max}`);
    }
    const devices: RemoteDevice[] = [];
    for (const d of p.devices as unknown[]) {
      const { id, public_key } = (d ?? {}) as Record<string, unknown>;
      if (
        typeof id !== "string" || !isId(id) || id.includes("@") || id.length > MAX_ID_LENGTH ||
        typeof public_key !== "string" || !/^[0-9a-f]{64}$/i.test(public_key)
      ) {
        throw unavailable(`${domain} lists a malformed device`);
      }
      devices.push({ id, publicKey: public_key.toLowerCase() });
    }
    return devices;
  }
}
