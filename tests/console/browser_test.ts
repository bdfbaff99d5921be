/**
 * The console in real headless Chromium (Debian's /usr/bin/chromium driven by playwright-core)
 * against a real relay server in this process: sign in, approve a pending device and watch it
 * complete its handshake, revoke a connected device and see it disconnected, block a federation
 * peer, remove a group member, export key events. Uses Postgres/Redis from
 * COMMUCAT_TEST_PG_DSN / COMMUCAT_TEST_REDIS_URL when set, else the embedded defaults.
 * Without Chromium it is reported as ignored with the reason (tests/helpers/browser.ts); with
 * COMMUCAT_REQUIRE_BROWSER=1 (.ci/run) a missing Chromium fails it.
 */
import assert from "node:assert/strict";
import { type Client, connect, type ConnectOptions } from "../../client/sdk.ts";
import { CommuCatError } from "../../client/errors.ts";
import { generateKeypair } from "../../protocol/crypto.ts";
import { setLogLevel } from "../../server/log.ts";
import { browserTest, launchChromium } from "../helpers/browser.ts";
import { sdkOptions, startEnvServer, startRelayConsole } from "../helpers/env_server.ts";

const ADMIN_TOKEN = "browser-test-token-" + crypto.randomUUID();

browserTest("console in headless Chromium against a real relay", async (t) => {
  setLogLevel("error");
  const run = crypto.randomUUID().slice(0, 8);
  const relay = await startEnvServer("console-browser", {
    COMMUCAT_AUTO_APPROVE_DEVICES: "false",
    COMMUCAT_ADMIN_TOKEN: ADMIN_TOKEN,
  });
  const { server } = relay;
  const storage = server.storage;
  const consoleServer = await startRelayConsole(relay);
  const clients: Client[] = [];
  let browser: Awaited<ReturnType<typeof launchChromium>> | null = null;
  try {
    browser = await launchChromium();
    const context = await browser.newContext({ acceptDownloads: true });
    const page = await context.newPage();
    const base = consoleServer.url;
    const device = (name: string) => ({ id: `${name}-${run}`, keypair: generateKeypair() });
    const open = async (d: ReturnType<typeof device>, extra: Partial<ConnectOptions> = {}) => {
      const client = await connect(sdkOptions(relay, d.id, d.keypair, {
        user: { handle: `user-${run}` },
        handshakeTimeoutMs: 5_000,
        ...extra,
      }));
      clients.push(client);
      return client;
    };
    const phone = device("phone");
    const laptop = device("laptop");

    await t.step("sign in", async () => {
      await page.goto(`${base}/devices`);
      assert.match(page.url(), /\/sign-in\?next=%2Fdevices$/);
      await page.fill("#f-token", "not-the-token");
      await page.click("form.signin button[type=submit]");
      assert.match(await page.textContent("#f-token-note") ?? "", /That token is not right/);
      await page.fill("#f-token", ADMIN_TOKEN);
      await page.click("form.signin button[type=submit]");
      await page.waitForURL(`${base}/devices`);
      assert.equal(await page.textContent("h1"), "Devices");
      // The dashboard island hydrates and receives live figures over server-sent events.
      await page.goto(base + "/");
      await page.waitForSelector(".live-live");
      assert.equal(await page.textContent("[data-figure=connections] .card-value"), "0");
    });

    await t.step("approve a pending device, then it completes its handshake", async () => {
      for (const d of [phone, laptop]) {
        await assert.rejects(() => open(d), (err: Error) => {
          assert.ok(err instanceof CommuCatError, String(err));
          assert.equal(err.status, 403);
          assert.match(err.message, /waits for operator approval/);
          return true;
        });
      }
      await page.goto(`${base}/devices`);
      const queue = page.locator("section.queue");
      assert.ok(await queue.locator(`text=${phone.id}`).count() > 0, "pending device in queue");
      await queue.getByRole("link", { name: `Approve device ${phone.id}` }).click();
      assert.equal(await page.textContent("h1"), "Approve device");
      await page.click("form.confirm button[type=submit]");
      await page.waitForSelector(".flash.ok");
      assert.match(
        await page.textContent(".flash.ok") ?? "",
        new RegExp(`${phone.id} is now active`),
      );
      const client = await open(phone);
      assert.ok(client.connected, "the approved device completed its handshake");
      await page.goto(`${base}/devices/${phone.id}`);
      assert.match(await page.textContent("ol.timeline") ?? "", /approved/);
      await page.goto(`${base}/devices/${laptop.id}/approve`);
      await page.click("form.confirm button[type=submit]");
      await page.waitForSelector(".flash.ok");
      await open(laptop);
    });

    await t.step("revoke a connected device and see it disconnected", async () => {
      const client = clients.find((c) => c.deviceId === laptop.id)!;
      const closed = new Promise<CommuCatError | null>((resolve) => client.on("closed", resolve));
      await page.goto(`${base}/devices/${laptop.id}`);
      assert.match(await page.textContent("dl.facts") ?? "", /online on node/);
      await page.getByRole("link", { name: `Revoke device ${laptop.id}` }).click();
      await page.click("form.confirm button[type=submit]");
      await page.waitForSelector(".flash.ok");
      const reason = await closed;
      assert.ok(reason, "closed by the server");
      assert.match(reason!.message, /revoked/);
      assert.equal(client.connected, false);
      await page.goto(`${base}/devices/${laptop.id}`);
      assert.match(await page.textContent("dl.facts") ?? "", /revoked/);
      await assert.rejects(() => open(laptop), /revoked/);
    });

    await t.step("block a federation peer", async () => {
      const domain = `peer-${run}.example.org`;
      await storage.peers.upsert({
        domain,
        endpoint: `https://${domain}/federation`,
        publicKey: new Uint8Array(32).fill(7),
        status: "active",
      }, "test");
      await page.goto(`${base}/peers`);
      await page.getByRole("link", { name: `Block ${domain}` }).click();
      await page.click("form.confirm button[type=submit]");
      await page.waitForSelector(".flash.ok");
      const row = page.locator("tr", { hasText: domain });
      assert.equal(await row.locator(".badge").first().textContent(), "blocked");
      assert.equal((await storage.peers.get(domain))!.status, "blocked");
    });

    await t.step("remove a group member", async () => {
      const groupId = `grp-${run}`;
      const third = device("tablet");
      await storage.devices.register({
        id: third.id,
        userId: (await storage.devices.get(phone.id))!.userId,
        publicKey: third.keypair.publicKey,
        status: "active",
      }, "test");
      await storage.groups.create({ id: groupId, ownerDeviceId: phone.id, relay: true }, "test");
      await storage.groups.addMember(groupId, third.id, "member", "test");
      await page.goto(`${base}/groups/${groupId}`);
      await page.getByRole("link", { name: `Remove ${third.id} from ${groupId}` }).click();
      await page.click("form.confirm button[type=submit]");
      await page.waitForSelector(".flash.ok");
      const roster = await page.textContent("section[aria-labelledby=roster-title]") ?? "";
      assert.ok(!roster.includes(third.id), "gone from the roster");
      const trail = await page.textContent("section[aria-labelledby=trail-title]") ?? "";
      assert.match(trail, /removed/);
      assert.equal(await storage.groups.role(groupId, third.id), null);
    });

    await t.step("export key events", async () => {
      await page.goto(`${base}/key-events?device=${phone.id}`);
      for (const [label, ext] of [["CSV", "csv"], ["JSON", "json"]]) {
        const [download] = await Promise.all([
          page.waitForEvent("download"),
          page.getByRole("link", { name: label, exact: true }).click(),
        ]);
        assert.match(
          download.suggestedFilename(),
          new RegExp(`^key-events-${phone.id}-.*\\.${ext}$`),
        );
        const file = await download.path();
        const text = await Deno.readTextFile(file);
        if (ext === "csv") {
          assert.match(text, /^event_id,device_id,kind,public_key,actor,recorded_at\r\n/);
          assert.match(text, /"pending"/);
          assert.match(text, /"approved"/);
        } else {
          const rows = JSON.parse(text) as { kind: string; device_id: string }[];
          assert.deepEqual(rows.map((r) => r.kind), ["pending", "approved"]);
          assert.ok(rows.every((r) => r.device_id === phone.id));
        }
      }
      // Every action above is in the operator audit log.
      await page.goto(`${base}/audit`);
      const log = await page.textContent("table") ?? "";
      for (
        const action of [
          "device.approve",
          "device.revoke",
          "peer.set-status",
          "group.remove-member",
        ]
      ) {
        assert.ok(log.includes(action), action);
      }
    });
    await context.close();
  } finally {
    await browser?.close();
    for (const c of clients) await c.close().catch(() => {});
    await consoleServer.stop();
    await relay.stop();
  }
});
