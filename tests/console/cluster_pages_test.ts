/**
 * The console's cluster parts over fake storage: the approvals count in the navigation, the
 * nodes table and approvals callout on the dashboard, peers' backoff with "Retry now" (CSRF,
 * audited), dead letters with replay, the device delivery view and the favicon.
 */
import assert from "node:assert/strict";
import { harness, signIn } from "./helpers.ts";

Deno.test("navigation counts approvals; the dashboard calls them out and lists nodes", async () => {
  const h = await harness();
  await h.storage.ephemeral.setNodeHeartbeat({
    nodeId: "node-a",
    address: "tcp://10.0.0.5:9443",
    version: "commucat 0.9.0 (deno 2.9.6)",
    startedAt: new Date(h.clock.now - 3 * 3600_000).toISOString(),
    connections: 42,
    framesPerSecond: 1234,
    at: new Date(h.clock.now).toISOString(),
  }, 15);
  const c = await signIn(h);
  const pending = await h.storage.devices.countAwaitingApproval();
  assert.ok(pending > 0);
  const html = await (await c.get("/")).text();
  assert.match(html, new RegExp(`<span class="nav-badge"[^>]*>${pending}</span>`));
  assert.match(html, /class="callout approvals"/);
  assert.match(html, /wait for approval|waits for approval/);
  assert.match(html, /data-node="node-a"/);
  assert.match(html, /tcp:\/\/10\.0\.0\.5:9443/);
  assert.match(html, /3 h 0 min/);
  assert.match(html, /1,234/);
  assert.match(html, /Online devices/);
  h.close();
});

Deno.test("peers: backoff, retry now with CSRF, dead letters with replay", async () => {
  const h = await harness();
  const c = await signIn(h);
  const page = await (await c.get("/peers")).text();
  assert.match(page, /data-peer="peer\.example\.org"/);
  assert.match(page, /1 failed attempt</);
  assert.match(page, /aria-label="Retry peer\.example\.org now"/);
  // Without the CSRF token nothing happens.
  const forged = await c.post("/peers/peer.example.org/retry", {}, { csrf: null });
  assert.equal(forged.status, 403);
  await forged.body?.cancel();
  const res = await c.post("/peers/peer.example.org/retry", {});
  assert.equal(res.status, 303);
  await res.body?.cancel();
  const after = await (await c.get("/peers")).text();
  assert.match(after, /outbox entr(y|ies) of peer\.example\.org (is|are) due now/);
  const audit = await h.storage.audit.list({ action: "peer.retry-now" });
  assert.equal(audit.items[0].target, "peer:peer.example.org");

  const dead = await h.storage.outbox.enqueue({
    eventId: "ev-dead",
    peerDomain: "peer.example.org",
    endpoint: "https://peer.example.org/federation",
    body: { note: "<script>alert(1)</script>" },
  });
  await h.storage.outbox.markDead(dead.id, "refused: bad signature");
  const withDead = await (await c.get("/peers")).text();
  assert.match(withDead, /Dead letters \(1\)/);
  assert.match(withDead, /refused: bad signature/);
  assert.ok(!withDead.includes("<script>alert(1)</script>"), "the event body is escaped");
  const replay = await c.post(`/peers/dead/${dead.id}/replay`, {});
  assert.equal(replay.status, 303);
  await replay.body?.cancel();
  const replayed = await (await c.get("/peers")).text();
  assert.match(replayed, /is pending again, due now/);
  assert.match(replayed, /Dead letters \(0\)/);
  const again = await c.post(`/peers/dead/${dead.id}/replay`, {});
  await again.body?.cancel();
  assert.match(await (await c.get("/peers")).text(), /was not replayed: .*not dead/);
  h.close();
});

Deno.test("device delivery view and the favicon", async () => {
  const h = await harness();
  const c = await signIn(h);
  const detail = await (await c.get("/devices/dev-a1")).text();
  assert.match(detail, /<dd class="delivery">/);
  assert.match(detail, /waiting/);
  const icon = await h.fetch("/favicon.ico");
  assert.equal(icon.status, 200, "no sign-in needed");
  assert.equal(icon.headers.get("content-type"), "image/svg+xml");
  assert.match(await icon.text(), /^<svg /);
  h.close();
});
