/**
 * The CLI on the embedded defaults (PGlite in a temp data_dir, in-memory ephemeral store), as
 * separate processes. One data dir serves the whole file: creating it costs a few seconds.
 */
import assert from "node:assert/strict";
import { x25519 } from "@noble/curves/ed25519.js";
import { cli, DENO_CONFIG, keyValues, show } from "./run.ts";
import { operatorFlow } from "./flow.ts";
import { openStorage } from "../../storage/mod.ts";
import { freePort } from "../helpers/wait.ts";

const dir = await Deno.makeTempDir({ prefix: "commucat-cli-" });
const dataDir = `${dir}/data`;
const ledgerFile = `${dir}/ledger.ndjson`;
const env = {
  COMMUCAT_DATA_DIR: dataDir,
  COMMUCAT_LEDGER: "file",
  COMMUCAT_LEDGER_TARGET: ledgerFile,
};

const openHere = () => openStorage({ postgresDsn: null, redisUrl: null, dataDir, migrate: false });

Deno.test({
  name: "cli on the embedded database: the operator flow",
  sanitizeResources: false, // PGlite keeps a WASM file handle until the process ends
  async fn(t) {
    await operatorFlow(t, { env, cwd: dir, openStorage: openHere, ledgerFile, tag: "emb" });
  },
});

