/**
 * The operator's day, run through the CLI as separate processes: migrate, register a user
 * (with hostile strings), key a device, approve/reject/revoke, export key events, manage
 * peers, look at groups, diagnose. Shared by the embedded and the Postgres + Redis tests.
 */
import assert from "node:assert/strict";
import { x25519 } from "@noble/curves/ed25519.js";
import { bytesToHex, hexToBytes } from "@noble/hashes/utils.js";
import { cli, keyValues, show } from "./run.ts";
import type { Storage } from "../../storage/mod.ts";

export interface FlowTarget {
  /** Environment for every CLI process (data dir or DSN, Redis URL, ledger). */
  env: Record<string, string>;
  /** Working directory of the CLI processes. */
  cwd: string;
  /** Opens the same storage in this process (closed again before the next CLI run). */
  openStorage: () => Promise<Storage>;
  /** The ledger file the CLI writes (COMMUCAT_LEDGER_TARGET). */
  ledgerFile: string;
  /** A unique suffix, so a shared database can hold several runs. */
  tag: string;
}

/** SQL-injection and markup strings every text field must store verbatim. */
export const HOSTILE = {
  displayName: `Robert'); DROP TABLE app_user;-- "x" \\ <b>bold</b>`,
  avatarUrl: `<script>alert('x')</script>' OR '1'='1`,
};

