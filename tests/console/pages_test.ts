/** Console pages and operator actions over fake storage, through app.fetch. */
import { LIMITED_STREAM } from "../../storage/ephemeral/mod.ts";
import assert from "node:assert/strict";
import { harness, signIn } from "./helpers.ts";
import { storageDown } from "./fake_storage.ts";

Deno.test("every page renders for a signed-in operator", async () => {
  const h = await harness();
  const c = await signIn(h);
  for (
    const path of [
      "/",
      "/devices",
      "/devices?status=pending",
      "/devices?awaiting=1",
      "/devices?user=alice",
      "/devices/dev-a1",
      "/devices/dev-a2/approve",
      "/users",
      "/users/u-alice",
      "/groups",
      "/groups/grp-team",
      "/groups/grp-team/members/dev-b1/remove",
      "/peers",
      "/peers/peer.example.org/status?to=blocked",
      "/key-events",
      "/key-events?device=dev-a1",
      "/audit",
    ]
  ) {
    const res = await c.get(path);
    const html = await res.text();
    assert.equal(res.status, 200, `${path}: ${res.status}`);
    assert.match(html, /^<!doctype html>/, path);
    assert.match(html, /<main id="content"/, path);
  }
  h.close();
});

Deno.test("pages without a session send the visitor to sign-in", async () => {
  const h = await harness();
  const res = await h.fetch("/devices?status=pending");
  assert.equal(res.status, 303);
  assert.equal(res.headers.get("location"), "/sign-in?next=%2Fdevices%3Fstatus%3Dpending");
  const live = await h.fetch("/live/figures");
  assert.equal(live.status, 401);
  await live.body?.cancel();
  h.close();
});

Deno.test("the devices page lists the pending queue first", async () => {
  const h = await harness();
  const c = await signIn(h);
  const html = await (await c.get("/devices")).text();
  const queue = html.indexOf("Waiting for approval");
  const all = html.indexOf("All devices");
  assert.ok(queue > 0 && all > queue);
  assert.ok(html.indexOf("dev-a2") < all, "the pending device is in the queue");
  const filtered = await (await c.get("/devices?status=revoked")).text();
  assert.match(filtered, /dev-b2/);
  assert.doesNotMatch(filtered, /dev-a1/);
  h.close();
});

Deno.test("a new key waiting for approval is in the queue, the filter and the count", async () => {
  const h = await harness();
  const c = await signIn(h);
  h.storage.requestKey("dev-b1", new Uint8Array(32).fill(0x7e));
  const section = (html: string) => {
    const start = html.indexOf("Waiting for approval");
    return html.slice(start, html.indexOf("All devices", start));
  };
  const queue = section(await (await c.get("/devices")).text());
  assert.match(queue, /dev-a2/, "the never-approved device waits");
  assert.match(queue, /dev-b1/, "the active device with a new key waits");
  assert.doesNotMatch(queue, /dev-a1|dev-b2/, "nothing else is in the queue");
  assert.match(queue, /new key waiting: <code>7e7e7e7e/);
  assert.match(queue, /aria-label="Approve device dev-b1"[^>]*>Approve key</);
  assert.match(queue, /aria-label="Reject device dev-b1"[^>]*>Reject key</);

  // The filter lists the same devices; an unknown value is refused with a message.
  const filtered = await (await c.get("/devices?awaiting=1")).text();
  assert.doesNotMatch(filtered, /Waiting for approval<\/h2>/, "no queue above a filtered list");
  assert.match(filtered, /dev-a2/);
  assert.match(filtered, /dev-b1/);
  assert.doesNotMatch(filtered, /dev-a1|dev-b2/);
  const activeOnly = await (await c.get("/devices?awaiting=1&status=active")).text();
  assert.match(activeOnly, /dev-b1/);
  assert.doesNotMatch(activeOnly, /dev-a2/);
  const bad = await c.get("/devices?awaiting=maybe");
  assert.equal(bad.status, 400);
  assert.match(await bad.text(), /Waiting for approval must be 1 or empty/);

  // The dashboard counts both and links to the filter.
  const card = (html: string) =>
    /data-figure="pendingApprovals"><span class="card-label">[^<]+<\/span><span class="card-value">([^<]+)</
      .exec(html)?.[1];
  const dashboard = await (await c.get("/")).text();
  assert.equal(card(dashboard), "2");
  assert.match(dashboard, /href="\/devices\?awaiting=1">\s*Review devices and keys waiting/);

  // Approving the key takes the device out of the queue and the count.
  const approved = await c.post("/devices/dev-b1/approve", { confirm: "yes", back: "/devices" });
  assert.equal(approved.status, 303);
  const device = (await h.storage.devices.get("dev-b1"))!;
  assert.equal(device.pendingPublicKey, null);
  assert.equal(device.publicKey[0], 0x7e);
  assert.doesNotMatch(section(await (await c.get("/devices")).text()), /dev-b1/);
  assert.equal(await h.storage.devices.countAwaitingApproval(), 1);
  h.close();
});

