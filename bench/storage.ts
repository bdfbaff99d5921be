/**
 * Storage benchmark: relay enqueue, and claim + markSent + ack, of 10 000 frames (100-byte
 * payloads) for one device, against real Postgres (COMMUCAT_TEST_PG_DSN, or the local test
 * database, in a scratch schema dropped afterwards) and against PGlite (a temp dir). Each is
 * printed next to the practical ceiling measured in the same run: one
 * `INSERT … SELECT generate_series` of the same rows. Target: ≥ 25 % of the ceiling.
 */
import { type Db, openPglite, openPostgres } from "../storage/db.ts";
import { migrate } from "../storage/migrate.ts";
import { PgRelayRepo } from "../storage/repos/relay.ts";

const FRAMES = 10_000;
const PAYLOAD_BYTES = 100;
const DEVICE = "bench-device";
const DEFAULT_DSN = "postgres://postgres@127.0.0.1:5432/test";

function rate(frames: number, ms: number): number {
  return Math.round(frames / (ms / 1000));
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

async function measure(db: Db, label: string): Promise<void> {
  const relay = new PgRelayRepo(db);
  const payload = new Uint8Array(PAYLOAD_BYTES).map((_, i) => i);
  const items = Array.from({ length: FRAMES }, () => ({
    deviceId: DEVICE,
    channelId: 1,
    payload,
  }));

  // Warm up the code paths once, then start from an empty queue.
  await relay.enqueue(items.slice(0, 1000), 3600);
  await db.exec("TRUNCATE relay_queue; TRUNCATE inbox_offset");

  const ceilingMs = await timed(() =>
    db.query(
      `INSERT INTO relay_queue (device_id, channel_key, channel_id, payload, expires_at)
       SELECT $1, 'inbox:' || $1, 1, $2::bytea, now() + interval '1 hour'
       FROM generate_series(1, $3)`,
      [DEVICE, payload, FRAMES],
    )
  );
  await db.exec("TRUNCATE relay_queue");

  const enqueueMs = await timed(() => relay.enqueue(items, 3600));

  // As the server replays: claim a batch, record the sequences it went out under, move on to
  // the next batch; the recipient's ACKs arrive meanwhile and are applied concurrently.
  let acked = 0;
  let sequence = 0;
  const claimAckMs = await timed(async () => {
    const acks: Promise<void>[] = [];
    for (;;) {
      const batch = await relay.claim(DEVICE, "bench-session", 128);
      if (batch.length === 0) break;
      const sent = batch.map((e) => ({ envelopeId: e.envelopeId, sequence: ++sequence }));
      await relay.markSent("bench-session", sent);
      acks.push(
        relay.ack(DEVICE, "bench-session", sent.map((s) => s.sequence)).then((gone) => {
          acked += gone.length;
        }),
      );
    }
    await Promise.all(acks);
  });
  if (acked !== FRAMES) throw new Error(`acked ${acked} of ${FRAMES}`);

  const ceiling = rate(FRAMES, ceilingMs);
  const enqueue = rate(FRAMES, enqueueMs);
  const claimAck = rate(FRAMES, claimAckMs);
  const pct = (x: number) => `${Math.round((x / ceiling) * 100)}%`;
  console.log(
    `storage ${label}: ceiling INSERT…generate_series ${ceiling} frames/s (${
      ceilingMs.toFixed(0)
    } ms)`,
  );
  console.log(
    `storage ${label}: relay enqueue ${enqueue} frames/s (${enqueueMs.toFixed(0)} ms, ${
      pct(enqueue)
    } of ceiling, target 25%)`,
  );
  console.log(
    `storage ${label}: relay claim+ack ${claimAck} frames/s (${claimAckMs.toFixed(0)} ms, ${
      pct(claimAck)
    } of ceiling, target 25%)`,
  );
}

async function benchPostgres(): Promise<void> {
  const base = Deno.env.get("COMMUCAT_TEST_PG_DSN") || DEFAULT_DSN;
  const schema = `commucat_bench_${crypto.randomUUID().replaceAll("-", "").slice(0, 10)}`;
  let admin: Db;
  try {
    admin = await openPostgres(base, { max: 1 });
  } catch (err) {
    console.log(`storage postgres: skipped (${err instanceof Error ? err.message : err})`);
    return;
  }
  try {
    await admin.exec(`CREATE SCHEMA ${schema}`);
    const url = new URL(base);
    url.searchParams.set("options", `-c search_path=${schema}`);
    const db = await openPostgres(url.toString(), { max: 4 });
    try {
      await migrate(db);
      await measure(db, "postgres");
    } finally {
      await db.close();
    }
  } finally {
    await admin.exec(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => {});
    await admin.close();
  }
}

async function benchPglite(): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "commucat-bench-" });
  try {
    const db = await openPglite(dir);
    try {
      await migrate(db);
      await measure(db, "pglite");
    } finally {
      await db.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Run both backends and print their figures. */
export async function run(): Promise<void> {
  await benchPostgres();
  await benchPglite();
}

if (import.meta.main) await run();
