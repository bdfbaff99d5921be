/** Shared set-up for console tests: a config, seeded fake storage, and a signed-in client. */
import type { Config } from "../../server/config/mod.ts";
import { buildConsole, type ConsoleApp } from "../../console/server.ts";
import type { ConsoleContext } from "../../console/context.ts";
import { type FakeStorage, fakeStorage } from "./fake_storage.ts";
import { testConfig as relayTestConfig } from "../server/helpers/server.ts";
import type { Storage } from "../../storage/types.ts";

export const ADMIN_TOKEN = "test-admin-token-0123456789";

/**
 * A complete Config with the console tests' defaults (tests/server/helpers/server.ts's, with a
 * fixed domain, fixed keys and an operator who approves devices); `patch` overrides parts of it.
 */
export function testConfig(patch: {
  admin?: Partial<Config["admin"]>;
  server?: Partial<Config["server"]>;
  federation?: Partial<Config["federation"]>;
} = {}): Config {
  const config = relayTestConfig({
    server: {
      domain: "relay.test",
      autoApproveDevices: false,
      keepalive: 30,
      dataDir: "./data",
      ...patch.server,
    },
    limits: {
      presenceTtl: 60,
      relayTtl: 86400,
      outboundQueueFrames: 1024,
      outboundQueueBytes: 1 << 20,
      maxInflight: 128,
    },
    admin: { token: ADMIN_TOKEN, ...patch.admin },
  });
  config.crypto = {
    ...config.crypto,
    noisePrivate: new Uint8Array(32).fill(1),
    noisePublic: new Uint8Array(32).fill(2),
    federationSeed: new Uint8Array(32).fill(3),
  };
  config.federation = { ...config.federation, ...patch.federation };
  return config;
}

export const key = (n: number) => new Uint8Array(32).fill(n);

/** Seeds users, devices in every state, a group, peers, outbox entries and an envelope. */
export async function seed(s: FakeStorage): Promise<void> {
  const alice = await s.users.create({ id: "u-alice", handle: "alice", displayName: "Alice" });
  const bob = await s.users.create({ id: "u-bob", handle: "bob", displayName: "Bob" });
  await s.devices.register(
    { id: "dev-a1", userId: alice.id, publicKey: key(1), status: "active" },
    "handshake",
  );
  await s.devices.register(
    { id: "dev-a2", userId: alice.id, publicKey: key(2), status: "pending" },
    "handshake",
  );
  await s.devices.register(
    { id: "dev-b1", userId: bob.id, publicKey: key(3), status: "active" },
    "handshake",
  );
  await s.devices.register(
    { id: "dev-b2", userId: bob.id, publicKey: key(4), status: "active" },
    "handshake",
  );
  await s.devices.revoke("dev-b2", "cli:root");
  await s.groups.create({ id: "grp-team", ownerDeviceId: "dev-a1", relay: true }, "handshake");
  await s.groups.addMember("grp-team", "dev-b1", "member", "handshake");
  await s.peers.upsert({
    domain: "peer.example.org",
    endpoint: "https://peer.example.org/federation",
    publicKey: key(9),
    status: "active",
  }, "cli:root");
  const entry = await s.outbox.enqueue({
    eventId: "e1",
    peerDomain: "peer.example.org",
    endpoint: "https://peer.example.org/federation",
    body: {},
  });
  await s.outbox.markFailed(entry.id, "connect timeout");
  s.addEnvelope("dev-a1", new Date(Date.now() - 120_000));
}

/** A console app over fake storage, with a manual clock. */
export interface Harness extends ConsoleApp {
  storage: FakeStorage;
  clock: { now: number };
  fetch(path: string, init?: RequestInit & { address?: string }): Promise<Response>;
}

/** Requests to a built console as from `init.address` (default 192.0.2.1). */
function fetchOf(built: ConsoleApp): Harness["fetch"] {
  return (path, init = {}) =>
    Promise.resolve(
      built.app.fetch(new Request(`http://console.test${path}`, init), {
        remoteAddr: init.address ?? "192.0.2.1",
      }),
    );
}

export async function harness(
  opts: { config?: Config; seed?: boolean; ctx?: Partial<ConsoleContext> } = {},
): Promise<Harness> {
  const clock = { now: Date.now() };
  const storage = fakeStorage(() => clock.now);
  if (opts.seed !== false) await seed(storage);
  const built = buildConsole({
    config: opts.config ?? testConfig(),
    storage,
    nodeId: "node-test",
    now: () => clock.now,
    ...opts.ctx,
  });
  return {
    ...built,
    storage,
    clock,
    fetch: fetchOf(built),
  };
}

/**
 * A console over real storage (a test's embedded or Postgres storage) instead of the fake one;
 * the same fetch as {@link harness}. Sign in with {@link signIn}.
 */
export function harnessOver(storage: Storage, config: Config = testConfig()): Harness {
  const built = buildConsole({ config, storage, nodeId: "node-test" });
  return {
    ...built,
    storage: storage as unknown as FakeStorage,
    clock: { now: Date.now() },
    fetch: fetchOf(built),
  };
}

/** The session cookie pair ("name=value") from a response, or null. */
export function sessionCookie(res: Response): string | null {
  for (const c of res.headers.getSetCookie()) {
    const pair = c.split(";")[0];
    if (pair.startsWith("commucat_console=") || pair.startsWith("__Host-commucat_console=")) {
      return pair;
    }
  }
  return null;
}

/** The CSRF token of the first form in a page. */
export function csrfOf(html: string): string {
  const m = /name="_csrf" value="([^"]+)"/.exec(html);
  if (!m) throw new Error("no CSRF token in the page");
  return m[1];
}

/** A signed-in browser-like client: keeps the cookie, knows the CSRF token. */
export interface Client {
  cookie: string;
  csrf: string;
  get(path: string): Promise<Response>;
  post(
    path: string,
    fields: Record<string, string>,
    opts?: { csrf?: string | null },
  ): Promise<Response>;
}

/** Signs in through the real form and returns a client. */
export async function signIn(h: Harness, token = ADMIN_TOKEN, address?: string): Promise<Client> {
  const form = await h.fetch("/sign-in", { address });
  const anon = sessionCookie(form)!;
  const csrf0 = csrfOf(await form.text());
  const res = await h.fetch("/sign-in", {
    method: "POST",
    address,
    headers: { cookie: anon, "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ _csrf: csrf0, token, next: "/" }),
  });
  if (res.status !== 303) throw new Error(`sign-in failed: ${res.status} ${await res.text()}`);
  const cookie = sessionCookie(res)!;
  const home = await h.fetch("/devices", { headers: { cookie } });
  const csrf = csrfOf(await home.text());
  const client: Client = {
    cookie,
    csrf,
    get: (path) => h.fetch(path, { headers: { cookie }, address }),
    post: (path, fields, opts = {}) => {
      const body = new URLSearchParams(fields);
      const token = opts.csrf === undefined ? csrf : opts.csrf;
      if (token !== null) body.set("_csrf", token);
      return h.fetch(path, {
        method: "POST",
        address,
        headers: { cookie, "content-type": "application/x-www-form-urlencoded" },
        body,
      });
    },
  };
  return client;
}