Deno.test("approving a device needs the confirmation, then publishes and audits", async () => {
  const h = await harness();
  const c = await signIn(h);
  const unconfirmed = await c.post("/devices/dev-a2/approve", {});
  assert.equal(unconfirmed.status, 303);
  assert.match(unconfirmed.headers.get("location")!, /^\/devices\/dev-a2\/approve/);
  assert.equal((await h.storage.devices.get("dev-a2"))!.status, "pending");

  const res = await c.post("/devices/dev-a2/approve", { confirm: "yes", back: "/devices" });
  assert.equal(res.status, 303);
  assert.equal(res.headers.get("location"), "/devices");
  assert.equal((await h.storage.devices.get("dev-a2"))!.status, "active");
  assert.deepEqual(h.storage.control.at(-1), { kind: "device-approved", deviceId: "dev-a2" });
  const audit = (await h.storage.audit.list({ action: "device.approve" })).items[0];
  assert.equal(audit.target, "device:dev-a2");
  assert.deepEqual((audit.before as { status: string }).status, "pending");
  assert.deepEqual((audit.after as { status: string }).status, "active");
  assert.match(audit.actor, /^console:[0-9a-f]{16}$/);
  assert.ok(!c.cookie.includes(audit.actor.slice(8)), "the actor is not the cookie value");
  const events = await h.storage.keyEvents.list({ deviceId: "dev-a2" });
  assert.equal(events.items[0].kind, "approved");
  assert.equal(events.items[0].actor, audit.actor);
  const page = await (await c.get("/devices")).text();
  assert.match(page, /Device dev-a2 is now active\./);
  h.close();
});

Deno.test("revoking a device interrupts it on every node", async () => {
  const h = await harness();
  const c = await signIn(h);
  const res = await c.post("/devices/dev-a1/revoke", { confirm: "yes" });
  assert.equal(res.status, 303);
  assert.equal((await h.storage.devices.get("dev-a1"))!.status, "revoked");
  assert.ok(h.storage.interrupts.has("dev-a1"));
  assert.deepEqual(h.storage.control.at(-1), { kind: "device-revoked", deviceId: "dev-a1" });
  // Revoking again is refused with a message, not a crash.
  await c.post("/devices/dev-a1/revoke", { confirm: "yes" });
  const page = await (await c.get("/devices/dev-a1")).text();
  assert.match(
    page,
    /was not changed: device &quot;dev-a1&quot; cannot go from revoked to revoked/,
  );
  h.close();
});

Deno.test("rejecting a pending device leaves it revoked", async () => {
  const h = await harness();
  const c = await signIn(h);
  await c.post("/devices/dev-a2/reject", { confirm: "yes" });
  assert.equal((await h.storage.devices.get("dev-a2"))!.status, "revoked");
  assert.equal((await h.storage.audit.list({ action: "device.reject" })).items.length, 1);
  h.close();
});

Deno.test("removing a group member updates routes and the audit log", async () => {
  const h = await harness();
  const c = await signIn(h);
  const res = await c.post("/groups/grp-team/members/dev-b1/remove", { confirm: "yes" });
  assert.equal(res.status, 303);
  assert.equal(await h.storage.groups.role("grp-team", "dev-b1"), null);
  assert.deepEqual(h.storage.control.at(-1), {
    kind: "member-removed",
    groupId: "grp-team",
    deviceId: "dev-b1",
  });
  const page = await (await c.get("/groups/grp-team")).text();
  assert.match(page, /removed from grp-team/);
  assert.match(page, /badge-removed/);
  const audit = (await h.storage.audit.list({ action: "group.remove-member" })).items[0];
  assert.deepEqual(audit.before, { deviceId: "dev-b1", role: "member" });
  h.close();
});

