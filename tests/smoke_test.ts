import assert from "node:assert/strict";

Deno.test("deno runtime is the pinned major version", () => {
  assert.equal(Deno.version.deno.split(".")[0], "2");
});
