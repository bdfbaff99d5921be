/**
 * Two processes migrating one fresh database at once: one waits on the advisory lock, and
 * nothing is applied twice. Needs real Postgres (COMMUCAT_TEST_PG_DSN); registered as ignored
 * otherwise so the summary shows it.
 */
import assert from "node:assert/strict";
import { openPostgres } from "../../storage/db.ts";
import { MIGRATION_LOCK_CLASS, readMigrations } from "../../storage/migrate.ts";
import { scratchSchema } from "./pg_scratch.ts";

const dsn = Deno.env.get("COMMUCAT_TEST_PG_DSN") ?? "";
const WORKER = new URL("./migrate_worker.ts", import.meta.url).pathname;

function spawnWorker(target: string): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-check", WORKER, target],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

Deno.test({
  name: "migrate: two processes on one fresh database — one waits, nothing applied twice",
  ignore: dsn === "",
  async fn() {
    const scratch = await scratchSchema(dsn);
    const holder = await openPostgres(scratch.dsn, { max: 1 });
    try {
      const files = (await readMigrations()).map((f) => f.name);
      // Hold the migration lock ourselves so both workers are certainly racing for it.
      const released = holder.withConnection(async (conn) => {
        await conn.query(`SELECT pg_advisory_lock($1, hashtext(current_schema()))`, [
          MIGRATION_LOCK_CLASS,
        ]);
        const workers = [spawnWorker(scratch.dsn), spawnWorker(scratch.dsn)];
        const waiting = async () => {
          const res = await conn.query<{ n: string }>(
            `SELECT count(*) AS n FROM pg_locks
             WHERE locktype = 'advisory' AND NOT granted AND classid = $1::int8::oid`,
            [MIGRATION_LOCK_CLASS],
          );
          return Number(res.rows[0].n);
        };
        const deadline = Date.now() + 60_000;
        while ((await waiting()) < 2) {
          if (Date.now() > deadline) throw new Error("workers never reached the lock");
          await new Promise((r) => setTimeout(r, 50));
        }
        await conn.query(`SELECT pg_advisory_unlock($1, hashtext(current_schema()))`, [
          MIGRATION_LOCK_CLASS,
        ]);
        return workers;
      });
      const outputs = await Promise.all((await released).map((w) => w.output()));
      const applied: string[][] = outputs.map((o) => {
        assert.equal(o.code, 0, new TextDecoder().decode(o.stderr));
        return JSON.parse(new TextDecoder().decode(o.stdout).trim());
      });
      // One process applied everything; the other waited and found nothing left to do.
      assert.deepEqual(applied.map((a) => a.length).sort(), [0, files.length]);
      assert.deepEqual([...applied[0], ...applied[1]], files);
      const rows = await holder.query<{ name: string }>(
        `SELECT name FROM commucat_schema_migrations ORDER BY name`,
      );
      assert.deepEqual(rows.rows.map((r) => r.name), files);
    } finally {
      await holder.close();
      await scratch.drop();
    }
  },
});
