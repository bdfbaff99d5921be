/**
 * Several devices of one user (docs/PROTOCOL.md "Several devices of one user"): pairing codes,
 * the bounds on guessing them, device limits, listing and unlinking — over real handshakes, on
 * the embedded defaults always and on Postgres + Redis when the environment names them.
 */
import assert from "node:assert/strict";
import { harnessOver, signIn } from "../console/helpers.ts";
import type { Storage } from "../../storage/types.ts";
import { Redis } from "ioredis";
import { type Frame, FrameType } from "../../protocol/frame.ts";
import { bytesToHex } from "../../protocol/hex.ts";
import { normalizePairingCode } from "../../protocol/pairing.ts";
import { MAX_PAIRING_ATTEMPTS } from "../../storage/mod.ts";
import {
  clientOptions,
  connector,
  deviceKeypair,
  HandshakeRefused,
  TestClient,
} from "../server/helpers/client.ts";
import {
  openTestStorage,
  realServices,
  type ServerHandle,
  startServer,
  storageKinds,
  testConfig,
  uid,
  waitFor,
} from "../server/helpers/server.ts";

/** Empties a shared rate bucket left by an earlier run on the same Redis. */
async function forgetBucket(name: string): Promise<void> {
  const url = realServices()?.redis;
  if (url === undefined) return;
  const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  r.on("error", () => {});
  await r.connect();
  await r.del(`rate:${name}`);
  await r.quit();
}

/** The console over this storage, signed in: GET a page's HTML. */
async function consolePages(storage: Storage): Promise<(path: string) => Promise<string>> {
  const client = await signIn(harnessOver(storage));
  return async (path) => {
    const res = await client.get(path);
    assert.equal(res.status, 200, path);
    return await res.text();
  };
}

const json = (f: Frame) => f.json as Record<string, unknown>;

/** Sends a server request and returns its ACK or ERROR. */
function request(c: TestClient, fields: Record<string, unknown>): Promise<Frame> {
  return c.reply(
    c.opaque(FrameType.KeyUpdate, 0, new TextEncoder().encode(JSON.stringify(fields))),
  );
}

/** The title a refused handshake carried (fails when it was accepted). */
async function refusedWith(connecting: Promise<TestClient>): Promise<string> {
  try {
    const c = await connecting;
    await c.close();
  } catch (err) {
    assert.ok(err instanceof HandshakeRefused, String(err));
    return String(err.problem.title);
  }
  assert.fail("the handshake was accepted");
}