Deno.test({
  name: "cli on the embedded database: failures explain themselves and exit 1",
  sanitizeResources: false,
  async fn(t) {
    await t.step("a fresh data dir without migrations points at migrate", async () => {
      const fresh = `${dir}/fresh`;
      const r = await cli(["devices"], { COMMUCAT_DATA_DIR: fresh }, dir);
      assert.equal(r.code, 1, show(["devices"], r));
      assert.match(r.stderr, /storage failure: check the DSN, the role's rights and migrations/);
      assert.match(r.stderr, /run deno task cli migrate/);
    });

    await t.step("a running server holding the embedded database is named", async () => {
      // Another process opens the embedded database the way the server does, and holds it.
      const holder = new Deno.Command(Deno.execPath(), {
        args: [
          "eval",
          "--config",
          DENO_CONFIG,
          `import { openDb } from ${
            JSON.stringify(new URL("../../storage/mod.ts", import.meta.url).href)
          };
           const db = await openDb({ postgresDsn: null, dataDir: ${JSON.stringify(dataDir)} });
           console.log("open");
           for await (const _ of Deno.stdin.readable) break;
           await db.close();`,
        ],
        stdin: "piped",
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      const reader = holder.stdout.pipeThrough(new TextDecoderStream()).getReader();
      try {
        const first = await reader.read();
        assert.equal(first.value?.trim(), "open");
        const migrate = await cli(["migrate"], env, dir);
        assert.equal(migrate.code, 1, show(["migrate"], migrate));
        assert.ok(
          migrate.stderr.includes(
            `the embedded database in ${dataDir}/pg is in use by a running server; ` +
              "stop it or configure [storage] postgres_dsn",
          ),
          show(["migrate"], migrate),
        );
        // Other commands go to the holder's admin API; this holder serves none.
        const port = String(freePort());
        const devices = await cli(
          ["devices"],
          { ...env, COMMUCAT_CONSOLE_BIND: `127.0.0.1:${port}`, COMMUCAT_ADMIN_TOKEN: "t0ken" },
          dir,
        );
        assert.equal(devices.code, 1, show(["devices"], devices));
        assert.match(
          devices.stderr,
          new RegExp(
            `a running server holds the embedded database; using its admin API at ` +
              `http://127\\.0\\.0\\.1:${port}`,
          ),
        );
        assert.match(devices.stderr, /admin API at .* cannot be reached/);
        const d = await cli(["diagnose"], env, dir);
        assert.equal(d.code, 1, show(["diagnose"], d));
        assert.match(d.stdout, /^database: +failed: the embedded database in .* is in use/m);
      } finally {
        const writer = holder.stdin.getWriter();
        await writer.write(new TextEncoder().encode("done\n"));
        await writer.close();
        await reader.cancel();
        assert.equal((await holder.status).code, 0);
      }
    });

    await t.step("Redis unreachable: diagnose reports it with the redis hint", async () => {
      const args = ["diagnose"];
      const r = await cli(args, { ...env, COMMUCAT_REDIS_URL: "redis://127.0.0.1:1" }, dir);
      assert.equal(r.code, 1, show(args, r));
      assert.match(r.stdout, /^database: +ok/m);
      assert.match(r.stdout, /^ephemeral: +failed: redis failure/m);
      assert.match(r.stdout, /^ephemeral-probe: +failed: redis failure/m);
      assert.match(
        r.stderr,
        /hint: redis failure: check that Redis is reachable, the ACL and the DB index/,
      );
    });

    await t.step("Redis unreachable: revoke commits, then says servers were not told", async () => {
      const storage = await openHere();
      const user = await storage.users.create({ handle: "redis_down" });
      await storage.devices.register(
        { id: "rd-1", userId: user.id, publicKey: x25519.keygen().publicKey, status: "active" },
        "test",
      );
      await storage.close();
      const args = ["revoke-device", "rd-1"];
      const r = await cli(args, { ...env, COMMUCAT_REDIS_URL: "redis://127.0.0.1:1" }, dir);
      assert.equal(r.code, 1, show(args, r));
      assert.match(
        r.stderr,
        /device rd-1 is revoked in the database, but running servers could not/,
      );
      assert.match(r.stderr, /hint: redis failure/);
      const listed = await cli(["devices", "--search", "rd-1", "--format", "json"], env, dir);
      assert.equal(JSON.parse(listed.stdout).items[0].status, "revoked");
    });

    await t.step(
      "an unreachable Postgres gives the storage hint and never shows the password",
      async () => {
        const args = ["devices"];
        const r = await cli(
          args,
          { COMMUCAT_PG_DSN: "postgres://op:topsecret@127.0.0.1:1/x" },
          dir,
        );
        assert.equal(r.code, 1, show(args, r));
        assert.match(r.stderr, /cannot connect to postgres/);
        assert.match(
          r.stderr,
          /hint: storage failure: check the DSN, the role's rights and migrations/,
        );
        assert.ok(!r.stdout.includes("topsecret") && !r.stderr.includes("topsecret"));
      },
    );

    await t.step("a bad configuration value is named", async () => {
      const r = await cli(["devices"], { ...env, COMMUCAT_KEEPALIVE: "soon" }, dir);
      assert.equal(r.code, 1, show(["devices"], r));
      assert.match(r.stderr, /configuration error: invalid COMMUCAT_KEEPALIVE/);
      const d = await cli(["diagnose"], { ...env, COMMUCAT_KEEPALIVE: "soon" }, dir);
      assert.equal(d.code, 1);
      assert.match(d.stdout, /^config: +failed: invalid COMMUCAT_KEEPALIVE/m);
    });

    await t.step(
      "a ledger file that cannot be written stops rotate-keys before any change",
      async () => {
        const r = await cli(
          ["rotate-keys", "--handle", "redis_down", "--device", "never"],
          { ...env, COMMUCAT_LEDGER_TARGET: "/proc/nope/ledger" },
          dir,
        );
        assert.equal(r.code, 1, show(["rotate-keys"], r));
        assert.match(r.stderr, /cannot open ledger file/);
        const k = await cli(["key-events", "never"], env, dir);
        assert.equal(k.code, 1);
        assert.match(k.stderr, /device "never" not found/);
        assert.equal(keyValues(k.stdout).private_key, undefined);
      },
    );
  },
});

// Runs last in this file: removes the shared temp dir.
Deno.test("cli embedded: clean up", async () => {
  await Deno.remove(dir, { recursive: true });
});
