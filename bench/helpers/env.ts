/** Where the benchmarks find a Postgres and a Redis to measure on, when there are any. */

/**
 * The storage options of the Postgres and Redis in COMMUCAT_BENCH_PG_DSN /
 * COMMUCAT_BENCH_REDIS_URL (else the test suite's COMMUCAT_TEST_PG_DSN /
 * COMMUCAT_TEST_REDIS_URL); when either is missing, null after printing that `what` was not
 * measured there and how to set them.
 */
export function benchServices(
  what: string,
): { postgresDsn: string; redisUrl: string; dataDir: string } | null {
  const dsn = Deno.env.get("COMMUCAT_BENCH_PG_DSN") ?? Deno.env.get("COMMUCAT_TEST_PG_DSN");
  const redis = Deno.env.get("COMMUCAT_BENCH_REDIS_URL") ??
    Deno.env.get("COMMUCAT_TEST_REDIS_URL");
  if (dsn && redis) return { postgresDsn: dsn, redisUrl: redis, dataDir: "" };
  console.log(
    `${what} on Postgres + Redis: not measured (set COMMUCAT_BENCH_PG_DSN and ` +
      "COMMUCAT_BENCH_REDIS_URL to measure)",
  );
  return null;
}
