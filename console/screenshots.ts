/**
 * `deno task screenshots`: seeds realistic data into a fresh embedded database in a temporary
 * directory, serves the console, and writes a PNG of every page into ./screenshots/ (printing
 * each path) using the system's headless Chromium; then the web chat's views (web/screenshots.ts).
 *
 * @module
 */
import { randomBytes } from "node:crypto";
import { loadConfig } from "../server/config/mod.ts";
import { openStorage } from "../storage/mod.ts";
import { startConsole } from "./server.ts";
import { seedDemo } from "./demo_data.ts";
import { launchChromium } from "./chromium.ts";
import { shootWebChat } from "../web/screenshots.ts";
import type { ConsoleFigures } from "./figures.ts";

/** A relay that looks busy: figures that drift like real traffic. */
function simulatedFigures(): () => ConsoleFigures {
  let framesIn = 0;
  let framesOut = 0;
  let failures = 3;
  let t = 0;
  return () => {
    t++;
    framesIn += 800 + Math.round(400 * Math.sin(t / 5) + 200 * Math.random());
    framesOut += 900 + Math.round(450 * Math.sin(t / 5) + 200 * Math.random());
    if (Math.random() < 0.05) failures++;
    return {
      connections: 42 + Math.round(6 * Math.sin(t / 7)),
      framesIn,
      framesOut,
      handshakeFailures: failures,
    };
  };
}

/** Writes every page's screenshot into `outDir`; returns the file paths. */
export async function takeScreenshots(outDir = "screenshots"): Promise<string[]> {
  await Deno.mkdir(outDir, { recursive: true });
  const dataDir = await Deno.makeTempDir({ prefix: "commucat-screenshots-" });
  const token = randomBytes(18).toString("base64url");
  const config = await loadConfig({
    env: {
      COMMUCAT_DATA_DIR: dataDir,
      COMMUCAT_CONSOLE_BIND: "127.0.0.1:0",
      COMMUCAT_ADMIN_TOKEN: token,
      COMMUCAT_DOMAIN: "chat.commucat.example",
    },
    file: null,
    cwd: dataDir,
  });
  config.federation.peers.push({
    domain: "hub.commucat.example",
    endpoint: "https://hub.commucat.example/federation",
    publicKey: new Uint8Array(randomBytes(32)),
  });
  const storage = await openStorage({
    postgresDsn: null,
    redisUrl: null,
    dataDir,
    staticPeers: config.federation.peers,
  });
  const paths: string[] = [];
  let running: Awaited<ReturnType<typeof startConsole>> | null = null;
  let browser: Awaited<ReturnType<typeof launchChromium>> | null = null;
  try {
    const ids = await seedDemo(storage, "node-7f3a");
    running = await startConsole({
      config,
      storage,
      nodeId: "node-7f3a",
      metrics: simulatedFigures(),
      sampleIntervalMs: 250,
    });
    browser = await launchChromium();
    const page = await browser.newPage({ viewport: { width: 1366, height: 860 } });
    const base = running.url;
    const shoot = async (name: string, path: string | null) => {
      if (path !== null) await page.goto(base + path);
      const file = `${outDir}/${String(paths.length + 1).padStart(2, "0")}-${name}.png`;
      await page.screenshot({ path: file, fullPage: true });
      paths.push(file);
      console.log(file);
    };
    await page.goto(`${base}/sign-in`);
    await shoot("sign-in", null);
    await page.fill("#f-token", token);
    await page.click("button[type=submit]");
    await page.waitForSelector(".live-live");
    await page.waitForTimeout(8_000); // let the chart fill with live samples
    await shoot("dashboard", null);
    const device = encodeURIComponent(ids.activeDevice);
    const pages: [string, string][] = [
      ["devices", "/devices"],
      ["devices-filtered", "/devices?status=active&user=alice"],
      ["device-detail", `/devices/${device}`],
      ["device-paired", `/devices/${encodeURIComponent(ids.pairedDevice)}`],
      ["audit-pairings", "/audit?action=device.pair"],
      ["audit-unlinks", "/audit?action=device.unlink"],
      ["device-approve-confirm", `/devices/${encodeURIComponent(ids.pendingDevice)}/approve`],
      ["device-revoke-confirm", `/devices/${device}/revoke`],
      ["users", "/users"],
      [
        "user-detail",
        "/users/" + encodeURIComponent((await storage.users.getByHandle("alice"))!.id),
      ],
      ["groups", "/groups"],
      ["group-detail", `/groups/${ids.group}`],
      ["group-remove-confirm", `/groups/${ids.group}/members/${ids.member}/remove`],
      ["peers", "/peers"],
      ["peer-block-confirm", `/peers/${ids.dbPeer}/status?to=blocked`],
      ["key-events", "/key-events"],
      ["audit-log", "/audit"],
      ["not-found", "/devices/no-such-device"],
      ["bad-filter", "/key-events?from=last+tuesday"],
    ];
    for (const [name, path] of pages) await shoot(name, path);
    // A dead letter opened for inspection, then "Retry now" on a backed-off peer.
    await page.goto(`${base}/peers`);
    await page.locator("section.dead-letters summary").first().click();
    await shoot("peers-dead-letter-inspect", null);
    await page.getByRole("button", { name: `Retry ${ids.dbPeer} now` }).click();
    await page.waitForSelector(".flash.ok");
    await shoot("peers-after-retry-now", null);
    // An action, then the audit log that records it.
    await page.goto(`${base}/devices/${encodeURIComponent(ids.pendingDevice)}/approve`);
    await page.click("form.confirm button[type=submit]");
    await shoot("after-approve", null);
    await shoot("audit-after-approve", "/audit");
    paths.push(...await shootWebChat(browser, storage, outDir, paths.length));
  } finally {
    await browser?.close();
    await running?.stop();
    await storage.close();
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
  return paths;
}

if (import.meta.main) {
  try {
    const paths = await takeScreenshots();
    console.log(`${paths.length} screenshots written`);
  } catch (err) {
    console.error(`screenshots failed: ${(err as Error).message}`);
    Deno.exit(1);
  }
}
