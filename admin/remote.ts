/**
 * The operator actions through a running server's admin API (`/api/v1`), for a CLI that cannot
 * open the database itself (the embedded database is held by the server) or is pointed at a
 * server with `--server URL`. Same interface and results as LocalAdmin; a refusal arrives as
 * an RFC 9457 problem and is thrown as `RemoteProblem` with the server's detail as message.
 */
import type { Page, PeerStatus } from "../storage/types.ts";
import type {
  AdminOps,
  DeliveryView,
  DeviceChange,
  DeviceFilter,
  DeviceLimitView,
  GroupDetail,
  NodeView,
  Noted,
  PageQuery,
  RotatedKey,
} from "./ops.ts";
import type {
  AuditView,
  DeviceView,
  GroupView,
  KeyEventView,
  OutboxView,
  PeerView,
  UserView,
} from "./views.ts";

/** The server refused or failed a request; `message` is the problem's detail. */
export class RemoteProblem extends Error {
  constructor(readonly status: number, readonly title: string, detail: string) {
    super(detail);
    this.name = "RemoteProblem";
  }
}

/** The server could not be reached or answered something that is not the admin API. */
export class RemoteUnreachable extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "RemoteUnreachable";
  }
}

export interface RemoteAdminOptions {
  /** The console's base URL, e.g. http://127.0.0.1:8080. */
  baseUrl: string;
  token: string;
  /** Named in the audit log as `api:<actor>`. */
  actor: string;
  /** Per-request timeout (default 30 s). */
  timeoutMs?: number;
  fetch?: typeof fetch;
}

type Query = Record<string, string | number | boolean | null | undefined>;

export class RemoteAdmin implements AdminOps {
  readonly #base: string;
  readonly #token: string;
  readonly #actor: string;
  readonly #timeout: number;
  readonly #fetch: typeof fetch;

  constructor(options: RemoteAdminOptions) {
    this.#base = options.baseUrl.replace(/\/+$/, "") + "/api/v1";
    this.#token = options.token;
    this.#actor = options.actor;
    this.#timeout = options.timeoutMs ?? 30_000;
    this.#fetch = options.fetch ?? fetch;
  }

