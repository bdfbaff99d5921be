/**
 * The web chat's part of `deno task screenshots`: a relay on the given storage, two devices in
 * one headless browser (two tabs), a short conversation, and a PNG of each view.
 *
 * @module
 */
import type { Browser, Page } from "playwright-core";
import { loadConfig } from "../server/config/mod.ts";
import { startServer } from "../server/server.ts";
import type { Storage } from "../storage/types.ts";

/** Writes the web chat's screenshots into `outDir`, numbered from `first`; returns the paths. */
export async function shootWebChat(
  browser: Browser,
  storage: Storage,
  outDir: string,
  first: number,
): Promise<string[]> {
  const dataDir = await Deno.makeTempDir({ prefix: "commucat-web-screenshots-" });
  const config = await loadConfig({
    env: {
      COMMUCAT_DATA_DIR: dataDir,
      COMMUCAT_BIND: "127.0.0.1:0",
      COMMUCAT_TCP_BIND: "127.0.0.1:0",
      COMMUCAT_DOMAIN: "chat.commucat.example",
    },
    file: null,
    cwd: dataDir,
  });
  const server = await startServer(config, { storage });
  const paths: string[] = [];
  const context = await browser.newContext({ viewport: { width: 1366, height: 860 } });
  try {
    const base = `http://127.0.0.1:${server.ports.http}/chat/`;
    const shoot = async (page: Page, name: string) => {
      const file = `${outDir}/${String(first + paths.length + 1).padStart(2, "0")}-${name}.png`;
      await page.screenshot({ path: file, fullPage: true });
      paths.push(file);
      console.log(file);
    };
    const device = async (page: Page, name: string) => {
      await page.goto(base);
      await page.fill("input[name=device-name]", name);
      await page.click("text=Create");
      await page.waitForSelector("[data-testid=connection]:has-text('online')");
      return (await page.textContent("[data-testid=device-id]"))!.trim();
    };
    const say = async (page: Page, text: string) => {
      await page.fill("input[name=message]", text);
      await page.press("input[name=message]", "Enter");
    };
    const alice = await context.newPage();
    await alice.goto(base);
    await alice.waitForSelector("input[name=device-name]");
    await shoot(alice, "web-chat-new-device");
    const aliceId = await device(alice, "Alice laptop");
    const bob = await context.newPage();
    const bobId = await device(bob, "Bob phone");
    await alice.fill("input[name=peers]", bobId);
    await alice.click("text=Start chat");
    await say(alice, "Hi Bob! Are we still on for Thursday?");
    await bob.waitForSelector("li.theirs");
    await say(bob, "Yes — 7 pm at the usual place.");
    await alice.waitForSelector("li.theirs");
    await say(alice, "Great, see you there.");
    await bob.waitForSelector("li.theirs:has-text('see you there')");
    await alice.waitForSelector("[data-status=delivered]");
    await shoot(alice, "web-chat-conversation");
    await bob.close();
    await alice.waitForSelector(`[data-testid="presence-${bobId}"][data-state=offline]`);
    await say(alice, "(sent while Bob's tab was closed)");
    await alice.waitForSelector("[data-status=sent]");
    await shoot(alice, "web-chat-peer-offline");
    const again = await context.newPage();
    await again.goto(base);
    await again.waitForSelector(`[data-testid="use-${bobId}"]`);
    await shoot(again, "web-chat-choose-device");
    void aliceId;
  } finally {
    await context.close();
    await server.stop();
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
  return paths;
}
