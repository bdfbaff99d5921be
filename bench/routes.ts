/**
 * Route state under abuse (ccp1.md §4.1 limits): one device sends 1 500 JOINs listing 1 024
 * members each (the scenario that once took a node from 0.55 to 4.4 GB), then a device fills its
 * conversations up to the limit with 256-member JOINs, then both disconnect. The relay runs as a
 * separate process (bench/memory_server.ts), so the RSS printed is its own: on Postgres + Redis
 * when COMMUCAT_TEST_PG_DSN / COMMUCAT_TEST_REDIS_URL name them (the embedded database alone holds
 * ~400 MB), else embedded. The figures are the refusals counted and the server's settled RSS
 * before, during and after, next to the 300 MB budget.
 */
import { FrameType } from "../protocol/frame.ts";
import { generateKeypair } from "../protocol/crypto.ts";
import { TestClient } from "../tests/server/helpers/client.ts";
import { settledRssKiB, spawnServer } from "./memory.ts";

const JOINS = 1_500;
const MEMBERS = 1_024;
const BUDGET_MIB = 300;

function mib(kib: number): string {
  return (kib / 1024).toFixed(1);
}

/** Sends `count` JOINs of `members` members in windows; returns [acked, refused by title]. */
async function flood(
  client: TestClient,
  count: number,
  members: number,
  firstChannel: number,
): Promise<[number, Map<string, number>]> {
  let acked = 0;
  const refused = new Map<string, number>();
  for (let i = 0; i < count; i += 50) {
    const seqs: number[] = [];
    for (let j = i; j < Math.min(count, i + 50); j++) {
      const list = Array.from({ length: members }, (_, k) => `m${j}-${k}`);
      seqs.push(client.control(FrameType.Join, firstChannel + j, { members: list }));
    }
    for (const seq of seqs) {
      const reply = await client.reply(seq, 30_000);
      if (reply.type === FrameType.Ack) acked++;
      else {
        const title = String((reply.json as Record<string, unknown>).title);
        refused.set(title, (refused.get(title) ?? 0) + 1);
      }
    }
  }
  return [acked, refused];
}

export async function run(): Promise<void> {
  const keys = generateKeypair();
  const dataDir = await Deno.makeTempDir({ prefix: "commucat-bench-routes-" });
  const dsn = Deno.env.get("COMMUCAT_TEST_PG_DSN") ?? "";
  const redis = Deno.env.get("COMMUCAT_TEST_REDIS_URL") ?? "";
  const server = await spawnServer(dataDir, keys.privateKey, {
    COMMUCAT_JOINS_PER_MINUTE: "1000000",
    ...(dsn && redis ? { COMMUCAT_PG_DSN: dsn, COMMUCAT_REDIS_URL: redis } : {}),
  });
  console.log(`storage                  ${dsn && redis ? "Postgres + Redis" : "PGlite + memory"}`);
  try {
    const pid = server.child.pid;
    const idle = await settledRssKiB(pid);
    const connect = (deviceId: string) =>
      TestClient.connect({
        port: server.tcpPort,
        serverStatic: keys.publicKey,
        deviceId,
        user: { handle: deviceId },
      });
    const attacker = await connect("bench-route-attacker");
    const t0 = performance.now();
    const [acked, refused] = await flood(attacker, JOINS, MEMBERS, 1);
    const seconds = (performance.now() - t0) / 1000;
    const during = await settledRssKiB(pid);
    const filler = await connect("bench-route-filler");
    const [bound, full] = await flood(filler, 600, 255, 1);
    const filled = await settledRssKiB(pid);
    await attacker.close();
    await filler.close();
    const after = await settledRssKiB(pid);
    const refusals = (m: Map<string, number>) =>
      [...m].map(([t, n]) => `${n} × ${t}`).join(", ") || "none";
    console.log(`JOINs × members          ${JOINS} × ${MEMBERS} in ${seconds.toFixed(1)} s`);
    console.log(`  accepted               ${acked}`);
    console.log(`  refused                ${refusals(refused)}`);
    console.log(`JOINs × 255 members      600: ${bound} bound, refused ${refusals(full)}`);
    console.log(
      `server RSS (MiB)         idle ${mib(idle)}, after the flood ${mib(during)}, ` +
        `conversations full ${mib(filled)}, after disconnect ${mib(after)}`,
    );
    const peak = Math.max(idle, during, filled, after);
    console.log(
      `growth over idle (MiB)   peak ${mib(peak - idle)}, after disconnect ${mib(after - idle)}`,
    );
    console.log(
      `budget                   ${mib(peak)} MiB of ${BUDGET_MIB} MiB (${
        (peak / 1024 / BUDGET_MIB * 100).toFixed(0)
      } %)`,
    );
  } finally {
    server.child.kill("SIGTERM");
    await server.child.status;
    await server.done;
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) await run();
