/**
 * The web chat in headless Chromium against a real relay in this process: two pages (two
 * devices in one browser) chat through the server over the WebSocket transport (sealed end to
 * end when the server offers the key directory); presence changes show; one page closes, the other sends three messages, the first
 * reopens and shows them in order exactly once, and the sender sees them delivered; a group chat;
 * a message written while the server is down waits in the page and leaves once it is back;
 * the SDK bundle used directly by a page, and the key file round trip; an upgrade
 * from a page of another origin is refused. Reported as ignored when Chromium is missing
 * (tests/helpers/browser.ts), a failure with COMMUCAT_REQUIRE_BROWSER=1.
 */
import assert from "node:assert/strict";
import { bytesToHex } from "@noble/hashes/utils.js";
import type { Page } from "playwright-core";
import { browserTest, launchChromium } from "../helpers/browser.ts";
import {
  LogCapture,
  openTestStorage,
  realServices,
  startServer,
  testConfig,
} from "../server/helpers/server.ts";
import { CHAT_CONTENT_SECURITY_POLICY } from "../../web/mod.ts";

const TIMEOUT = 15_000;

/** Creates a device in a fresh page and waits until it is online; returns its id. */
async function newDevice(page: Page, base: string, name: string): Promise<string> {
  await page.goto(`${base}/chat/`);
  await page.fill("input[name=device-name]", name);
  await page.click("text=Create");
  await page.waitForSelector("[data-testid=connection]:has-text('online')", { timeout: TIMEOUT });
  return (await page.textContent("[data-testid=device-id]"))!.trim();
}

/** The texts of the other side's lines in the open conversation. */
async function theirTexts(page: Page): Promise<string[]> {
  return await page.$$eval("li.theirs [data-testid=text]", (els) => els.map((e) => e.textContent));
}