Deno.test("peers: add with validation, block, static peers read-only", async () => {
  const h = await harness({
    config: (await import("./helpers.ts")).testConfig({
      federation: {
        peers: [{
          domain: "static.example.net",
          endpoint: "https://static.example.net/f",
          publicKey: new Uint8Array(32),
        }],
      },
    }),
  });
  const c = await signIn(h);
  const list = await (await c.get("/peers")).text();
  assert.match(list, /static\.example\.net/);
  assert.match(list, /config \(read-only\)/);
  assert.match(list, /connect timeout/, "last outbox error is shown");

  const bad = await c.post("/peers", {
    domain: "not a domain",
    endpoint: "http://x.example.org/",
    publicKey: "abc",
    status: "active",
  });
  assert.equal(bad.status, 400);
  const badHtml = await bad.text();
  assert.match(badHtml, /Domain must be a DNS name/);
  assert.match(badHtml, /Endpoint must be an https:\/\/ URL/);
  assert.match(badHtml, /Public key must be 32 bytes/);
  assert.match(badHtml, /value="not a domain"/, "the typed values are kept");

  const ok = await c.post("/peers", {
    domain: "New.Example.com",
    endpoint: "https://new.example.com/federation",
    publicKey: "ab".repeat(32),
    status: "pending",
  });
  assert.equal(ok.status, 303);
  assert.equal((await h.storage.peers.get("new.example.com"))!.status, "pending");

  const block = await c.post("/peers/peer.example.org/status", {
    status: "blocked",
    confirm: "yes",
  });
  assert.equal(block.status, 303);
  assert.equal((await h.storage.peers.get("peer.example.org"))!.status, "blocked");
  assert.deepEqual(h.storage.control.at(-1), {
    kind: "peer-status",
    domain: "peer.example.org",
    status: "blocked",
  });
  const audit = (await h.storage.audit.list({ action: "peer.set-status" })).items[0];
  assert.equal((audit.before as { status: string }).status, "active");
  assert.equal((audit.after as { status: string }).status, "blocked");

  const staticChange = await c.get("/peers/static.example.net/status?to=blocked");
  assert.equal(staticChange.status, 409);
  await staticChange.body?.cancel();
  const staticPost = await c.post("/peers/static.example.net/status", {
    status: "blocked",
    confirm: "yes",
  });
  assert.equal(staticPost.status, 303);
  const after = await (await c.get("/peers")).text();
  assert.match(after, /was not changed: invalid peer/);
  h.close();
});

Deno.test("key events export as CSV and JSON attachments", async () => {
  const h = await harness();
  const c = await signIn(h);
  const csv = await c.get("/key-events/export.csv?device=dev-b2");
  assert.equal(csv.status, 200);
  assert.match(csv.headers.get("content-type")!, /^text\/csv/);
  assert.match(
    csv.headers.get("content-disposition")!,
    /^attachment; filename="key-events-dev-b2-\d{8}-\d{6}\.csv"$/,
  );
  const lines = (await csv.text()).trim().split("\r\n");
  assert.equal(lines[0], "event_id,device_id,kind,public_key,actor,recorded_at");
  assert.equal(lines.length, 3); // registered + revoked
  assert.match(lines[2], /"revoked"/);

  const json = await c.get("/key-events/export.json");
  assert.match(
    json.headers.get("content-disposition")!,
    /^attachment; filename="key-events-\d{8}-\d{6}\.json"$/,
  );
  const rows = await json.json() as { device_id: string; public_key: string }[];
  assert.equal(rows.length, 5); // four registrations and one revocation
  assert.equal(rows[0].public_key, "01".repeat(32));

  const badTime = await c.get("/key-events?from=yesterday");
  assert.equal(badTime.status, 400);
  assert.match(await badTime.text(), /From must be a date and time/);
  h.close();
});

