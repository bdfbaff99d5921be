/**
 * Storage benchmark: relay enqueue, and claim + ack, of 10 000 frames (100-byte payloads) for
 * one device, against real Postgres (COMMUCAT_TEST_PG_DSN, or the local test database, in a
 * scratch schema dropped afterwards) and against PGlite (a temp dir). Each is printed next to
 * the practical ceiling measured in the same run: one `INSERT … SELECT generate_series` of the
 * same rows. Target: ≥ 25 % of the ceiling.
 *
 * Claim + ack is measured two ways: the three-statement flow (claim; markSent; ack returning
 * envelopes) and the fast path (claim with `firstSequence`; ack with `returnPayloads: false`,
 * pipelined), which is what the server's replay should use.
 */
import { type Db, openPglite, openPostgres } from "../storage/db.ts";
import { migrate } from "../storage/migrate.ts";
import { MAX_CLAIM, PgRelayRepo } from "../storage/repos/relay.ts";
import { median } from "./helpers/timing.ts";

const FRAMES = 10_000;
const ROUNDS = 3;
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

/** The rows of one run, from an empty queue. */
function freshItems(payload: Uint8Array) {
  return Array.from({ length: FRAMES }, () => ({ deviceId: DEVICE, channelId: 1, payload }));
}

/**
 * The server's replay as it was first written: claim a batch, record the sequences it went out
 * under (markSent), move on; the recipient's ACKs are applied concurrently and return the
 * deleted envelopes with their payloads. Three statements per batch.
 */
async function claimMarkAck(relay: PgRelayRepo): Promise<number> {
  let acked = 0;
  let sequence = 0;
  const acks: Promise<void>[] = [];
  for (;;) {
    const batch = await relay.claim(DEVICE, "bench-session", MAX_CLAIM);
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
  return acked;
}

/**
 * The fast path the server should use: claim 128 with `firstSequence` (sequences recorded in
 * the claim itself), then ACK those 128 pipelined with `returnPayloads: false`. Two statements
 * per batch, nothing large read back on ack.
 */
async function claimAckFast(relay: PgRelayRepo): Promise<number> {
  let acked = 0;
  let next = 1;
  const acks: Promise<void>[] = [];
  for (;;) {
    const batch = await relay.claim(DEVICE, "bench-session", MAX_CLAIM, { firstSequence: next });
    if (batch.length === 0) break;
    next += batch.length;
    const sequences = batch.map((e) => e.lastSequence!);
    acks.push(
      relay.ack(DEVICE, "bench-session", sequences, { returnPayloads: false }).then((gone) => {
        acked += gone.length;
      }),
    );
  }
  await Promise.all(acks);
  return acked;
}

interface Round {
  ceiling: number;
  enqueue: number;
  legacy: number;
  fast: number;
}

/** One round: the ceiling, then each flow from an empty queue of the same rows (ms each). */
async function round(db: Db, relay: PgRelayRepo, payload: Uint8Array): Promise<Round> {
  const items = freshItems(payload);
  await db.exec("TRUNCATE relay_queue; TRUNCATE inbox_offset");
  const ceiling = await timed(() =>
    db.query(
      `INSERT INTO relay_queue (device_id, channel_key, channel_id, payload, expires_at)
       SELECT $1, 'inbox:' || $1, 1, $2::bytea, now() + interval '1 hour'
       FROM generate_series(1, $3)`,
      [DEVICE, payload, FRAMES],
    )
  );
  await db.exec("TRUNCATE relay_queue");
  const enqueue = await timed(() => relay.enqueue(items, 3600));
  const flows: [keyof Round, (r: PgRelayRepo) => Promise<number>][] = [
    ["legacy", claimMarkAck],
    ["fast", claimAckFast],
  ];
  const out: Round = { ceiling, enqueue, legacy: 0, fast: 0 };
  for (const [name, flow] of flows) {
    if (name !== "legacy") {
      await db.exec("TRUNCATE relay_queue; TRUNCATE inbox_offset");
      await relay.enqueue(items, 3600);
    }
    let acked = 0;
    out[name] = await timed(async () => (acked = await flow(relay)));
    if (acked !== FRAMES) throw new Error(`${name}: acked ${acked} of ${FRAMES}`);
  }
  return out;
}

async function measure(db: Db, label: string): Promise<void> {
  const relay = new PgRelayRepo(db);
  const payload = new Uint8Array(PAYLOAD_BYTES).map((_, i) => i);

  // Warm up the code paths once (the rounds start from an empty queue).
  await relay.enqueue(freshItems(payload).slice(0, 1000), 3600);
  await claimAckFast(relay);

  // Interleaved rounds, so load on a shared machine hits the ceiling and the flows alike;
  // the median of each is printed.
  const rounds: Round[] = [];
  for (let i = 0; i < ROUNDS; i++) rounds.push(await round(db, relay, payload));
  const ms = (k: keyof Round) => median(rounds.map((r) => r[k]));
  const ceilingMs = ms("ceiling");
  const ceiling = rate(FRAMES, ceilingMs);
  const line = (what: string, k: keyof Round) => {
    const x = rate(FRAMES, ms(k));
    console.log(
      `storage ${label}: ${what} ${x} frames/s (${ms(k).toFixed(0)} ms, ${
        Math.round((x / ceiling) * 100)
      }% of ceiling, target 25%)`,
    );
  };
  console.log(
    `storage ${label}: ceiling INSERT…generate_series ${ceiling} frames/s (${
      ceilingMs.toFixed(0)
    } ms; median of ${ROUNDS} rounds)`,
  );
  line("relay enqueue", "enqueue");
  line("relay claim+markSent+ack (claim; markSent; ack with payloads)", "legacy");
  line(
    "relay claim+ack fast (claim with firstSequence; ack returnPayloads:false, pipelined)",
    "fast",
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