browserTest("web chat: two pages, presence, offline queue, foreign origin", async (t) => {
  const logs = new LogCapture().start();
  const { storage, close } = await openTestStorage(realServices() ? "real" : "embedded");
  const config = testConfig();
  let server = await startServer(config, { storage });
  const base = `http://127.0.0.1:${server.ports.http}`;
  const foreign = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () =>
      new Response("<!doctype html><title>elsewhere</title>", {
        headers: { "content-type": "text/html" },
      }),
  );
  const browser = await launchChromium();
  const problems: string[] = [];
  try {
    const context = await browser.newContext();
    const watch = (page: Page, name: string) => {
      page.on("pageerror", (err) => problems.push(`${name}: ${err.message}`));
      page.on("console", (m) => {
        // A reconnect attempt while the server is down (the restart step) is expected.
        if (m.type() === "error" && !/^WebSocket connection to .* failed/.test(m.text())) {
          problems.push(`${name} console: ${m.text()}`);
        }
      });
    };
    const alicePage = await context.newPage();
    watch(alicePage, "alice");
    let bobPage = await context.newPage();
    watch(bobPage, "bob");
    let aliceId = "";
    let bobId = "";

    await t.step("the page is server-rendered with the server key and a strict CSP", async () => {
      const response = await fetch(`${base}/chat/`);
      const html = await response.text();
      assert.equal(response.status, 200);
      assert.equal(response.headers.get("content-security-policy"), CHAT_CONTENT_SECURITY_POLICY);
      assert.match(html, /data-island="chat"/);
      const hex = bytesToHex(config.crypto.noisePublic);
      assert.ok(html.includes(hex.slice(0, 4) + " " + hex.slice(4, 8)), "fingerprint shown");
      assert.ok(!/<script>/.test(html), "no inline script");
      const bundle = await fetch(`${base}/chat/static/chat.js`);
      assert.equal(bundle.status, 200);
      await bundle.body?.cancel();
    });

    await t.step("two pages become two devices and chat", async () => {
      aliceId = await newDevice(alicePage, base, "alice");
      bobId = await newDevice(bobPage, base, "bob");
      assert.notEqual(aliceId, bobId);
      assert.match(aliceId, /^alice-[0-9a-f]{8}$/);
      const fingerprint = await alicePage.textContent("[data-testid=device-fingerprint]");
      assert.match(fingerprint!, /^([0-9a-f]{4} ){15}[0-9a-f]{4}$/);

      await alicePage.fill("input[name=peers]", bobId);
      await alicePage.click("text=Start chat");
      await alicePage.fill("input[name=message]", "hello bob");
      await alicePage.press("input[name=message]", "Enter");
      await bobPage.waitForSelector("li.theirs:has-text('hello bob')", { timeout: TIMEOUT });
      // Sealed whenever the server answers the key directory; otherwise the page says so.
      const sealing = (await alicePage.$("[data-testid=seal-note]")) === null;
      assert.equal(await alicePage.isChecked("[data-testid=seal]"), sealing);
      assert.equal((await bobPage.$("li.theirs .sealed")) !== null, sealing);
      await alicePage.waitForSelector("[data-testid=status][data-status=delivered]", {
        timeout: TIMEOUT,
      });
      await bobPage.fill("input[name=message]", "hi alice");
      await bobPage.press("input[name=message]", "Enter");
      await alicePage.waitForSelector("li.theirs:has-text('hi alice')", { timeout: TIMEOUT });
    });

    await t.step(
      "the SDK bundle in a page: docs/CLIENT.md's lines, key file round trip",
      async () => {
        const other = await browser.newContext();
        const page = await other.newPage();
        watch(page, "sdk");
        await page.goto(`${base}/chat/`);
        const serverKey = bytesToHex(config.crypto.noisePublic);
        const carol = await page.evaluate(async ({ serverKey, peer }) => {
          // deno-lint-ignore no-explicit-any
          const sdk: any = await import("/chat/static/commucat.js");
          const me = await (await sdk.BrowserKeystore.open()).create("carol");
          const client = await sdk.connect({
            transport: "ws",
            deviceId: me.deviceId,
            keypair: me.keypair,
            serverKey,
          });
          await client.join(sdk.directChannelId(me.deviceId, peer), [me.deviceId, peer]);
          // A chat envelope (client/chat_envelope.ts), so the web chat knows who wrote it even
          // where the server does not stamp senders.
          const envelope = {
            v: 1,
            kind: "text",
            id: "0123456789abcdef",
            from: me.deviceId,
            sent_at: new Date().toISOString(),
            text: "plain words from the SDK",
          };
          await client.send(sdk.directChannelId(me.deviceId, peer), JSON.stringify(envelope));
          return me.deviceId as string;
        }, { serverKey, peer: aliceId });
        await alicePage.click(`[data-testid="conversation-${carol}"]`, { timeout: TIMEOUT });
        await alicePage.waitForSelector("li.theirs:has-text('plain words from the SDK')", {
          timeout: TIMEOUT,
        });
        // The key file round trip: export, forget, import gives back the same device and key;
        // a file whose public key does not match its private key is refused.
        const roundTrip = await page.evaluate(async (carolId) => {
          // deno-lint-ignore no-explicit-any
          const sdk: any = await import("/chat/static/commucat.js");
          const ks = await sdk.BrowserKeystore.open();
          const before = (await ks.list()).find((d: { deviceId: string }) =>
            d.deviceId === carolId
          );
          const file = await ks.exportKeyFile(carolId);
          await ks.remove(carolId);
          const gone = (await ks.list()).length;
          const back = await ks.importKeyFile(file);
          const bad = JSON.parse(file);
          bad.public_key = "00".repeat(32);
          let refused = "";
          try {
            await ks.importKeyFile(JSON.stringify(bad));
          } catch (err) {
            refused = (err as Error).message;
          }
          return {
            same: back.deviceId === carolId && back.fingerprint === before.fingerprint,
            gone,
            refused,
            hasPrivate: JSON.parse(file).private_key.length,
          };
        }, carol);
        assert.deepEqual(roundTrip, {
          same: true,
          gone: 0,
          refused: "the key file's public_key does not match its private_key",
          hasPrivate: 64,
        });
        await other.close();
        await alicePage.click(`[data-testid="conversation-${bobId}"]`);
      },
    );

    await t.step("presence: alice sees bob online, then offline when his page closes", async () => {
      const bobPresence = `[data-testid="presence-${bobId}"]`;
      await alicePage.waitForSelector(`${bobPresence}[data-state=online]`, { timeout: TIMEOUT });
      await bobPage.close();
      await alicePage.waitForSelector(`${bobPresence}[data-state=offline]`, { timeout: TIMEOUT });
    });

    await t.step("three messages while bob is away arrive in order, exactly once", async () => {
      for (const text of ["one", "two", "three"]) {
        await alicePage.fill("input[name=message]", text);
        await alicePage.press("input[name=message]", "Enter");
      }
      await alicePage.waitForFunction(
        () =>
          [...document.querySelectorAll("li.mine [data-testid=status]")]
            .slice(-3)
            .every((e) => e.getAttribute("data-status") === "sent"),
        undefined,
        { timeout: TIMEOUT },
      );
      bobPage = await context.newPage();
      watch(bobPage, "bob again");
      await bobPage.goto(`${base}/chat/`);
      // alice's device is held by her open tab; bob's is free to use.
      await bobPage.waitForSelector(`[data-testid="use-${bobId}"]`, { timeout: TIMEOUT });
      assert.equal(await bobPage.$(`[data-testid="use-${aliceId}"]`), null);
      await bobPage.click(`[data-testid="use-${bobId}"]`);
      await bobPage.waitForSelector("li.theirs:has-text('three')", { timeout: TIMEOUT });
      await new Promise((r) => setTimeout(r, 500)); // a duplicate would arrive by now
      assert.deepEqual(await theirTexts(bobPage), ["hello bob", "one", "two", "three"]);
      await alicePage.waitForFunction(
        () =>
          [...document.querySelectorAll("li.mine [data-testid=status]")]
            .every((e) => e.getAttribute("data-status") === "delivered"),
        undefined,
        { timeout: TIMEOUT },
      );
      await alicePage.waitForSelector(`[data-testid="presence-${bobId}"][data-state=online]`, {
        timeout: TIMEOUT,
      });
    });

    await t.step("safety numbers match on both sides; verified marks what follows", async () => {
      const sealing = (await alicePage.$("[data-testid=seal-note]")) === null;
      if (!sealing) {
        // Without the key directory there is nothing to compare: the button is not offered.
        assert.equal(await alicePage.$("text=Safety number"), null);
        return;
      }
      await alicePage.click("text=Safety number");
      const aliceSees = await alicePage.textContent("[data-testid=safety-number]");
      await bobPage.click("text=Safety number");
      const bobSees = await bobPage.textContent("[data-testid=safety-number]");
      assert.match(aliceSees!, /^(\d{5} ){11}\d{5}$/);
      assert.equal(aliceSees, bobSees);
      await bobPage.click("text=They match: mark verified");
      await alicePage.click("text=Close");
      await alicePage.fill("input[name=message]", "checked");
      await alicePage.press("input[name=message]", "Enter");
      await bobPage.waitForSelector("li.theirs:has-text('checked') .sealed:has-text('verified')", {
        timeout: TIMEOUT,
      });
    });

    await t.step("a group: created by alice, joined by bob on its first message", async () => {
      await alicePage.fill("input[name=peers]", bobId);
      await alicePage.fill("input[name=group]", "team");
      await alicePage.click("text=Start chat");
      await alicePage.waitForSelector("h2:has-text('# team')", { timeout: TIMEOUT });
      await alicePage.fill("input[name=message]", "hello team");
      await alicePage.press("input[name=message]", "Enter");
      const group = '[data-testid^="conversation-# team-"]';
      await bobPage.click(group, { timeout: TIMEOUT });
      await bobPage.waitForSelector("li.theirs:has-text('hello team')", { timeout: TIMEOUT });
      await bobPage.fill("input[name=message]", "hi all");
      await bobPage.press("input[name=message]", "Enter");
      await alicePage.waitForSelector("li.theirs:has-text('hi all')", { timeout: TIMEOUT });
      await alicePage.waitForSelector(
        "li.mine:has-text('hello team') [data-status=delivered]",
        {
          timeout: TIMEOUT,
        },
      );
    });

    await t.step("written while the server is down: queued, sent once it is back", async () => {
      await alicePage.click(`[data-testid="conversation-${bobId}"]`);
      await bobPage.click(`[data-testid="conversation-${aliceId}"]`);
      const port = server.ports.http;
      await server.stop();
      await alicePage.waitForSelector("[data-testid=connection]:not(:has-text('online'))", {
        timeout: TIMEOUT,
      });
      await alicePage.fill("input[name=message]", "written offline");
      await alicePage.press("input[name=message]", "Enter");
      await alicePage.waitForSelector(
        "li.mine:has-text('written offline') [data-status=queued]",
        { timeout: TIMEOUT },
      );
      // The same server again (same key, same storage, same port): both pages reconnect.
      config.server.bind = { hostname: "127.0.0.1", port };
      server = await startServer(config, { storage });
      await alicePage.waitForSelector("[data-testid=connection]:has-text('online')", {
        timeout: TIMEOUT,
      });
      await bobPage.waitForSelector("li.theirs:has-text('written offline')", { timeout: TIMEOUT });
      await alicePage.waitForSelector(
        "li.mine:has-text('written offline') [data-status=delivered]",
        { timeout: TIMEOUT },
      );
    });

    await t.step("a page of another origin cannot open /connect", async () => {
      const evil = await context.newPage();
      await evil.goto(`http://127.0.0.1:${foreign.addr.port}/`);
      const outcome = await evil.evaluate((url) =>
        new Promise<string>((resolve) => {
          const ws = new WebSocket(url);
          ws.onopen = () => resolve("open");
          ws.onclose = (e) => resolve(`closed ${e.code}`);
        }), `ws://127.0.0.1:${server.ports.http}/connect`);
      assert.equal(outcome, "closed 1006");
      const metrics = await server.metrics.exposition();
      assert.match(metrics, /commucat_websocket_upgrades_total\{result="origin",[^}]*\} 1/);
      await evil.close();
    });

    await t.step("no page errors", () => {
      assert.deepEqual(problems, []);
    });
  } finally {
    await browser.close();
    await foreign.shutdown();
    await server.stop();
    await close();
    logs.stop();
  }
}, { sanitizeOps: false, sanitizeResources: false });
