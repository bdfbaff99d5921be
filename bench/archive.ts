/**
 * Key-event archive: one retention pass over 50 000 old key events (five chunks of 10 000) into a
 * directory target, then a full verify — on Postgres (COMMUCAT_TEST_PG_DSN, a scratch schema) or
 * embedded PGlite when it is not set. `deno task bench archive`.
 */
import { ed25519 } from "@noble/curves/ed25519.js";
import { openPglite, openPostgres } from "../storage/db.ts";
import { openEphemeral } from "../storage/ephemeral/mod.ts";
import { buildStorage, type Db, migrate } from "../storage/mod.ts";
import { archiveKeyEvents, verifyArchive } from "../storage/archive/key_events.ts";
import { DirTarget } from "../storage/archive/targets.ts";
import { scratchSchema } from "../tests/storage/pg_scratch.ts";

const EVENTS = 50_000;
const CHUNK = 10_000;

export async function run(): Promise<void> {
  const dsn = Deno.env.get("COMMUCAT_TEST_PG_DSN") ?? "";
  const dir = await Deno.makeTempDir({ prefix: "commucat-bench-archive-" });
  const scratch = dsn ? await scratchSchema(dsn) : null;
  const db: Db = scratch ? await openPostgres(scratch.dsn) : await openPglite(dir);
  await migrate(db);
  const s = buildStorage(db, await openEphemeral(null));
  try {
    const user = await s.users.create({ handle: "bench-archive" });
    await s.devices.register(
      { id: "bench-dev", userId: user.id, publicKey: new Uint8Array(32).fill(1), status: "active" },
      "bench",
    );
    await db.query(
      `INSERT INTO device_key_event (event_id, device_id, public_key, kind, actor, recorded_at)
       SELECT 'bench-' || g, 'bench-dev', decode(repeat('ab', 32), 'hex'), 'rotated', 'bench',
              now() - interval '400 days' + g * interval '1 millisecond'
       FROM generate_series(1, $1) g`,
      [EVENTS],
    );
    const secretKey = ed25519.utils.randomSecretKey();
    const signer = { secretKey, publicKey: ed25519.getPublicKey(secretKey) };
    const target = new DirTarget(`${dir}/archive`);
    let started = performance.now();
    const result = await archiveKeyEvents({
      repo: s.keyEventArchive,
      target,
      signer,
      domain: "bench.example",
      cutoff: new Date(Date.now() - 365 * 86_400_000),
      chunkEvents: CHUNK,
    });
    const archiveMs = performance.now() - started;
    started = performance.now();
    const report = await verifyArchive(target, signer.publicKey, s.keyEventArchive);
    const verifyMs = performance.now() - started;
    const archived = result.locked ? result.archived : 0;
    console.log(
      `archive (${s.dbKind}, directory target): ${archived} key events in ${
        result.locked ? result.chunks : 0
      } chunks of ${CHUNK}: ${archiveMs.toFixed(0)} ms (${
        (archived / archiveMs * 1000).toFixed(0)
      } events/s); verify ${report.ok ? "ok" : "FAILED"} in ${verifyMs.toFixed(0)} ms`,
    );
  } finally {
    await s.close();
    await scratch?.drop();
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) await run();
