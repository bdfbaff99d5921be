/**
 * The chat client's end-to-end encryption, two chat processes through a real in-process server:
 * messages and receipts are sealed and shown with a lock, /verify prints the same safety number
 * on both sides, and after the peer's key changes (an operator rotation) nothing is sealed to
 * the new key — with the louder warning for a verified key — until /trust accepts it. With
 * `--peer @handle`, messages are sealed to every device of the user, a device linked later is
 * announced to the other side, and the sender's other device gets sealed sync copies.
 */
import assert from "node:assert/strict";
import { LineWatcher, spawnChat } from "../helpers/lines.ts";
import { join } from "node:path";
import { generateKeypair } from "../../protocol/crypto.ts";
import { bytesToHex } from "../../protocol/hex.ts";
import { setLogLevel } from "../../server/log.ts";
import {
  openTestStorage,
  startServer,
  storageKinds,
  testConfig,
  uid,
} from "../server/helpers/server.ts";

const encoder = new TextEncoder();
const WAIT_MS = 30_000;

interface Chat {
  out: LineWatcher;
  err: LineWatcher;
  say(line: string): Promise<void>;
  quit(): Promise<number>;
}

const kind = storageKinds().at(-1)!;

Deno.test({
  name:
    `chat client: sealed by default, safety numbers, a changed key blocked until /trust (${kind})`,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    setLogLevel("error");
    const { storage, close } = await openTestStorage(kind);
    const config = testConfig();
    const server = await startServer(config, { storage });
    const home = await Deno.makeTempDir({ prefix: "commucat-chat-e2e-" });
    const alice = uid("ce-alice"), bob = uid("ce-bob");
    const running: Chat[] = [];
    const spawn = (me: string, peer: string, extra: string[] = []): Chat => {
      const p = spawnChat(
        { tcpPort: server.ports.tcp, serverKey: bytesToHex(config.crypto.noisePublic) },
        me,
        peer,
        home,
        extra,
      );
      const w = p.stdin.getWriter();
      const chat: Chat = {
        out: new LineWatcher(p.stdout, WAIT_MS),
        err: new LineWatcher(p.stderr, WAIT_MS),
        say: (line) => w.write(encoder.encode(line + "\n")),
        async quit() {
          await w.close().catch(() => {});
          const status = await p.status;
          await Promise.all([chat.out.done, chat.err.done]);
          running.splice(running.indexOf(chat), 1);
          return status.code;
        },
      };
      running.push(chat);
      return chat;
    };
    try {
      const a = spawn(alice, bob);
      const b = spawn(bob, alice);
      await a.out.waitFor(/🔒 end-to-end encrypted/, a.err);
      await b.out.waitFor(/🔒 end-to-end encrypted/, b.err);
      await a.out.waitFor(new RegExp(`${bob} is online`), a.err);

      // The same safety number on both screens.
      await a.say(`/verify ${bob}`);
      await b.say(`/verify ${alice}`);
      const digits = async (c: Chat) => {
        const [, i] = await c.out.waitFor(/safety number with/, c.err);
        await c.out.waitFor(/when they match exactly/, c.err);
        return c.out.lines.slice(i + 1, i + 3).map((l) => l.trim()).join(" ");
      };
      const na = await digits(a), nb = await digits(b);
      assert.match(na, /^\d{5}( \d{5}){11}$/);
      assert.equal(na, nb);
      await a.say(`/verify ${bob} confirm`);
      await a.out.waitFor(/key is verified/, a.err);

      // Sealed both ways, receipts included.
      await a.say("hello sealed");
      await b.out.waitFor(new RegExp(`🔒 ${alice}: hello sealed`), b.err);
      await a.out.waitFor(new RegExp(`✓✓ .*delivered to ${bob}`), a.err);
      await b.say("hi back");
      await a.out.waitFor(new RegExp(`🔒✔ ${bob}: hi back`), a.err);
      assert.equal(await b.quit(), 0);

      // An operator rotates bob's key; bob comes back with the new key file.
      const fresh = generateKeypair();
      await storage.devices.rotateKey(bob, fresh.publicKey, "test");
      const keyFile = join(home, `${bob}.json`);
      const old = JSON.parse(await Deno.readTextFile(keyFile));
      await Deno.writeTextFile(
        keyFile,
        JSON.stringify({
          ...old,
          private_key: bytesToHex(fresh.privateKey),
          public_key: bytesToHex(fresh.publicKey),
        }),
      );
      const b2 = spawn(bob, alice);
      await b2.out.waitFor(/chatting with/, b2.err);
      await a.say("to the new key?");
      await a.err.waitFor(new RegExp(`WARNING: the VERIFIED key of ${bob} CHANGED`), a.out);
      await a.err.waitFor(/not sent: .*changed/, a.out);
      await a.say(`/trust ${bob}`);
      await a.out.waitFor(new RegExp(`now trusting the new key of ${bob}`), a.err);
      await a.say("after trust");
      await b2.out.waitFor(new RegExp(`🔒 ${alice}: after trust`), b2.err);
      assert.ok(
        !b2.out.lines.some((l) => l.includes("to the new key?")),
        "nothing was sealed to the new key before /trust",
      );
      assert.equal(await b2.quit(), 0);
      assert.equal(await a.quit(), 0);

      // A user as the peer (--peer @handle), sealed: alice's phone links her laptop; bob is told
      // of the new device, and what he sends reaches both, what the phone sends reaches bob and,
      // as a sync copy, the laptop.
      const phone = uid("ce-phone"), laptop = uid("ce-laptop"), desk = uid("ce-desk");
      const aliceUser = uid("ce-alice-user"), bobUser = uid("ce-bob-user");
      // A user exists once its first device connected: bob's desk registers first.
      const d0 = spawn(desk, `@${bobUser}`, ["--handle", bobUser]);
      await d0.out.waitFor(/🔒 end-to-end encrypted/, d0.err);
      assert.equal(await d0.quit(), 0);
      const p1 = spawn(phone, `@${bobUser}`, ["--handle", aliceUser]);
      await p1.out.waitFor(/🔒 end-to-end encrypted/, p1.err);
      const d1 = spawn(desk, `@${aliceUser}`, ["--handle", bobUser]);
      await d1.out.waitFor(/🔒 end-to-end encrypted/, d1.err);
      await d1.say("before the laptop");
      await p1.out.waitFor(new RegExp(`🔒 ${desk}: before the laptop`), p1.err);
      await p1.say("/link");
      const [linkLine] = await p1.out.waitFor(/pairing code /, p1.err);
      const code = /pairing code (\S+)/.exec(linkLine)![1];
      const l1 = spawn(laptop, `@${bobUser}`, ["--handle", aliceUser, "--pair", code]);
      await l1.out.waitFor(/🔒 end-to-end encrypted/, l1.err);
      await d1.say("to both of alice's devices");
      await d1.err.waitFor(
        new RegExp(`🔑 user @${aliceUser} has a new device ${laptop} \\(paired by ${phone}\\)`),
        d1.out,
      );
      await p1.out.waitFor(new RegExp(`🔒 ${desk}: to both of alice's devices`), p1.err);
      await l1.out.waitFor(new RegExp(`🔒 ${desk}: to both of alice's devices`), l1.err);
      await p1.say("from the phone");
      await d1.out.waitFor(new RegExp(`🔒 ${phone}: from the phone`), d1.err);
      await l1.out.waitFor(new RegExp(`🔒 ${phone}: from the phone`), l1.err);
      for (const c of [l1, p1, d1]) assert.equal(await c.quit(), 0);
    } finally {
      for (const c of [...running]) await c.quit().catch(() => {});
      await server.stop();
      await close();
      await Deno.remove(home, { recursive: true }).catch(() => {});
      setLogLevel("info");
    }
  },
});
