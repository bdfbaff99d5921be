/** The committed island bundles in console/static/ match their sources. */
import assert from "node:assert/strict";
import { bundleIsland, islandNames } from "../../console/build.ts";

Deno.test("committed island bundles are up to date (rebuild: deno run -A console/build.ts)", async () => {
  const names = await islandNames();
  assert.ok(names.includes("live_figures"));
  const dir = await Deno.makeTempDir({ prefix: "console-bundle-" });
  try {
    for (const name of names) {
      const fresh = `${dir}/${name}.js`;
      await bundleIsland(name, fresh);
      const committed = await Deno.readTextFile(
        new URL(`../../console/static/${name}.js`, import.meta.url),
      );
      assert.equal(committed, await Deno.readTextFile(fresh), `console/static/${name}.js is stale`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
