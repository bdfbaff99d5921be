/**
 * Hostile and broken input: markup and script render inert, SQL-injection strings are harmless,
 * forms without or with a forged CSRF token are refused, expired sessions go to sign-in,
 * repeated wrong tokens are slowed down, security headers are always present, and the console
 * refuses to listen beyond loopback without an admin token.
 */
import assert from "node:assert/strict";
import { ADMIN_TOKEN, csrfOf, harness, key, sessionCookie, signIn, testConfig } from "./helpers.ts";
import { startConsole } from "../../console/server.ts";
import { ConsoleConfigError } from "../../console/auth.ts";
import { csvCell } from "../../console/export.ts";
import type { Storage } from "../../storage/types.ts";

const XSS = `<script>alert(1)</script>"'><img src=x onerror=alert(2)><svg onload=alert(3)>`;
const SQLI = `' OR 1=1; DROP TABLE app_user; --`;

/** True when the page contains no live markup from the payload. */
function assertInert(html: string, where: string) {
  assert.doesNotMatch(html, /<script>alert/i, `${where}: script tag rendered`);
  assert.doesNotMatch(html, /<img src=x/i, `${where}: img tag rendered`);
  assert.doesNotMatch(html, /<svg onload/i, `${where}: svg tag rendered`);
  assert.doesNotMatch(html, /"'><img/, `${where}: attribute broken out of`);
}

const LIST_PAGES = [
  "/devices?status=&user=X&q=X",
  "/devices?status=X",
  "/users?q=X",
  "/groups?q=X",
  "/key-events?device=X&from=X&to=X",
  "/key-events?device=X",
  "/audit?actor=X&action=X&target=X",
  "/devices/X",
  "/users/X",
  "/groups/X",
  "/groups/X/members/X/remove",
  "/peers/X/status?to=blocked",
  "/peers/peer.example.org/status?to=X",
  "/devices/X/approve?back=X",
  "/X",
  "/devices?cursor=X",
];

Deno.test("markup and script in query strings and paths render inert", async () => {
  const h = await harness();
  const c = await signIn(h);
  for (const template of LIST_PAGES) {
    const path = template.replaceAll("X", encodeURIComponent(XSS));
    const res = await c.get(path);
    const html = await res.text();
    assert.ok(res.status < 500, `${template}: status ${res.status}`);
    assertInert(html, template);
  }
  // A filter echoes the value back, escaped.
  const html = await (await c.get(`/users?q=${encodeURIComponent(XSS)}`)).text();
  assert.match(html, /value="&lt;script>alert\(1\)&lt;\/script>&quot;'>&lt;img/);
  h.close();
});

Deno.test("markup stored in every field renders inert on every page", async () => {
  const h = await harness();
  const s = h.storage;
  // Handles, ids and domains like these the real store refuses; seeded as if a database held
  // them. Free text (actors) goes through the repositories, on rows with well-formed ids.
  const u = s.seedUser({ handle: XSS, displayName: XSS, avatarUrl: XSS });
  s.seedDevice({ id: XSS, userId: u.id, publicKey: key(7), status: "pending", actor: XSS });
  s.seedGroup({ id: XSS, ownerDeviceId: XSS, actor: XSS, members: [["dev-a1", "member"]] });
  await s.devices.register(
    { id: "dev-x", userId: u.id, publicKey: key(6), status: "pending" },
    XSS,
  );
  await s.groups.create({ id: "grp-x", ownerDeviceId: "dev-x", relay: true }, XSS);
  await s.groups.addMember("grp-x", "dev-a1", "member", XSS);
  s.seedPeer({ domain: XSS, endpoint: XSS, publicKey: key(8), status: "pending" });
  const entry = s.seedOutbox({ eventId: XSS, peerDomain: XSS, endpoint: XSS, body: XSS });
  await s.outbox.markFailed(entry.id, XSS);
  await s.audit.append({ actor: XSS, action: XSS, target: XSS, before: { x: XSS }, after: XSS });
  const c = await signIn(h);
  const id = encodeURIComponent(XSS);
  for (
    const path of [
      "/",
      "/devices",
      `/devices/${id}`,
      `/devices/${id}/approve`,
      "/devices/dev-x",
      "/devices/dev-x/approve",
      "/users",
      `/users/${encodeURIComponent(u.id)}`,
      "/groups",
      `/groups/${id}`,
      `/groups/${id}/members/dev-a1/remove`,
      "/groups/grp-x",
      "/groups/grp-x/members/dev-a1/remove",
      "/peers",
      `/peers/${id}/status?to=blocked`,
      "/key-events",
      "/audit",
    ]
  ) {
    const res = await c.get(path);
    // Such an id or domain is not one: the repositories refuse to look it up (400), as in
    // production; the page that says so is inert too.
    assert.equal(res.status, path.includes(id) ? 400 : 200, path);
    assertInert(await res.text(), path);
  }
  h.close();
});

Deno.test("markup in form fields is echoed back inert", async () => {
  const h = await harness();
  const c = await signIn(h);
  const res = await c.post("/peers", { domain: XSS, endpoint: XSS, publicKey: XSS, status: XSS });
  assert.equal(res.status, 400);
  const html = await res.text();
  assertInert(html, "add peer");
  assert.match(html, /Domain must be a DNS name/);
  assert.match(html, /Status must be one of active, pending, blocked/);
  const signin = await h.fetch("/sign-in?next=" + encodeURIComponent(XSS));
  assertInert(await signin.text(), "sign-in next");
  h.close();
});

/** Runs `fn` against real Postgres when COMMUCAT_TEST_PG_DSN is set, else the fake. */
async function withSqlStorage(fn: (s: Storage | null) => Promise<void>) {
  const dsn = Deno.env.get("COMMUCAT_TEST_PG_DSN");
  if (!dsn) return await fn(null);
  const { openStorage } = await import("../../storage/mod.ts");
  const storage = await openStorage({ postgresDsn: dsn, redisUrl: null, dataDir: "./data" });
  try {
    await fn(storage);
  } finally {
    await storage.close();
  }
}

Deno.test("SQL-injection strings in filters are harmless", async () => {
  await withSqlStorage(async (real) => {
    const h = await harness({ ctx: real ? { storage: real } : {} });
    const storage = real ?? h.storage;
    const c = await signIn(h);
    const before = await storage.devices.countByStatus();
    for (const template of LIST_PAGES.slice(0, 7)) {
      const res = await c.get(template.replaceAll("X", encodeURIComponent(SQLI)));
      assert.ok(res.status === 200 || res.status === 400, `${template}: ${res.status}`);
      const html = await res.text();
      assert.doesNotMatch(html, /syntax error|storage failure/i, template);
    }
    for (const p of ["/devices/X", "/users/X", "/groups/X", "/key-events/export.csv?device=X"]) {
      const res = await c.get(p.replace("X", encodeURIComponent(SQLI)));
      assert.ok([200, 400, 404].includes(res.status), `${p}: ${res.status}`);
      await res.body?.cancel();
    }
    assert.deepEqual(await storage.devices.countByStatus(), before, "nothing was changed");
    assert.ok(await storage.users.list({ limit: 1 }), "the users table is still there");
    h.close();
  });
});

Deno.test("a form without, with a forged, or with another session's CSRF token is refused", async () => {
  const h = await harness();
  const c = await signIn(h);
  const other = await signIn(h);
  for (const csrf of [null, "forged-token", "", other.csrf]) {
    const res = await c.post("/devices/dev-a2/approve", { confirm: "yes" }, { csrf });
    assert.equal(res.status, 403, `token ${csrf}`);
    const html = await res.text();
    assert.match(html, /This form could not be accepted\./);
    assert.match(html, /Nothing was changed/);
  }
  for (const path of ["/peers", "/groups/grp-team/members/dev-b1/remove", "/sign-out"]) {
    const res = await c.post(path, { confirm: "yes", domain: "x.example.org" }, { csrf: null });
    assert.equal(res.status, 403, path);
    await res.body?.cancel();
  }
  assert.equal((await h.storage.devices.get("dev-a2"))!.status, "pending");
  assert.equal(await h.storage.groups.role("grp-team", "dev-b1"), "member");
  assert.equal(h.storage.control.length, 0);
  // The sign-in form is protected too.
  const res = await h.fetch("/sign-in", {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ token: ADMIN_TOKEN }),
  });
  assert.equal(res.status, 403);
  await res.body?.cancel();
  h.close();
});