  async #call<T>(method: string, path: string, query: Query = {}, body?: unknown): Promise<T> {
    const url = new URL(this.#base + path);
    for (const [k, v] of Object.entries(query)) {
      if (v !== undefined && v !== null && v !== false) url.searchParams.set(k, String(v));
    }
    const headers: Record<string, string> = {
      authorization: `Bearer ${this.#token}`,
      "commucat-actor": this.#actor,
      accept: "application/json",
    };
    if (body !== undefined) headers["content-type"] = "application/json";
    let res: Response;
    try {
      res = await this.#fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.#timeout),
      });
    } catch (err) {
      throw new RemoteUnreachable(
        `the server's admin API at ${this.#base} cannot be reached: ${
          err instanceof Error ? err.message : String(err)
        }`,
        { cause: err },
      );
    }
    const type = res.headers.get("content-type") ?? "";
    if (!res.ok) {
      if (type.startsWith("application/problem+json")) {
        const p = await res.json();
        throw new RemoteProblem(res.status, String(p.title), String(p.detail));
      }
      await res.body?.cancel();
      throw new RemoteUnreachable(
        `${this.#base} answered ${res.status} ${res.statusText}; is it a CommuCat console?`,
      );
    }
    if (!type.startsWith("application/json")) {
      await res.body?.cancel();
      throw new RemoteUnreachable(`${url} did not answer JSON; is it a CommuCat console?`);
    }
    return await res.json() as T;
  }

  #id = (id: string) => encodeURIComponent(id);

  users(filter: { search?: string } & PageQuery): Promise<Page<UserView>> {
    return this.#call("GET", "/users", { ...filter });
  }
  registerUser(
    input: { handle: string; displayName?: string | null; avatarUrl?: string | null },
  ): Promise<UserView> {
    return this.#call("POST", "/users", {}, input);
  }
  devices(filter: DeviceFilter): Promise<Page<DeviceView>> {
    const { awaitingApproval, userId, ...rest } = filter;
    return this.#call("GET", "/devices", { ...rest, awaiting: awaitingApproval, user: userId });
  }
  deviceLimit(user: string): Promise<DeviceLimitView> {
    return this.#call("GET", `/users/${this.#id(user)}/device-limit`);
  }
  setDeviceLimit(user: string, limit: number | null): Promise<DeviceLimitView> {
    return this.#call("PUT", `/users/${this.#id(user)}/device-limit`, {}, { maxDevices: limit });
  }
  device(id: string): Promise<DeviceView> {
    return this.#call("GET", `/devices/${this.#id(id)}`);
  }
  approveDevice(id: string): Promise<DeviceChange> {
    return this.#call("POST", `/devices/${this.#id(id)}/approve`);
  }
  rejectDevice(id: string): Promise<DeviceChange> {
    return this.#call("POST", `/devices/${this.#id(id)}/reject`);
  }
  revokeDevice(id: string): Promise<DeviceChange> {
    return this.#call("POST", `/devices/${this.#id(id)}/revoke`);
  }
  rotateKey(input: { userId?: string; handle?: string; deviceId?: string }): Promise<RotatedKey> {
    return this.#call("POST", "/rotate-key", {}, input);
  }
  async keyEvents(
    deviceId: string | null,
    range: { from?: Date; to?: Date } = {},
  ): Promise<KeyEventView[]> {
    const r = await this.#call<{ items: KeyEventView[] }>("GET", "/key-events", {
      device: deviceId,
      from: range.from?.toISOString(),
      to: range.to?.toISOString(),
    });
    return r.items;
  }
  delivery(deviceId: string): Promise<DeliveryView> {
    return this.#call("GET", `/devices/${this.#id(deviceId)}/queue`);
  }
  async peers(): Promise<PeerView[]> {
    return (await this.#call<{ items: PeerView[] }>("GET", "/peers")).items;
  }
  addPeer(
    input: { domain: string; endpoint: string; publicKey: string; status?: PeerStatus },
  ): Promise<{ peer: PeerView } & Noted> {
    return this.#call("POST", "/peers", {}, input);
  }
  setPeerStatus(domain: string, status: PeerStatus): Promise<{ peer: PeerView } & Noted> {
    return this.#call("POST", `/peers/${this.#id(domain)}/status`, {}, { status });
  }
  retryPeer(domain: string): Promise<{ domain: string; dueNow: number } & Noted> {
    return this.#call("POST", `/peers/${this.#id(domain)}/retry`);
  }
  async deadLetters(filter: { peerDomain?: string; limit?: number }): Promise<OutboxView[]> {
    return (await this.#call<{ items: OutboxView[] }>("GET", "/dead-letters", {
      peer: filter.peerDomain,
      limit: filter.limit,
    })).items;
  }
  replayDeadLetter(id: string): Promise<{ entry: OutboxView } & Noted> {
    return this.#call("POST", `/dead-letters/${this.#id(id)}/replay`);
  }
  groups(filter: { search?: string } & PageQuery): Promise<Page<GroupView>> {
    return this.#call("GET", "/groups", { ...filter });
  }
  group(id: string): Promise<GroupDetail> {
    return this.#call("GET", `/groups/${this.#id(id)}`);
  }
  removeGroupMember(groupId: string, deviceId: string): Promise<Noted> {
    return this.#call("DELETE", `/groups/${this.#id(groupId)}/members/${this.#id(deviceId)}`);
  }
  audit(
    filter: { actor?: string; action?: string; target?: string } & PageQuery,
  ): Promise<Page<AuditView>> {
    return this.#call("GET", "/audit", { ...filter });
  }
  async nodes(): Promise<NodeView[]> {
    return (await this.#call<{ items: NodeView[] }>("GET", "/nodes")).items;
  }
}
