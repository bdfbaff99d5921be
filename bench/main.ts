/**
 * `deno task bench`: every CommuCat benchmark in one run, each printing its figures next to the
 * ceiling it is measured against. Pass names to run a subset: `deno task bench codec noise`.
 */
import { run as codec } from "./codec.ts";
import { run as noise } from "./noise.ts";
import { run as envelope } from "./envelope.ts";
import { run as storage } from "./storage.ts";
import { run as relay } from "./relay.ts";
import { run as handshake_tcp } from "./handshake_tcp.ts";
import { run as memory } from "./memory.ts";
import { run as transports } from "./transports.ts";
import { run as routes } from "./routes.ts";
import { run as archive } from "./archive.ts";

const benches: Record<string, () => Promise<void>> = {
  codec,
  noise,
  envelope,
  storage,
  relay,
  handshake_tcp,
  memory,
  transports,
  routes,
  archive,
};

const wanted = Deno.args.length > 0 ? Deno.args : Object.keys(benches);
for (const name of wanted) {
  const bench = benches[name];
  if (!bench) {
    console.error(
      `unknown benchmark ${JSON.stringify(name)}; known: ${Object.keys(benches).join(", ")}`,
    );
    Deno.exit(2);
  }
  console.log(`\n=== ${name} ===`);
  await bench();
}