Deno.test("an expired session is sent to sign-in", async () => {
  const h = await harness();
  const c = await signIn(h);
  h.clock.now += 31 * 60 * 1000; // idle longer than 30 minutes
  const res = await c.get("/devices?status=pending");
  assert.equal(res.status, 303);
  assert.equal(
    res.headers.get("location"),
    "/sign-in?expired=1&next=%2Fdevices%3Fstatus%3Dpending",
  );
  const page = await h.fetch(res.headers.get("location")!);
  assert.match(await page.text(), /Your session expired\. Sign in again\./);
  const post = await c.post("/devices/dev-a2/approve", { confirm: "yes" });
  assert.equal(post.status, 303);
  assert.match(post.headers.get("location")!, /^\/sign-in/);
  assert.equal((await h.storage.devices.get("dev-a2"))!.status, "pending");

  // An active session still ends after the absolute lifetime of 8 hours.
  const d = await signIn(h);
  for (let i = 0; i < 17; i++) {
    h.clock.now += 29 * 60 * 1000;
    assert.equal((await d.get("/users")).status, i < 16 ? 200 : 303, `after ${i + 1} steps`);
  }
  h.close();
});

Deno.test("repeated wrong tokens are slowed down per address", async () => {
  const h = await harness();
  const attempt = async (token: string, address = "203.0.113.9") => {
    const form = await h.fetch("/sign-in", { address });
    const cookie = sessionCookie(form)!;
    const csrf = csrfOf(await form.text());
    return await h.fetch("/sign-in", {
      method: "POST",
      address,
      headers: { cookie, "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ _csrf: csrf, token }),
    });
  };
  for (let i = 0; i < 3; i++) {
    const res = await attempt("wrong-" + i);
    assert.equal(res.status, 401);
    assert.match(await res.text(), /That token is not right/);
  }
  const fourth = await attempt("wrong-again");
  assert.equal(fourth.status, 401);
  assert.match(await fourth.text(), /Wait 1 s before the next try/);
  const blocked = await attempt("wrong-during-the-wait");
  assert.equal(blocked.status, 429, "a wrong token waits");
  assert.equal(blocked.headers.get("retry-after"), "1");
  assert.match(await blocked.text(), /Too many wrong tokens/);
  // The right token always works, even from the address being slowed down.
  assert.equal((await attempt(ADMIN_TOKEN)).status, 303, "the right token is never locked out");
  // Another address is not affected.
  assert.equal((await attempt("wrong", "203.0.113.10")).status, 401);
  // The wait doubles with each further failure.
  h.clock.now += 1_000;
  assert.equal((await attempt("wrong")).status, 401);
  const again = await attempt("wrong-again");
  assert.equal(again.status, 429);
  assert.equal(again.headers.get("retry-after"), "2");
  await again.body?.cancel();
  h.clock.now += 2_000;
  assert.equal((await attempt(ADMIN_TOKEN)).status, 303, "after the wait the right token works");
  h.close();
});

Deno.test("security headers are on every response", async () => {
  const h = await harness();
  const c = await signIn(h);
  const responses = [
    await h.fetch("/sign-in"),
    await h.fetch("/devices"),
    await h.fetch("/static/console.css"),
    await c.get("/"),
    await c.get("/nope"),
    await c.get("/key-events/export.csv"),
    await c.post("/peers", {}, { csrf: null }),
  ];
  for (const res of responses) {
    const where = `${res.status} ${res.url}`;
    const csp = res.headers.get("content-security-policy") ?? "";
    assert.match(csp, /default-src 'self'/, where);
    assert.match(csp, /frame-ancestors 'none'/, where);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/, where);
    assert.equal(res.headers.get("x-content-type-options"), "nosniff", where);
    assert.equal(res.headers.get("x-frame-options"), "DENY", where);
    assert.equal(res.headers.get("referrer-policy"), "no-referrer", where);
    await res.body?.cancel();
  }
  // No page carries inline script or inline style.
  const html = await (await c.get("/")).text();
  assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/);
  assert.doesNotMatch(html, /\sstyle=/);
  assert.doesNotMatch(html, /\son[a-z]+=/);
  h.close();
});

