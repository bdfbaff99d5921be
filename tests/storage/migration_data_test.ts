/**
 * Migrations that rewrite existing rows, applied to a database that holds rows written before
 * them: 008 (idempotency keys of the original schema never expire), 009 (outbox entries start
 * live) and 011 (peer audit entries recorded under the bare domain get the `peer:` prefix).
 * Runs on PGlite, and on Postgres in a scratch schema when COMMUCAT_TEST_PG_DSN is set.
 */
import assert from "node:assert/strict";
import { type Db, openPglite, openPostgres } from "../../storage/db.ts";
import { migrate, MIGRATIONS_DIR } from "../../storage/migrate.ts";
import { scratchSchema } from "./pg_scratch.ts";

const dsn = Deno.env.get("COMMUCAT_TEST_PG_DSN") ?? "";

/** A directory with the migration files whose names sort before `upTo`. */
async function migrationsBefore(upTo: string): Promise<{ url: URL; remove(): Promise<void> }> {
  const dir = await Deno.makeTempDir({ prefix: "commucat-migrations-" });
  for await (const f of Deno.readDir(MIGRATIONS_DIR)) {
    if (f.name.endsWith(".sql") && f.name < upTo) {
      await Deno.copyFile(new URL(f.name, MIGRATIONS_DIR), `${dir}/${f.name}`);
    }
  }
  return { url: new URL(`file://${dir}/`), remove: () => Deno.remove(dir, { recursive: true }) };
}

async function scenario(db: Db): Promise<void> {
  const old = await migrationsBefore("008");
  try {
    await migrate(db, { dir: old.url });
  } finally {
    await old.remove();
  }
  await db.exec(`
    INSERT INTO idempotency (scope, key) VALUES ('legacy', 'k1');
    INSERT INTO federation_outbox (event_id, peer_domain, endpoint, body)
      VALUES ('e1', 'b.example', 'https://b.example/federation/events', '{}');
    INSERT INTO operator_audit (actor, action, target) VALUES
      ('cli:op', 'peer.add', 'b.example'),
      ('console:x', 'peer.set-status', 'peer:b.example'),
      ('cli:op', 'device.approve', 'device:d1'),
      ('cli:op', 'probe', 'b.example');
  `);
  await migrate(db);

  const key = await db.query<{ expires_at: unknown }>(
    `SELECT expires_at::text AS expires_at FROM idempotency WHERE scope = 'legacy'`,
  );
  assert.equal(key.rows[0].expires_at, "infinity", "an original key stays claimed");
  const entry = await db.query<{ dead_at: Date | null }>(
    `SELECT dead_at FROM federation_outbox WHERE event_id = 'e1'`,
  );
  assert.equal(entry.rows[0].dead_at, null, "queued entries stay live");
  const audit = await db.query<{ action: string; target: string }>(
    `SELECT action, target FROM operator_audit ORDER BY id`,
  );
  assert.deepEqual(audit.rows.map((r) => `${r.action} ${r.target}`), [
    "peer.add peer:b.example",
    "peer.set-status peer:b.example",
    "device.approve device:d1",
    "probe b.example",
  ]);
}

Deno.test("migrations 008–011 keep and convert rows written before them (PGlite)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "commucat-migdata-" });
  const db = await openPglite(dir);
  try {
    await scenario(db);
  } finally {
    await db.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "migrations 008–011 keep and convert rows written before them (Postgres)",
  ignore: dsn === "",
  async fn() {
    const scratch = await scratchSchema(dsn);
    const db = await openPostgres(scratch.dsn, { max: 2 });
    try {
      await scenario(db);
    } finally {
      await db.close();
      await scratch.drop();
    }
  },
});
