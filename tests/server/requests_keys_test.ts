/**
 * The `keys` server request (key directory) against real storage: embedded PGlite always, and
 * Postgres + Redis when COMMUCAT_TEST_PG_DSN / COMMUCAT_TEST_REDIS_URL name them.
 */
import assert from "node:assert/strict";
import { generateKeypair } from "../../protocol/crypto.ts";
import { bytesToHex } from "../../protocol/hex.ts";
import { ProtocolError } from "../../protocol/errors.ts";
import { keysRequest, MAX_KEYS_DEVICES } from "../../server/requests/keys.ts";
import type { RequestContext } from "../../server/requests/types.ts";
import { devicesRequest, pairCode, unlinkRequest } from "../../server/requests/devices.ts";
import type { Logger } from "../../server/log.ts";
import { Limits } from "../../server/limits.ts";
import { openTestStorage, storageKinds, testConfig, uid } from "./helpers/server.ts";

const quiet: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child() {
    return quiet;
  },
};

function isRefusal(title: string, status: number) {
  return (err: unknown) => {
    assert.ok(err instanceof ProtocolError, `expected ProtocolError, got ${err}`);
    assert.equal(err.title, title, err.message);
    assert.equal(err.status, status);
    assert.equal(err.fatal, false);
    return true;
  };
}

