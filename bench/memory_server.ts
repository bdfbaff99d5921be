/**
 * The relay as `deno task serve` runs it (`app/serve.ts`), plus one hook for the memory bench:
 * on SIGUSR2 it runs a full garbage collection (needs `--v8-flags=--expose-gc`), so the bench
 * reads resident memory without the garbage that happens to be waiting for a collection.
 */
import { main } from "../app/serve.ts";

const gc = (globalThis as { gc?: () => void }).gc;
if (gc) {
  Deno.addSignalListener("SIGUSR2", () => {
    gc();
    console.log("gc done");
  });
}

Deno.exit(await main());
