/**
 * The relay as `deno task serve` runs it (`app/serve.ts`), plus one hook for the memory bench:
 * on SIGUSR2 it runs a full garbage collection (needs `--v8-flags=--expose-gc`), so the bench
 * reads resident memory without the garbage that happens to be waiting for a collection, and
 * prints `gc done {Deno.memoryUsage()} [[V8 space, KiB reserved, KiB used], …]` after it.
 */
import v8 from "node:v8";
import { main } from "../app/serve.ts";

const gc = (globalThis as { gc?: () => void }).gc;
if (gc) {
  Deno.addSignalListener("SIGUSR2", () => {
    gc();
    const spaces = v8.getHeapSpaceStatistics().filter((s) => s.space_size > 0)
      .map((
        s,
      ) => [s.space_name, Math.round(s.space_size / 1024), Math.round(s.space_used_size / 1024)]);
    console.log(`gc done ${JSON.stringify(Deno.memoryUsage())} ${JSON.stringify(spaces)}`);
  });
}

Deno.exit(await main());