Deno.test("storage failures show a friendly page with the troubleshooting hint", async () => {
  const h = await harness();
  const c = await signIn(h);
  h.storage.failWith = storageDown();
  const res = await c.get("/devices");
  assert.equal(res.status, 503);
  const html = await res.text();
  assert.match(html, /Storage Failure:/);
  assert.match(html, /check the DSN, the role's rights and migrations/);
  h.storage.failWith = null;
  const missing = await c.get("/devices/nope");
  assert.equal(missing.status, 404);
  assert.match(await missing.text(), /no device has the id “nope”/);
  h.close();
});

Deno.test("the dashboard shows figures from the server and from storage", async () => {
  const h = await harness({
    ctx: {
      metrics: () => ({ connections: 7, framesIn: 100, framesOut: 50, handshakeFailures: 2 }),
    },
  });
  const c = await signIn(h);
  const html = await (await c.get("/")).text();
  assert.match(html, /data-island="live_figures"/);
  assert.match(html, /<script type="module" src="\/static\/live_figures.js"/);
  const card = (name: string) =>
    new RegExp(
      `data-figure="${name}"><span class="card-label">[^<]+</span><span class="card-value">([^<]+)<`,
    )
      .exec(html)?.[1];
  assert.equal(card("connections"), "7");
  assert.equal(card("handshakeFailures"), "2");
  assert.equal(card("pendingApprovals"), "1");
  assert.equal(card("relayDepth"), "1");
  assert.equal(card("outboxBacklog"), "1");
  h.close();
});

Deno.test("the dashboard lists who the rate limits refused lately", async () => {
  const h = await harness();
  const c = await signIn(h);
  assert.match(await (await c.get("/")).text(), /No client was refused by a rate limit/);
  const note = (key: string, at: number) =>
    new TextEncoder().encode(JSON.stringify({
      kind: "handshake",
      key,
      count: 12,
      retryAfter: 3,
      node: "node-abc",
      at,
    }));
  await h.storage.ephemeral.appendEvent(LIMITED_STREAM, note("203.0.113.7", Date.now()), 100);
  await h.storage.ephemeral.appendEvent(LIMITED_STREAM, note("old", Date.now() - 3_600_000), 100);
  const html = await (await c.get("/")).text();
  assert.match(html, /Rate limited in the last 10 minutes \(1\)/);
  assert.match(html, /203\.0\.113\.7/);
  assert.doesNotMatch(html, />old</);
  h.close();
});

Deno.test("live figures stream as server-sent events", async () => {
  const h = await harness();
  const c = await signIn(h);
  const res = await c.get("/live/figures");
  assert.equal(res.headers.get("content-type"), "text/event-stream; charset=utf-8");
  const reader = res.body!.getReader();
  let text = "";
  while (!text.includes("event: sample")) {
    const { value, done } = await reader.read();
    if (done) break;
    text += new TextDecoder().decode(value);
  }
  await reader.cancel();
  assert.match(text, /event: sample\ndata: \{"at":\d+/);
  h.close();
});

Deno.test("static files are served and unknown ones are not", async () => {
  const h = await harness();
  const css = await h.fetch("/static/console.css");
  assert.equal(css.status, 200);
  assert.match(css.headers.get("content-type")!, /^text\/css/);
  await css.body?.cancel();
  const js = await h.fetch("/static/live_figures.js");
  assert.equal(js.status, 200);
  await js.body?.cancel();
  const missing = await h.fetch("/static/..%2Fserver.ts");
  assert.notEqual(missing.status, 200);
  await missing.body?.cancel();
  h.close();
});

Deno.test("signing out ends the session and is audited", async () => {
  const h = await harness();
  const c = await signIn(h);
  const res = await c.post("/sign-out", {});
  assert.equal(res.status, 303);
  assert.equal(res.headers.get("location"), "/sign-in");
  const after = await c.get("/devices");
  assert.equal(after.status, 303);
  const actions = (await h.storage.audit.list({})).items.map((a) => a.action);
  assert.deepEqual(actions.slice(0, 2), ["session.sign-out", "session.sign-in"]);
  h.close();
});

Deno.test("a device page lists the groups it belongs to through its user", async () => {
  const h = await harness();
  const c = await signIn(h);
  const device = (await h.storage.devices.get("dev-a1"))!;
  const user = (await h.storage.users.get(device.userId))!;
  await h.storage.groups.addMember("grp-team", `@${user.id}`, "admin", "test");
  const page = await (await c.get("/devices/dev-a1")).text();
  assert.match(
    page,
    new RegExp(`grp-team</a> <span[^>]*>admin</span> through its user ${user.handle}`),
  );
  h.close();
});