for (const kind of storageKinds()) {
  Deno.test({
    name: `keys request (${kind} storage)`,
    sanitizeOps: false,
    sanitizeResources: false,
    async fn(t) {
      const { storage, close } = await openTestStorage(kind);
      try {
        const config = testConfig();
        const user = await storage.users.create({ handle: uid("keys-user") });
        const [alice, bob, pend, lone] = ["alice", "bob", "pend", "lone"].map((n) => uid(n));
        const keys = new Map<string, ReturnType<typeof generateKeypair>>();
        for (const id of [alice, bob, pend, lone]) keys.set(id, generateKeypair());
        for (const id of [alice, bob, lone]) {
          await storage.devices.register(
            { id, userId: user.id, publicKey: keys.get(id)!.publicKey, status: "active" },
            "test",
          );
        }
        await storage.devices.register(
          { id: pend, userId: user.id, publicKey: keys.get(pend)!.publicKey, status: "pending" },
          "test",
        );
        const rotated = generateKeypair();
        await storage.devices.rotateKey(bob, rotated.publicKey, "test");
        const group = uid("grp");
        await storage.groups.create({ id: group, ownerDeviceId: alice, relay: true }, "test");
        await storage.groups.addMember(group, bob, "member", "test");
        const ctx: RequestContext = {
          deviceId: alice,
          userId: user.id,
          sessionId: "s-1",
          storage,
          config,
          log: quiet,
          remoteAddr: "127.0.0.1:1",
          limits: new Limits(storage.ephemeral, config.limits),
        };

        await t.step(
          "named devices: current key, history, status; unknown and remote listed",
          async () => {
            const answer = await keysRequest(ctx, {
              op: "keys",
              devices: [bob, pend, "nobody-at-all", "carol@other.example", `${lone}@test.commucat`],
            });
            assert.equal(answer.op, "keys");
            const devices = answer.devices as Record<string, unknown>[];
            const byId = new Map(devices.map((d) => [d.device as string, d]));
            const b = byId.get(bob)!;
            assert.equal(b.status, "active");
            assert.equal(b.public_key, bytesToHex(rotated.publicKey));
            assert.equal(b.user, user.id);
            assert.equal(b.key_change_pending, false);
            const events = b.events as { kind: string; at: string; public_key: string }[];
            assert.deepEqual(events.map((e) => e.kind), ["registered", "rotated"]);
            assert.equal(events[0].public_key, bytesToHex(keys.get(bob)!.publicKey));
            assert.equal(events[1].public_key, bytesToHex(rotated.publicKey));
            assert.ok(!Number.isNaN(Date.parse(events[0].at)));
            assert.equal(byId.get(pend)!.status, "pending");
            assert.equal(
              byId.get(`${lone}@test.commucat`)!.public_key,
              bytesToHex(keys.get(lone)!.publicKey),
            );
            assert.deepEqual(answer.not_found, ["nobody-at-all"]);
            assert.deepEqual(answer.remote, ["carol@other.example"]);
            // Only public keys: no private key of any device appears in the answer.
            const text = JSON.stringify(answer);
            for (const k of [...keys.values(), rotated]) {
              assert.ok(!text.includes(bytesToHex(k.privateKey)));
            }
          },
        );

        await t.step(
          "group: a member gets every member's key; a non-member is refused",
          async () => {
            const answer = await keysRequest(ctx, { op: "keys", group });
            const ids = (answer.devices as { device: string }[]).map((d) => d.device).sort();
            assert.deepEqual(ids, [alice, bob].sort());
            await assert.rejects(
              keysRequest({ ...ctx, deviceId: lone }, { op: "keys", group }),
              isRefusal("Not A Member", 403),
            );
            await assert.rejects(
              keysRequest({ ...ctx, deviceId: lone }, { op: "keys", group: uid("no-such-group") }),
              isRefusal("Not A Member", 403),
            );
          },
        );

        await t.step("bad requests are refused, non-fatal, with the rule named", async () => {
          await assert.rejects(
            keysRequest(ctx, { op: "keys" }),
            isRefusal("Invalid Control Payload", 400),
          );
          await assert.rejects(
            keysRequest(ctx, { op: "keys", devices: "bob" }),
            isRefusal("Invalid Control Payload", 400),
          );
          await assert.rejects(
            keysRequest(ctx, { op: "keys", devices: [""] }),
            isRefusal("Invalid Control Payload", 400),
          );
          await assert.rejects(
            keysRequest(ctx, { op: "keys", group: 7 }),
            isRefusal("Invalid Control Payload", 400),
          );
          const many = Array.from({ length: MAX_KEYS_DEVICES + 1 }, (_, i) => `d${i}`);
          await assert.rejects(
            keysRequest(ctx, { op: "keys", devices: many }),
            (err) => isRefusal("Payload Too Large", 413)(err) && /at most 64/.test(String(err)),
          );
        });

        await t.step("users: every active device of a named user, listed per user", async () => {
          const answer = await keysRequest(ctx, { op: "keys", users: [`@${user.handle}`] });
          const users = answer.users as { user: string; handle: string; devices: string[] }[];
          assert.equal(users.length, 1);
          assert.equal(users[0].user, user.id);
          assert.equal(users[0].handle, user.handle);
          assert.deepEqual([...users[0].devices].sort(), [alice, bob, lone].sort());
          const ids = answer.devices as { device: string; paired_by: unknown }[];
          assert.deepEqual(ids.map((d) => d.device).sort(), [alice, bob, lone].sort());
          assert.ok(ids.every((d) => d.paired_by === null));
          // By user id too; an unknown user and a remote one are refused, naming the rule.
          const byId = await keysRequest(ctx, { op: "keys", users: [`@${user.id}`] });
          assert.equal((byId.users as { user: string }[])[0].user, user.id);
          await assert.rejects(
            keysRequest(ctx, { op: "keys", users: [`@${uid("nobody")}`] }),
            isRefusal("Unknown User", 404),
          );
          await assert.rejects(
            keysRequest(ctx, { op: "keys", users: ["@carol@other.example"] }),
            isRefusal("Remote User Not Addressable", 400),
          );
          await assert.rejects(
            keysRequest(ctx, { op: "keys", users: "alice" }),
            isRefusal("Invalid Control Payload", 400),
          );
        });

        await t.step("a user on a group roster: its active devices are the members", async () => {
          const team = uid("team");
          await storage.groups.create({ id: team, ownerDeviceId: alice, relay: true }, "test");
          const other = await storage.users.create({ handle: uid("other-user") });
          const phone = uid("other-phone");
          await storage.devices.register(
            {
              id: phone,
              userId: other.id,
              publicKey: generateKeypair().publicKey,
              status: "active",
            },
            "test",
          );
          await storage.groups.addMember(team, `@${other.id}`, "member", "test");
          const answer = await keysRequest(ctx, { op: "keys", group: team });
          const ids = (answer.devices as { device: string }[]).map((d) => d.device).sort();
          assert.deepEqual(ids, [alice, phone].sort());
          // The user's device is a member through its user: it may ask too.
          assert.equal(await storage.groups.role(team, phone), "member");
          const asPhone = await keysRequest({ ...ctx, deviceId: phone, userId: other.id }, {
            op: "keys",
            group: team,
          });
          assert.equal((asPhone.devices as unknown[]).length, 2);
        });

        await t.step(
          "a device that is not active cannot ask for codes, list or unlink",
          async () => {
            const asPending = { ...ctx, deviceId: pend };
            for (
              const [handler, request] of [
                [pairCode, { op: "pair_code" }],
                [devicesRequest, { op: "devices" }],
                [unlinkRequest, { op: "unlink", device: alice }],
              ] as const
            ) {
              await assert.rejects(handler(asPending, request), isRefusal("Not Permitted", 403));
            }
            assert.deepEqual(await storage.pairing.list({ userId: user.id }), [], "no code issued");
            assert.equal((await storage.devices.get(alice))?.status, "active", "nothing revoked");
          },
        );
      } finally {
        await close();
      }
    },
  });
}
