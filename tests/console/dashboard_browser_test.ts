/**
 * The dashboard's cluster view and the peers' retry and dead letters in headless Chromium
 * against a real relay in this process: the node appears in the nodes table (from its heartbeat,
 * live over SSE), pending approvals are counted in the navigation and called out, an online
 * device is listed with its delivery view, "Retry now" makes a backed-off outbox entry due and
 * the federation worker retries it, a dead letter is inspected and replayed.
 */
import assert from "node:assert/strict";
import { type Client, connect } from "../../client/sdk.ts";
import { generateKeypair } from "../../protocol/crypto.ts";
import { setLogLevel } from "../../server/log.ts";
import { browserTest, launchChromium } from "../helpers/browser.ts";
import { sdkOptions, startEnvServer, startRelayConsole } from "../helpers/env_server.ts";
import { waitFor } from "../server/helpers/server.ts";

const ADMIN_TOKEN = "dashboard-test-token-" + crypto.randomUUID();

browserTest("dashboard: nodes, approvals, online devices, retry now, dead letters", async (t) => {
  setLogLevel("error");
  const run = crypto.randomUUID().slice(0, 8);
  const relay = await startEnvServer("dashboard-browser", {
    COMMUCAT_AUTO_APPROVE_DEVICES: "false",
    COMMUCAT_ADMIN_TOKEN: ADMIN_TOKEN,
  });
  const { server } = relay;
  const storage = server.storage;
  const consoleServer = await startRelayConsole(relay);
  const clients: Client[] = [];
  let browser: Awaited<ReturnType<typeof launchChromium>> | null = null;
  try {
    const user = await storage.users.create({ handle: `dash-${run}` });
    const waiting = `waiting-${run}`;
    await storage.devices.register(
      { id: waiting, userId: user.id, publicKey: generateKeypair().publicKey, status: "pending" },
      "handshake",
    );
    browser = await launchChromium();
    const page = await browser.newPage();
    const base = consoleServer.url;
    await page.goto(`${base}/sign-in`);
    await page.fill("#f-token", ADMIN_TOKEN);
    await page.click("form.signin button[type=submit]");
    await page.waitForURL(`${base}/`);

    await t.step("pending approvals: a count in the navigation and a callout", async () => {
      await page.goto(`${base}/`);
      const badge = page.locator("nav.main .nav-badge");
      const count = Number(await badge.textContent());
      assert.ok(count >= 1, `badge shows ${count}`);
      assert.equal(count, await storage.devices.countAwaitingApproval());
      const callout = page.locator("section.callout.approvals");
      assert.match(await callout.textContent() ?? "", /wait(s)? for approval/);
      await callout.getByRole("link", { name: "Review them" }).click();
      await page.waitForURL(/\/devices\?awaiting=1$/);
      assert.ok(await page.locator(`text=${waiting}`).count() > 0);
    });

    await t.step("the node is listed from its heartbeat, live", async () => {
      await page.goto(`${base}/`);
      await page.waitForSelector(".live-live");
      const row = page.locator(`table.nodes tr[data-node="${server.nodeId}"]`);
      await row.waitFor();
      const text = await row.textContent() ?? "";
      assert.match(text, new RegExp(`tcp://127\\.0\\.0\\.1:${server.ports.tcp}`));
      assert.match(text, /commucat \d+\.\d+\.\d+ \(deno 2\./);
      assert.match(text, /\d+ s|\d+ min/);
    });

    await t.step("an online device is listed, with its delivery view", async () => {
      const id = `online-${run}`;
      const keypair = generateKeypair();
      await storage.devices.register(
        { id, userId: user.id, publicKey: keypair.publicKey, status: "active" },
        "test",
      );
      clients.push(
        await connect(
          sdkOptions(relay, id, keypair, { user: { id: user.id }, handshakeTimeoutMs: 5_000 }),
        ),
      );
      await page.goto(`${base}/`);
      const online = page.locator("section.online");
      assert.ok(await online.locator(`a:has-text("${id}")`).count() > 0, "listed as online");
      await online.locator(`a:has-text("${id}")`).click();
      const delivery = await page.textContent("dd.delivery") ?? "";
      assert.match(delivery, /0 waiting/);
      assert.match(delivery, /0 in flight/);
      assert.match(delivery, /0 redelivered/);
    });

    const domain = `slow-${run}.example.org`;
    await storage.peers.upsert({
      domain,
      endpoint: "http://127.0.0.1:1/federation",
      publicKey: new Uint8Array(32).fill(5),
      status: "active",
    }, "test");

    await t.step("retry now: a backed-off entry becomes due and is retried", async () => {
      const entry = await storage.outbox.enqueue({
        eventId: `ev-${run}`,
        peerDomain: domain,
        endpoint: "http://127.0.0.1:1/federation",
        body: { test: true },
      });
      // Ten failures: the next attempt is 17 minutes away.
      await waitFor(async () => {
        const e = await storage.outbox.get(entry.id);
        if (e!.attempts < 10) await storage.outbox.markFailed(entry.id, "connection refused");
        return (await storage.outbox.get(entry.id))!.attempts >= 10;
      }, 10_000);
      const before = (await storage.outbox.get(entry.id))!;
      assert.ok(before.nextAttemptAt.getTime() > Date.now() + 60_000);
      await page.goto(`${base}/peers`);
      const backoff = page.locator(`.backoff[data-peer="${domain}"]`);
      assert.match(await backoff.textContent() ?? "", /10 failed attempts.*next retry in/s);
      await page.getByRole("button", { name: `Retry ${domain} now` }).click();
      await page.waitForSelector(".flash.ok");
      assert.match(await page.textContent(".flash.ok") ?? "", /1 outbox entry of .* is due now/);
      // The federation worker picks it up at once and fails again against the closed port.
      await waitFor(
        async () => (await storage.outbox.get(entry.id))!.attempts > before.attempts,
        20_000,
      );
      const audit = await storage.audit.list({
        action: "peer.retry-now",
        target: `peer:${domain}`,
      });
      assert.equal(audit.items.length, 1);
      assert.match(audit.items[0].actor, /^console:/);
    });

    await t.step("dead letters: inspect the signed event, replay it", async () => {
      const dead = await storage.outbox.enqueue({
        eventId: `dead-${run}`,
        peerDomain: domain,
        endpoint: "http://127.0.0.1:1/federation",
        body: { kind: "dead-letter", run }, // not a signed event: the worker refuses it
      });
      await storage.outbox.markDead(dead.id, "peer refused the event");
      await page.goto(`${base}/peers`);
      const row = page.locator("section.dead-letters tr", { hasText: `dead-${run}` });
      assert.match(await row.textContent() ?? "", /peer refused the event/);
      await row.locator("summary").click();
      assert.match(await row.locator("pre.event-body").innerText(), /"kind": "dead-letter"/);
      await row.getByRole("button", { name: `Replay outbox entry ${dead.id}` }).click();
      await page.waitForSelector(".flash.ok");
      assert.match(await page.textContent(".flash.ok") ?? "", /is pending again/);
      const audit = await storage.audit.list({ action: "outbox.replay", target: `peer:${domain}` });
      assert.equal(audit.items.length, 1);
      // The worker sent it again at once; this body is no event, so it died again at once.
      await waitFor(
        async () =>
          (await storage.outbox.get(dead.id))!.lastError?.startsWith(
            "outbox entry is not a valid event",
          ) ?? false,
        20_000,
      );
      assert.equal((await storage.outbox.get(dead.id))!.attempts, 1, "attempts were reset");
      await page.goto(`${base}/peers`);
      const again = await page.locator("section.dead-letters tr", { hasText: `dead-${run}` })
        .textContent() ?? "";
      assert.match(again, /outbox entry is not a valid event/, "listed again with the new error");
    });
  } finally {
    await browser?.close();
    for (const c of clients) await c.close().catch(() => {});
    await consoleServer.stop();
    await relay.stop();
  }
});