export async function operatorFlow(t: Deno.TestContext, target: FlowTarget): Promise<void> {
  const run = async (args: string[], expectCode = 0, env: Record<string, string> = {}) => {
    const r = await cli(args, { ...target.env, ...env }, target.cwd);
    assert.equal(r.code, expectCode, show(args, r));
    return r;
  };
  const json = (text: string) => JSON.parse(text);
  const handle = `op_${target.tag}`;
  let userId = "";
  const device = `dev-${target.tag}`;

  await t.step(
    "migrate applies everything (progress on stderr), then has nothing to do",
    async () => {
      const first = await run(["migrate"]);
      assert.match(first.stdout, /applied \d+ migrations?|database is up to date/);
      if (/^applied/.test(first.stdout)) {
        assert.match(
          first.stderr,
          /\[1\/\d+\] applying \d+_[\w-]+\.sql/,
        );
      }
      const second = await run(["migrate"]);
      assert.match(second.stdout, /database is up to date \(\d+ migrations applied\)/);
    },
  );

  await t.step("register-user stores hostile strings verbatim and prints user_id", async () => {
    const r = await run(["register-user", handle, HOSTILE.displayName, HOSTILE.avatarUrl]);
    const kv = keyValues(r.stdout);
    assert.match(kv.user_id, /^[0-9a-f-]{36}$/);
    userId = kv.user_id;
    assert.equal(kv.handle, handle);
    // Text output escapes only backslashes and control characters.
    assert.equal(kv.display_name, HOSTILE.displayName.replaceAll("\\", "\\\\"));
    assert.equal(kv.avatar_url, HOSTILE.avatarUrl);

    const list = await run(["users", "--search", handle, "--format", "json"]);
    const users = json(list.stdout).items;
    assert.equal(users.length, 1);
    assert.equal(users[0].displayName, HOSTILE.displayName);
    assert.equal(users[0].avatarUrl, HOSTILE.avatarUrl);

    const dup = await run(["register-user", handle], 1);
    assert.match(dup.stderr, /already taken/);
    const bad = await run(["register-user", "x'); DROP TABLE app_user;--"], 1);
    assert.match(bad.stderr, /invalid handle "x'\); DROP TABLE app_user;--"/);
    // The table is still there and still holds the user.
    const again = await run(["users", "--search", handle]);
    assert.match(again.stdout, new RegExp(`^USER_ID +HANDLE`, "m"));
    assert.ok(again.stdout.includes(handle));
  });

  await t.step("rotate-keys registers a device, then rotates its key", async () => {
    const first = keyValues(
      (await run(["rotate-keys", "--handle", handle, "--device", device])).stdout,
    );
    assert.equal(first.user_id, userId);
    assert.equal(first.device_id, device);
    assert.match(first.public_key, /^[0-9a-f]{64}$/);
    assert.match(first.private_key, /^[0-9a-f]{64}$/);
    assert.equal(bytesToHex(x25519.getPublicKey(hexToBytes(first.private_key))), first.public_key);

    const second = keyValues(
      (await run(["rotate-keys", "--user", userId, "--device", device])).stdout,
    );
    assert.notEqual(second.public_key, first.public_key);

    const fresh = keyValues((await run(["rotate-keys", "--user", userId])).stdout);
    assert.match(fresh.device_id, /^[0-9a-f-]{36}$/);

    const listed = json((await run(["devices", "--user", userId, "--format", "json"])).stdout);
    const byId = new Map(listed.items.map((d: { id: string }) => [d.id, d]));
    assert.equal(byId.size, 2);
    const mine = byId.get(device) as { status: string; publicKey: string; userHandle: string };
    assert.equal(mine.status, "active");
    assert.equal(mine.publicKey, second.public_key);
    assert.equal(mine.userHandle, handle);

    // One user's device limit: set, shown by devices --user, restored; bad input refused.
    const limited = keyValues((await run(["set-device-limit", handle, "12"])).stdout);
    assert.deepEqual([limited.user_id, limited.max_devices, limited.devices], [userId, "12", "2"]);
    const shown = await run(["devices", "--user", handle]);
    assert.match(shown.stderr, /2 devices count against its limit of 12/);
    for (const bad of ["0", "10001", "lots"]) {
      const refused = await run(["set-device-limit", handle, bad], 2);
      assert.match(refused.stderr, /limit must be 1\.\.10000/);
    }
    await run(["set-device-limit", `nobody_${target.tag}`, "3"], 1);
    const restored = keyValues((await run(["set-device-limit", userId, "default"])).stdout);
    assert.equal(restored.max_devices, "default");

    // The one export format of the console, the CLI and the API (admin/export.ts).
    const events = json((await run(["key-events", device, "--format", "json"])).stdout);
    assert.deepEqual(events.map((e: { kind: string }) => e.kind), ["registered", "rotated"]);
    assert.deepEqual(
      events.map((e: { public_key: string }) => e.public_key),
      [first.public_key, second.public_key],
    );
    assert.equal(events[0].actor, "cli:cli-test");
    assert.equal(events[0].device_id, device);

    const csv = (await run(["key-events", device, "--format", "csv"])).stdout.trimEnd().split(
      "\r\n",
    );
    assert.equal(csv[0], "event_id,device_id,kind,public_key,actor,recorded_at");
    assert.equal(csv.length, 3);
    assert.ok(csv[2].includes(`,"rotated",`) && csv[2].includes(second.public_key));

    const table = (await run(["key-events", device])).stdout;
    assert.match(table, /^RECORDED_AT +KIND +EVENT_ID +PUBLIC_KEY +ACTOR$/m);

    // The ledger has a digest-carrying record for each key change.
    const ledger = (await Deno.readTextFile(target.ledgerFile)).trim().split("\n").map((l) =>
      JSON.parse(l)
    ).filter((r) => r.metadata.device_id === device);
    assert.deepEqual(ledger.map((r) => r.metadata.kind), ["registered", "rotated"]);
    assert.match(ledger[0].digest, /^[0-9a-f]{64}$/);

    const other = await run(["register-user", `other_${target.tag}`]);
    const otherId = keyValues(other.stdout).user_id;
    const stolen = await run(["rotate-keys", "--user", otherId, "--device", device], 1);
    assert.match(stolen.stderr, /belongs to another user/);
  });

  const pendingA = `pa-${target.tag}`;
  const pendingB = `pb-${target.tag}`;
  const rotating = `rk-${target.tag}`;
  const group = `grp-${target.tag}`;
  await t.step("setup outside the CLI: pending devices, a new key waiting, a group", async () => {
    const storage = await target.openStorage();
    try {
      for (const id of [pendingA, pendingB]) {
        await storage.devices.register(
          { id, userId, publicKey: x25519.keygen().publicKey, status: "pending" },
          "test",
        );
      }
      // An active device whose handshake asks for a new key without auto-approve.
      await storage.devices.register(
        { id: rotating, userId, publicKey: x25519.keygen().publicKey, status: "active" },
        "test",
      );
      const asked = await storage.devices.resolveForHandshake({
        deviceId: rotating,
        publicKey: x25519.keygen().publicKey,
        user: {},
        autoApprove: false,
      });
      assert.equal(asked.outcome, "pending");
      await storage.groups.create({ id: group, ownerDeviceId: device, relay: true }, "test");
      await storage.groups.addMember(group, pendingA, "member", "test");
    } finally {
      await storage.close();
    }
  });

  await t.step(
    "devices filters; approve, reject and revoke follow the allowed transitions",
    async () => {
      const pending = await run([
        "devices",
        "--status",
        "pending",
        "--search",
        "p",
        "--limit",
        "500",
      ]);
      assert.match(pending.stdout, /^DEVICE_ID +HANDLE +USER_ID +STATUS/);
      assert.ok(pending.stdout.includes(pendingA) && pending.stdout.includes(pendingB));
      assert.ok(!pending.stdout.includes(device));
      assert.ok(!pending.stdout.includes(rotating), "an active device is not pending");

      // --awaiting: everything an operator must decide, new devices and new keys alike.
      const awaiting = json(
        (await run(["devices", "--awaiting", "--user", userId, "--format", "json"])).stdout,
      );
      assert.deepEqual(
        awaiting.items.map((d: { id: string }) => d.id).sort(),
        [pendingA, pendingB, rotating].sort(),
      );
      const keys = await run(["devices", "--awaiting", "--status", "active", "--user", userId]);
      assert.match(
        keys.stdout,
        new RegExp(`^${rotating} +${handle} +${userId} +active +\\S+ +[0-9a-f]{16}…`, "m"),
      );
      assert.ok(!keys.stdout.includes(pendingA));
      const decided = keyValues((await run(["approve-device", rotating])).stdout);
      assert.equal(decided.status, "active");
      assert.equal(decided.pending_public_key, "-");
      const left = json(
        (await run(["devices", "--awaiting", "--user", userId, "--format", "json"])).stdout,
      );
      assert.deepEqual(
        left.items.map((d: { id: string }) => d.id).sort(),
        [pendingA, pendingB].sort(),
      );

      const approved = keyValues((await run(["approve-device", pendingA])).stdout);
      assert.equal(approved.status, "active");
      assert.equal(approved.event, "approved");
      const rejected = keyValues((await run(["reject-device", pendingB])).stdout);
      assert.equal(rejected.status, "revoked");
      const revoked = keyValues((await run(["revoke-device", device])).stdout);
      assert.equal(revoked.status, "revoked");
      assert.equal(revoked.event, "revoked");

      const again = await run(["approve-device", device], 1);
      assert.match(again.stderr, /cannot go from revoked to active/);
      const page = json(
        (await run(["devices", "--user", userId, "--limit", "1", "--format", "json"])).stdout,
      );
      assert.equal(page.items.length, 1);
      assert.ok(page.nextCursor);
      const next = json(
        (await run([
          "devices",
          "--user",
          userId,
          "--limit",
          "1",
          "--cursor",
          page.nextCursor,
          "--format",
          "json",
        ]))
          .stdout,
      );
      assert.equal(next.items.length, 1);
      assert.notEqual(next.items[0].id, page.items[0].id);
    },
  );

  const domain = `peer-${target.tag}.example.org`;
  await t.step("peers add, set-status and list", async () => {
    const key = "ab".repeat(32);
    const added = keyValues(
      (await run(["peers", "add", domain, `https://${domain}/federation`, key])).stdout,
    );
    assert.equal(added.status, "pending");
    assert.equal(added.public_key, key);
    const active = keyValues((await run(["peers", "set-status", domain, "active"])).stdout);
    assert.equal(active.status, "active");
    const blocked = keyValues((await run(["peers", "set-status", domain, "blocked"])).stdout);
    assert.equal(blocked.status, "blocked");
    const peers = json((await run(["peers", "list", "--format", "json"])).stdout);
    const mine = peers.find((p: { domain: string }) => p.domain === domain);
    assert.equal(mine.status, "blocked");
    assert.equal(mine.source, "database");
    const text = (await run(["peers", "list"])).stdout;
    assert.match(text, new RegExp(`^${domain.replaceAll(".", "\\.")} +blocked +database`, "m"));
    const badDomain = await run([
      "peers",
      "add",
      "evil'; DROP TABLE federation_peer;--",
      "https://x.org",
      key,
    ], 1);
    assert.match(badDomain.stderr, /invalid domain/);
  });

  await t.step("groups list and show", async () => {
    const list = await run(["groups", "list", "--search", group]);
    assert.match(list.stdout, new RegExp(`^${group} +${device} +true +2`, "m"));
    const shown = await run(["groups", "show", group]);
    assert.match(shown.stdout, new RegExp(`^group_id=${group}$`, "m"));
    assert.match(shown.stdout, new RegExp(`^${pendingA} +member`, "m"));
    const asJson = json((await run(["groups", "show", group, "--format", "json"])).stdout);
    assert.equal(asJson.group.id, group);
    assert.equal(asJson.roster.length, 2);
  });

  await t.step("diagnose passes every check", async () => {
    const r = await run(["diagnose"]);
    for (
      const check of [
        "config",
        "database",
        "migrations",
        "identifiers",
        "ephemeral",
        "db-probe",
        "ephemeral-probe",
      ]
    ) {
      assert.match(r.stdout, new RegExp(`^${check}: +ok`, "m"), show(["diagnose"], r));
    }
  });

  await t.step("every operator action is in the audit log under cli:<user>", async () => {
    const storage = await target.openStorage();
    try {
      const page = await storage.audit.list({ actor: "cli:cli-test", limit: 500 });
      const mine = page.items.filter((e) =>
        [userId, device, pendingA, pendingB, domain].some((id) => e.target.endsWith(id))
      );
      const actions = new Set(mine.map((e) => e.action));
      for (
        const action of [
          "user.register",
          "device.register",
          "device.rotate-key",
          "device.approve",
          "device.reject",
          "device.revoke",
          "peer.add",
          "peer.set-status",
        ]
      ) {
        assert.ok(actions.has(action), `audit has ${action}: ${[...actions].join(", ")}`);
      }
    } finally {
      await storage.close();
    }
  });
}