for (const kind of storageKinds()) {
  const label = kind === "real" ? "Postgres + Redis" : "PGlite + memory";

  Deno.test({
    name: `pairing, device limits and unlinking (${label})`,
    sanitizeResources: true,
    sanitizeOps: true,
  }, async (t) => {
    const { storage, close } = await openTestStorage(kind);
    const config = testConfig({ limits: { maxDevicesPerUser: 4 } });
    const server: ServerHandle = await startServer(config, { storage });
    const clients: TestClient[] = [];
    const connect = connector(server, config, clients);
    const handle = uid("alice");
    const asAlice = (code: string) => ({ user: { handle }, hello: { pairing_code: code } });
    const newCode = async (c: TestClient) => {
      const answer = await request(c, { op: "pair_code" });
      assert.equal(answer.type, FrameType.Ack, JSON.stringify(answer.json));
      return String(json(answer).code);
    };
    try {
      const first = uid("alice-phone");
      const phone = await connect(first, { user: { handle } });
      const userId = String(phone.user.id);

      await t.step("a code: 8 characters of the unambiguous alphabet, 5 minutes", async () => {
        const answer = await request(phone, { op: "pair_code" });
        const a = json(answer);
        assert.equal(a.op, "pair_code");
        assert.match(String(a.code), /^[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}$/);
        assert.equal(a.expires_in, 300);
        assert.equal(a.max_attempts, MAX_PAIRING_ATTEMPTS);
        const expires = Date.parse(String(a.expires_at)) - Date.now();
        assert.ok(expires > 290_000 && expires <= 300_000, `expires in ${expires} ms`);
      });

      const laptopId = uid("alice-laptop");
      await t.step("a wrong code: refused, nothing registered, the attempt counted", async () => {
        const code = await newCode(phone);
        const wrong = code[0] === "A" ? "B" + code.slice(1) : "A" + code.slice(1);
        assert.equal(await refusedWith(connect(laptopId, asAlice(wrong))), "Pairing Code Invalid");
        assert.equal(await storage.devices.get(laptopId), null);
        const open = (await storage.pairing.list({ userId })).filter((c) => c.state === "open");
        assert.ok(open.length >= 1 && open.every((c) => c.attempts === 1), JSON.stringify(open));
        assert.equal(
          await refusedWith(connect(laptopId, asAlice("not a code"))),
          "Pairing Code Invalid",
        );
      });

      let laptop!: TestClient;
      await t.step(
        "the right code: the new device is active at once, paired by the phone",
        async () => {
          const code = await newCode(phone);
          laptop = await connect(laptopId, asAlice(code.toLowerCase().replace("-", " ")));
          assert.equal(laptop.user.id, userId);
          const device = await storage.devices.get(laptopId);
          assert.equal(device?.status, "active");
          assert.deepEqual(device?.publicKey, deviceKeypair(laptopId).publicKey);
          assert.equal(await storage.pairing.pairedBy(laptopId), first);
          const events = await storage.keyEvents.export(laptopId);
          assert.deepEqual(events.map((e) => [e.kind, e.actor]), [[
            "registered",
            `pairing:${first}`,
          ]]);
          const audit = await storage.audit.list({ target: `device:${laptopId}` });
          assert.deepEqual(audit.items.map((e) => [e.actor, e.action]), [
            [`device:${first}`, "device.pair"],
          ]);
          const used = (await storage.pairing.list({ usedBy: laptopId }))[0];
          assert.equal(used.state, "used");
          assert.equal(used.issuedBy, first);
          assert.equal(normalizePairingCode(code)?.length, 8);
          // The same code again, from another new device.
          const other = uid("alice-tablet");
          assert.equal(await refusedWith(connect(other, asAlice(code))), "Pairing Code Used");
          assert.equal(await storage.devices.get(other), null);
          // Operators see who paired whom on the console's device pages.
          const page = await consolePages(storage);
          const paired = await page(`/devices/${encodeURIComponent(laptopId)}`);
          assert.match(paired, new RegExp(`data-paired-by="${first}"`));
          assert.match(paired, new RegExp(`pairing:${first}`), "the key event names the pairer");
          const pairer = await page(`/devices/${encodeURIComponent(first)}`);
          assert.match(pairer, /Pairing codes it asked for/);
          assert.match(pairer, new RegExp(`href="/devices/${laptopId}"`));
        },
      );

      await t.step("one code, two devices at the same time: exactly one pairs", async () => {
        const code = await newCode(phone);
        const [a, b] = [uid("alice-a"), uid("alice-b")];
        const results = await Promise.allSettled([
          connect(a, asAlice(code)),
          connect(b, asAlice(code)),
        ]);
        const ok = results.filter((r) => r.status === "fulfilled");
        const refused = results.filter((r) => r.status === "rejected") as PromiseRejectedResult[];
        assert.equal(ok.length, 1);
        assert.equal(refused.length, 1);
        assert.equal((refused[0].reason as HandshakeRefused).problem.title, "Pairing Code Used");
        const registered = [await storage.devices.get(a), await storage.devices.get(b)];
        assert.equal(registered.filter((d) => d !== null).length, 1);
        // Unlinked again so the limit below counts phone and laptop only.
        const winner = registered.find((d) => d !== null)!.id;
        const unlinked = await request(phone, { op: "unlink", device: winner });
        assert.equal(unlinked.type, FrameType.Ack, JSON.stringify(unlinked.json));
      });

      await t.step("guessing is bounded: wrong attempts burn the code", async () => {
        const code = await newCode(phone);
        const guesser = uid("guesser");
        // Three times the attempt limit: every guess is refused; the limit burns the code on the
        // way, so the right code is worthless afterwards.
        for (let i = 0; i < 3 * MAX_PAIRING_ATTEMPTS; i++) {
          const guess = `ZZZZ${String(1000 + i)}`;
          assert.equal(await refusedWith(connect(guesser, asAlice(guess))), "Pairing Code Invalid");
        }
        assert.equal(await refusedWith(connect(guesser, asAlice(code))), "Pairing Code Burned");
        const burned = (await storage.pairing.list({ userId })).find((c) => c.state === "burned");
        assert.equal(burned?.attempts, MAX_PAIRING_ATTEMPTS, "counted up to the limit");
        assert.equal(await storage.devices.get(guesser), null);
        const codes = await storage.pairing.list({ userId });
        assert.ok(codes.every((c) => c.state !== "open"), "no open code left");
      });

      await t.step("an expired code is refused", async () => {
        const { code } = await storage.pairing.issue({
          userId,
          deviceId: first,
          ttlSeconds: 1,
          maxOpen: 3,
        });
        await new Promise((r) => setTimeout(r, 1100));
        const late = uid("alice-late");
        assert.equal(await refusedWith(connect(late, asAlice(code))), "Pairing Code Expired");
        assert.equal(await storage.devices.get(late), null);
      });

      await t.step("a known or pending device cannot pair; an unknown user cannot", async () => {
        const code = await newCode(phone);
        const pendingId = uid("alice-pending");
        // Naming an existing user without a code leaves the device pending.
        assert.equal(
          await refusedWith(connect(pendingId, { user: { handle } })),
          "Device Pending Approval",
        );
        assert.equal(await refusedWith(connect(pendingId, asAlice(code))), "Pairing Refused");
        assert.equal((await storage.devices.get(pendingId))?.status, "pending");
        const nobody = uid("nobody");
        assert.equal(
          await refusedWith(
            connect(uid("x"), { user: { handle: nobody }, hello: { pairing_code: code } }),
          ),
          "Pairing Refused",
        );
        assert.equal(await storage.users.getByHandle(nobody), null);
        // The pending device counts against the limit until an operator decides.
        await storage.devices.reject(pendingId, "test");
      });

      await t.step("device limits: the user's own limit refuses codes and pairings", async () => {
        const code = await newCode(phone);
        await storage.pairing.setDeviceLimit(userId, 2, "test");
        const refusedCode = await request(phone, { op: "pair_code" });
        assert.equal(refusedCode.type, FrameType.Error);
        assert.equal(json(refusedCode).title, "Device Limit Reached");
        const third = uid("alice-third");
        assert.equal(await refusedWith(connect(third, asAlice(code))), "Device Limit Reached");
        assert.equal(await storage.devices.get(third), null);
        await storage.pairing.setDeviceLimit(userId, null, "test");
      });

      await t.step("devices lists the user's devices; bob sees both keys", async () => {
        const answer = json(await request(laptop, { op: "devices" }));
        const list = answer.devices as Record<string, unknown>[];
        const active = list.filter((d) => d.status === "active");
        assert.deepEqual(active.map((d) => d.device).sort(), [first, laptopId].sort());
        const mine = list.find((d) => d.device === laptopId)!;
        assert.equal(mine.current, true);
        assert.equal(mine.paired_by, first);
        assert.equal(mine.public_key, bytesToHex(deviceKeypair(laptopId).publicKey));
        assert.match(String(mine.fingerprint), /^([0-9a-f]{4} ){15}[0-9a-f]{4}$/);
        assert.equal(answer.max_devices, 4);
        const bob = await connect(uid("bob"));
        const keys = json(await request(bob, { op: "keys", devices: [first, laptopId] }));
        const found = (keys.devices as Record<string, unknown>[]).map((d) => [d.device, d.user]);
        assert.deepEqual(found.sort(), [[first, userId], [laptopId, userId]].sort());
        // Bob cannot unlink alice's device.
        const theft = await request(bob, { op: "unlink", device: laptopId });
        assert.equal(theft.type, FrameType.Error);
        assert.equal(json(theft).title, "Not Permitted");
        assert.equal((await storage.devices.get(laptopId))?.status, "active");
      });

      await t.step("unlink cuts the device off; it cannot connect again", async () => {
        const self = await request(phone, { op: "unlink", device: first });
        assert.equal(self.type, FrameType.Error);
        const answer = await request(phone, { op: "unlink", device: laptopId });
        assert.equal(answer.type, FrameType.Ack, JSON.stringify(answer.json));
        assert.equal(json(answer).status, "revoked");
        await laptop.ended();
        const cut = laptop.received.find((f) => f.type === FrameType.Error);
        assert.equal(cut && json(cut).title, "Device Revoked");
        assert.equal(await refusedWith(connect(laptopId, { user: { handle } })), "Device Revoked");
        const audit = await storage.audit.list({ target: `device:${laptopId}` });
        assert.deepEqual(audit.items.map((e) => [e.actor, e.action])[0], [
          `device:${first}`,
          "device.unlink",
        ]);
        await waitFor(() => !phone.isEnded);
      });
    } finally {
      for (const c of clients) await c.close().catch(() => {});
      await server.stop();
      await close();
    }
  });

  Deno.test({
    name: `pairing rate limits: codes per user, attempts per address (${label})`,
    sanitizeResources: true,
    sanitizeOps: true,
  }, async () => {
    const { storage, close } = await openTestStorage(kind);
    const config = testConfig({ limits: { pairingCodesPerHour: 2, pairingAttemptsPerHour: 3 } });
    if (kind === "real") {
      await forgetBucket("pairing_attempt:3/1200000:127.0.0.1");
      await forgetBucket("pairing_code:2/1800000:addr:127.0.0.1");
    }
    const server = await startServer(config, { storage });
    const clients: TestClient[] = [];
    try {
      const handle = uid("carol");
      const phone = await TestClient.connect(
        clientOptions(server, config, uid("carol-phone"), { user: { handle } }),
      );
      clients.push(phone);
      const answers = [];
      for (let i = 0; i < 3; i++) answers.push(await request(phone, { op: "pair_code" }));
      assert.deepEqual(answers.map((f) => f.type), [FrameType.Ack, FrameType.Ack, FrameType.Error]);
      const limited = json(answers[2]);
      assert.equal(limited.title, "Rate Limited");
      assert.match(String(limited.detail), /pairing_codes_per_hour/);
      assert.equal(phone.isEnded, false, "a refused request leaves the session open");
      const code = String(json(answers[1]).code);
      const titles = [];
      for (let i = 0; i < 4; i++) {
        titles.push(
          await refusedWith(
            TestClient.connect(
              clientOptions(server, config, uid("guess"), {
                user: { handle },
                hello: { pairing_code: i < 3 ? `ZZZZ000${i}` : code },
              }),
            ),
          ),
        );
      }
      // The fourth attempt is refused before the code is looked at, right as it is.
      assert.deepEqual(titles, [
        "Pairing Code Invalid",
        "Pairing Code Invalid",
        "Pairing Code Invalid",
        "Rate Limited",
      ]);
    } finally {
      for (const c of clients) await c.close().catch(() => {});
      await server.stop();
      await close();
    }
  });
}