Deno.test("session cookies are HttpOnly, SameSite=Strict, and Secure under TLS", async () => {
  const plain = await harness();
  const cookie = (await plain.fetch("/sign-in")).headers.get("set-cookie")!;
  assert.match(cookie, /^commucat_console=[A-Za-z0-9_-]{43};/);
  assert.match(cookie, /HttpOnly/);
  assert.match(cookie, /SameSite=Strict/);
  assert.doesNotMatch(cookie, /Secure/);
  plain.close();
  const tls = await harness({ ctx: { secure: true } });
  const res = await tls.fetch("/sign-in");
  const secureCookie = res.headers.get("set-cookie")!;
  assert.match(secureCookie, /^__Host-commucat_console=/);
  assert.match(secureCookie, /; Secure/);
  assert.match(res.headers.get("strict-transport-security")!, /max-age=/);
  await res.body?.cancel();
  tls.close();
});

Deno.test("sign-in refuses to redirect off-site", async () => {
  const h = await harness();
  for (
    const next of ["//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:x"]
  ) {
    const form = await h.fetch("/sign-in");
    const cookie = sessionCookie(form)!;
    const csrf = csrfOf(await form.text());
    const res = await h.fetch("/sign-in", {
      method: "POST",
      headers: { cookie, "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ _csrf: csrf, token: ADMIN_TOKEN, next }),
    });
    assert.equal(res.status, 303);
    assert.equal(res.headers.get("location"), "/", next);
  }
  h.close();
});

Deno.test("exported CSV cells cannot run as spreadsheet formulas", async () => {
  assert.equal(csvCell('=HYPERLINK("x")'), `"'=HYPERLINK(""x"")"`);
  for (const lead of ["=", "+", "-", "@", "\t", "\r"]) {
    assert.ok(csvCell(`${lead}1+1`).startsWith(`"'${lead}`), JSON.stringify(lead));
  }
  assert.equal(csvCell("plain"), `"plain"`);
  const h = await harness();
  // Such a device id the real store refuses; seeded as if a database held it.
  h.storage.seedDevice({
    id: "=cmd|' /C calc'!A0",
    userId: "u-alice",
    publicKey: key(5),
    status: "pending",
    actor: "@SUM(A1)",
  });
  const c = await signIn(h);
  const csv = await (await c.get("/key-events/export.csv")).text();
  assert.match(csv, /"'=cmd\|' \/C calc'!A0"/);
  assert.match(csv, /"'@SUM\(A1\)"/);
  h.close();
});

Deno.test("without an admin token the console refuses any bind but loopback", async () => {
  const storage = (await harness()).storage;
  for (const hostname of ["0.0.0.0", "192.0.2.10", "::"]) {
    const config = testConfig({
      admin: { token: null },
      server: { consoleBind: { hostname, port: 0 } },
    });
    await assert.rejects(
      () => startConsole({ config, storage, nodeId: "n" }),
      (err: Error) => {
        assert.ok(err instanceof ConsoleConfigError);
        assert.match(
          err.message,
          new RegExp(`refuses to listen on ${hostname.replace(/\./g, "\\.")}`),
        );
        assert.match(err.message, /set \[admin\] token/);
        return true;
      },
    );
  }
});

Deno.test("without an admin token on loopback a start-up token is written, not logged", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "console-token-" });
  const storage = (await harness()).storage;
  const lines: string[] = [];
  const capture = (msg: string, fields?: Record<string, unknown>) =>
    lines.push(msg + JSON.stringify(fields ?? {}));
  const running = await startConsole({
    config: testConfig({ admin: { token: null }, server: { dataDir } }),
    storage,
    nodeId: "n",
    log: { info: capture, warn: capture, error: capture },
  });
  try {
    assert.ok(running.startupToken && running.startupToken.length >= 32);
    const file = `${dataDir}/console-token`;
    assert.equal(running.startupTokenFile, file);
    assert.equal((await Deno.readTextFile(file)).trim(), running.startupToken);
    assert.equal((await Deno.stat(file)).mode! & 0o777, 0o600);
    assert.ok(!lines.some((l) => l.includes(running.startupToken!)), "token not in the log");
    assert.ok(lines.some((l) => l.includes(file)), "the log names the file");
    // Signing in with it works over a real socket.
    const form = await fetch(`${running.url}/sign-in`);
    const cookie = form.headers.get("set-cookie")!.split(";")[0];
    const html = await form.text();
    assert.match(html, /use the start-up token in/);
    const res = await fetch(`${running.url}/sign-in`, {
      method: "POST",
      redirect: "manual",
      headers: { cookie, "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ _csrf: csrfOf(html), token: running.startupToken! }),
    });
    assert.equal(res.status, 303);
    await res.body?.cancel();
  } finally {
    await running.stop();
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("wrong tokens per address per hour are limited through the shared store too", async () => {
  const config = testConfig();
  config.limits.signInFailuresPerHour = 2;
  const h = await harness({ config });
  const attempt = async (token: string) => {
    const form = await h.fetch("/sign-in", { address: "198.51.100.4" });
    const cookie = sessionCookie(form)!;
    const csrf = csrfOf(await form.text());
    return await h.fetch("/sign-in", {
      method: "POST",
      address: "198.51.100.4",
      headers: { cookie, "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ _csrf: csrf, token }),
    });
  };
  // Two wrong tokens use the shared bucket (the local backoff still lets them through) …
  assert.equal((await attempt("wrong-1")).status, 401);
  assert.equal((await attempt("wrong-2")).status, 401);
  // … the third is refused by it, with the wait until one drains (30 min for 2 per hour).
  const third = await attempt("wrong-3");
  assert.equal(third.status, 429);
  assert.ok(Number(third.headers.get("retry-after")) > 60);
  await third.body?.cancel();
  // The right token is never refused.
  assert.equal((await attempt(ADMIN_TOKEN)).status, 303);
  h.close();
});
